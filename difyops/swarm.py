"""Deploy the clusters to Docker Swarm: the same compose files, one stack per cluster.

How a cluster becomes a Swarm stack (``prod.deploy --target swarm``):

1. ``docker compose -f compose/<cluster>.yml -f compose/swarm/<cluster>.yml config`` renders it
   locally (Compose interpolates .env, merges the Swarm overlay, resolves env_file and paths).
2. :func:`to_stack` turns that into a file ``docker stack deploy`` accepts, and takes out every
   secret on the way:
   - an environment variable whose value holds a secret of .env (DB_PASSWORD, REDIS_PASSWORD,
     SECRET_KEY, ... and values built from them such as CELERY_BROKER_URL) becomes a Docker secret
     mounted as ``/run/secrets/<VAR>``. The image reads it either natively (``<VAR>_FILE``, for the
     names listed as ``file_variables`` under the overlay's ``x-difyops-swarm``: PostgreSQL's
     POSTGRES_PASSWORD) or through ``compose/swarm/secrets-env.sh``, a shim put in front of the
     image's own entrypoint (``entrypoint`` under ``x-difyops-swarm``) that exports each secret file as its variable.
     Dify's api, worker and plugin daemon read only plain variables (no ``*_FILE`` support), so
     they get the shim; healthchecks of such services run through the shim too.
   - bind mounts become Docker configs (one per file, mode kept: executable or not), because a
     bind source exists only on the machine that renders, not on the node that runs the task.
   - keys Swarm does not use (restart, depends_on, ...) are dropped and listed; the overlay's
     ``deploy`` (placement, update_config start-first with rollback, restart_policy) replaces them.
   Anything secret left in a command, healthcheck or label afterwards is refused.
3. Overlay networks ``<stack>-backend`` / ``-ssrf`` (internal) and ``-app`` are created attachable;
   secrets and configs are created with content-hashed names (Swarm's are immutable, so a changed
   value is a new object and a rolling update); the stack is deployed with ``docker stack deploy
   -c -``, and the task waits, bounded, until every service has all replicas and no update running.

``--context NAME`` is passed to every docker command, so a manager can be driven from elsewhere
(``docker context create prod --docker host=ssh://deploy@manager``). Rendering always happens
here, where the compose files and .env are.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from . import clusters as cl
from . import envfile, paths
from .config import Settings
from .errors import DifyopsError
from .stdin import TextInput

SWARM_DIR = paths.COMPOSE_DIR / "swarm"
SHIM_FILE = SWARM_DIR / "secrets-env.sh"
SHIM_TARGET = "/difyops/secrets-env.sh"
SECRETS_DIR = "/run/secrets"
STACK_FILE_VERSION = "3.12"  # healthcheck start_interval needs 3.12 (Docker 25+)

# Node labels: one boolean label per role, so one node can hold several roles
# (`invoke swarm.label NODE data,gateway` sets difyops.role.data=true and difyops.role.gateway=true).
ROLES = ("data", "app", "gateway")
LABEL_PREFIX = "difyops.role."
ROLE_CONSTRAINT = re.compile(r"node\.labels\." + re.escape(LABEL_PREFIX) + r"([A-Za-z0-9_-]+)\s*==\s*true")

# .env values that are secrets besides the generated ones.
EXTRA_SECRET_KEYS = ("CODE_EXECUTION_API_KEY", "INIT_PASSWORD", "PGVECTOR_PASSWORD", "REDIS_SENTINEL_PASSWORD",
                     "CELERY_SENTINEL_PASSWORD", "REDIS_CLUSTERS_PASSWORD", "WEAVIATE_API_KEY",
                     "S3_SECRET_KEY", "MAIL_PASSWORD", "SMTP_PASSWORD")

# Service keys a stack file takes; anything else is dropped (and reported).
SERVICE_KEYS = {"image", "entrypoint", "command", "environment", "healthcheck", "deploy", "networks", "volumes",
                "ports", "logging", "stop_grace_period", "stop_signal", "user", "working_dir", "hostname", "init",
                "read_only", "tmpfs", "cap_add", "cap_drop", "ulimits", "sysctls", "labels", "configs", "secrets"}
# Dropped without a word: Swarm has its own for each (restart_policy, overlay networks, ...).
QUIET_DROPS = {"restart", "depends_on", "container_name", "env_file", "profiles", "pull_policy"}

HINTS_KEY = "x-difyops-swarm"  # per service: entrypoint (the image's own), file_variables (read as VAR_FILE)
NAME_MAX = 64  # Docker's limit for secret and config names


@dataclass
class StackFile:
    """A stack file ready for `docker stack deploy -c -`, and what it needs to exist first."""

    stack: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)  # secret name -> value (never printed)
    dropped: list[str] = field(default_factory=list)  # "service: key" Swarm ignores

    def dumps(self) -> str:
        return json.dumps(self.stack, indent=1, sort_keys=True)


# ----------------------------------------------------------------------------- pure helpers


def stack_name(settings: Settings, cluster: cl.Cluster) -> str:
    return cl.project(settings, cluster)


def overlay_file(cluster: cl.Cluster) -> Path:
    return SWARM_DIR / f"{cluster.name}.yml"


def docker(context: str | None, *args: str) -> list[str]:
    return ["docker", *(["--context", context] if context else []), *args]


def parse_roles(text: str) -> list[str]:
    roles = [r.strip() for r in (text or "").split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if not roles or unknown:
        raise DifyopsError(f"roles must be a comma-separated subset of {', '.join(ROLES)}, not {text!r}")
    return roles


def label_argv(context: str | None, node: str, roles: Iterable[str], clear: Iterable[str] = ()) -> list[str]:
    args = ["node", "update"]
    for role in roles:
        args += ["--label-add", f"{LABEL_PREFIX}{role}=true"]
    for role in clear:
        args += ["--label-rm", f"{LABEL_PREFIX}{role}"]
    return docker(context, *args, node)


def constraint(role: str) -> str:
    return f"node.labels.{LABEL_PREFIX}{role} == true"


def required_roles(stack_files: Iterable[StackFile]) -> set[str]:
    """The node roles the stacks' placement constraints ask for (difyops.role.<role> == true)."""
    roles = set()
    for stack_file in stack_files:
        for svc in stack_file.stack.get("services", {}).values():
            for rule in ((svc.get("deploy") or {}).get("placement") or {}).get("constraints") or []:
                roles.update(ROLE_CONSTRAINT.findall(rule))
    return roles


def secret_values(env: dict[str, str]) -> dict[str, str]:
    """value -> the .env key it comes from, for every non-empty secret (short values ignored)."""
    out = {}
    for key in (*envfile.SECRET_KEYS, *EXTRA_SECRET_KEYS):
        value = env.get(key) or ""
        if len(value) >= 8:
            out.setdefault(value, key)
    return out


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def object_name(stack: str, label: str, data: bytes) -> str:
    """stack-label-hash, safe for Docker and at most 64 characters; new content, new name."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.") or "x"
    digest = _hash(data)
    room = NAME_MAX - len(stack) - len(digest) - 2
    return f"{stack}-{slug[:max(room, 1)]}-{digest}"


def _contains_secret(value: Any, secrets: dict[str, str]) -> str | None:
    text = json.dumps(value) if not isinstance(value, str) else value
    for secret, key in secrets.items():
        if secret in text:
            return key
    return None


def _wrap_test(test: Any) -> Any:
    """A healthcheck test that runs through the secrets shim."""
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not test or test[0] == "NONE":
        return test
    if test[0] == "CMD-SHELL":
        return ["CMD", "/bin/sh", SHIM_TARGET, "/bin/sh", "-c", " ".join(test[1:])]
    return ["CMD", "/bin/sh", SHIM_TARGET, *test[1:]]


def _bind_to_configs(stack: str, service: str, mount: dict[str, Any]) -> list[tuple[str, Path, str, int]]:
    """(config name, file, target, mode) for each file a bind mount brings in."""
    source = Path(mount["source"])
    target = mount["target"].rstrip("/")
    if not source.exists():
        raise DifyopsError(f"service {service}: bind source {source} does not exist")
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    out = []
    for path in files:
        dest = target if path == source else f"{target}/{path.relative_to(source).as_posix()}"
        data = path.read_bytes()
        if len(data) > 500 * 1024:
            raise DifyopsError(f"service {service}: {path} is larger than a Docker config may be (500 KB)")
        mode = 0o555 if path.stat().st_mode & stat.S_IXUSR else 0o444
        out.append((object_name(stack, f"{service}-{path.name}", data + dest.encode()), path, dest, mode))
    return out


def publish_mode(env: dict[str, str]) -> str:
    mode = (env.get("SWARM_PUBLISH_MODE") or "ingress").strip()
    if mode not in ("ingress", "host"):
        raise DifyopsError(f"SWARM_PUBLISH_MODE={mode!r}: choose ingress (routing mesh) or host")
    return mode


def to_stack(rendered: dict[str, Any], stack: str, env: dict[str, str], services: Iterable[str] | None = None,
             shim: Path = SHIM_FILE) -> StackFile:
    """Turn `docker compose config --format json` output into a Swarm stack file (see module doc)."""
    publish = publish_mode(env)
    secrets = secret_values(env)
    wanted = set(services) if services is not None else None
    # Compose keeps top-level x- keys only: the overlay's hints live in x-difyops-swarm.
    hints_all = rendered.get(HINTS_KEY) or {}
    out_services: dict[str, Any] = {}
    top_secrets: dict[str, Any] = {}
    top_configs: dict[str, Any] = {}
    secret_values_out: dict[str, str] = {}
    dropped: list[str] = []
    for name, spec in sorted((rendered.get("services") or {}).items()):
        if wanted is not None and name not in wanted:
            continue
        svc: dict[str, Any] = {}
        for key, value in spec.items():
            if key.startswith("x-"):
                continue
            if key not in SERVICE_KEYS:
                if key not in QUIET_DROPS and value not in (None, [], {}):
                    dropped.append(f"{name}: {key}")
                continue
            if value is not None:
                svc[key] = value
        hints = hints_all.get(name) or {}
        file_vars = set(hints.get("file_variables") or [])
        image_entrypoint = hints.get("entrypoint")

        # Environment: secrets out, into Docker secrets.
        environment = dict(svc.get("environment") or {})
        moved = []
        for var in sorted(environment):
            value = environment[var]
            if value is None or _contains_secret(value, secrets) is None:
                continue
            secret = object_name(stack, var.lower(), value.encode())
            secret_values_out[secret] = value
            top_secrets[secret] = {"name": secret, "external": True}
            target = var
            del environment[var]
            if var in file_vars:
                environment[f"{var}_FILE"] = f"{SECRETS_DIR}/{target}"
            else:
                moved.append(var)
            svc.setdefault("secrets", []).append({"source": secret, "target": target, "mode": 0o444})
        if environment or "environment" in svc:
            svc["environment"] = environment
        if moved:
            if image_entrypoint is None:
                raise DifyopsError(
                    f"service {name} gets secrets ({', '.join(moved)}) but compose/swarm says neither how its "
                    "image reads them (file_variables) nor its entrypoint (entrypoint) under x-difyops-swarm")
            svc["entrypoint"] = ["/bin/sh", SHIM_TARGET, *image_entrypoint]
            if "healthcheck" in svc and svc["healthcheck"].get("test"):
                svc["healthcheck"] = dict(svc["healthcheck"], test=_wrap_test(svc["healthcheck"]["test"]))
            shim_data = shim.read_bytes()
            shim_name = object_name(stack, "secrets-env.sh", shim_data)
            top_configs[shim_name] = {"name": shim_name, "file": str(shim)}
            svc.setdefault("configs", []).append({"source": shim_name, "target": SHIM_TARGET, "mode": 0o555})

        # Bind mounts: the node that runs the task does not have the files; configs carry them.
        volumes = []
        for mount in svc.get("volumes") or []:
            if mount.get("type") == "bind":
                for config, path, dest, mode in _bind_to_configs(stack, name, mount):
                    top_configs[config] = {"name": config, "file": str(path)}
                    svc.setdefault("configs", []).append({"source": config, "target": dest, "mode": mode})
                continue
            clean = {k: v for k, v in mount.items() if k in ("type", "source", "target", "read_only")}
            volumes.append(clean)
        if volumes:
            svc["volumes"] = volumes
        else:
            svc.pop("volumes", None)

        # Ports: Swarm publishes on every address of the node (no host_ip). `ingress` answers on
        # every node through the routing mesh (needs the kernel's IPVS); `host` only on the nodes
        # that run the service (and is the one that works with endpoint_mode dnsrr).
        ports = []
        for port in svc.get("ports") or []:
            ports.append({"target": int(port["target"]), "published": int(port["published"]),
                          "protocol": port.get("protocol", "tcp"), "mode": publish})
        if ports:
            svc["ports"] = ports

        deploy = {k: v for k, v in (svc.get("deploy") or {}).items() if v not in (None, {}, [])}
        for kind in ("limits", "reservations"):  # the stack schema wants cpus as a string
            res = (deploy.get("resources") or {}).get(kind)
            if isinstance(res, dict) and "cpus" in res:
                res["cpus"] = str(res["cpus"])
        if deploy:
            svc["deploy"] = deploy
        else:
            svc.pop("deploy", None)

        leaked = _contains_secret({k: v for k, v in svc.items() if k != "secrets"}, secrets)
        if leaked:
            raise DifyopsError(
                f"service {name} still carries {leaked} outside a Docker secret (command, healthcheck or "
                f"labels): move it to an environment variable in compose/swarm")
        out_services[name] = svc

    networks = {key: {"name": value["name"], "external": True}
                for key, value in (rendered.get("networks") or {}).items()
                if any(key in (s.get("networks") or {}) for s in out_services.values())}
    volumes = {}
    for key, value in (rendered.get("volumes") or {}).items():
        if any(v.get("source") == key for s in out_services.values() for v in s.get("volumes") or []):
            volumes[key] = {"name": value.get("name", key), "external": bool(value.get("external"))}
    stack_doc: dict[str, Any] = {"version": STACK_FILE_VERSION, "services": out_services}
    for key, value in (("networks", networks), ("volumes", volumes), ("secrets", top_secrets),
                       ("configs", top_configs)):
        if value:
            stack_doc[key] = value
    return StackFile(stack_doc, secret_values_out, dropped)


def render_argv(settings: Settings, cluster: cl.Cluster, profiles: tuple[str, ...] = ()) -> list[str]:
    argv = ["docker", "compose", "-f", str(cluster.file)]
    if overlay_file(cluster).exists():
        argv += ["-f", str(overlay_file(cluster))]
    argv += ["--env-file", str(settings.env_file), "-p", stack_name(settings, cluster)]
    for profile in profiles:
        argv += ["--profile", profile]
    return argv + ["config", "--format", "json"]


def network_create_argv(settings: Settings, network: str, context: str | None = None) -> list[str]:
    args = ["network", "create", "--driver", "overlay", "--attachable",
            "--label", f"{cl.STACK_LABEL}={settings.stack}"]
    if cl.NETWORKS[network]:
        args.append("--internal")
    return docker(context, *args, cl.network_name(settings, network))


def deploy_argv(name: str, context: str | None = None) -> list[str]:
    # --prune: services gone from the file go; --with-registry-auth: nodes pull with our login.
    return docker(context, "stack", "deploy", "--prune", "--with-registry-auth", "--detach=true",
                  "--resolve-image", "never", "-c", "-", name)


@dataclass
class ServiceState:
    name: str
    running: int
    desired: int
    update: str  # "" | updating | completed | paused | rollback_started | rollback_completed | ...


def parse_service_ls(text: str) -> list[ServiceState]:
    """`docker service ls --format '{{.Name}}\\t{{.Replicas}}'` -> states (update filled later)."""
    states = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        name, _, replicas = line.partition("\t")
        match = re.match(r"(\d+)/(\d+)", replicas.strip())
        running, desired = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        states.append(ServiceState(name.strip(), running, desired, ""))
    return states


def converged(states: list[ServiceState]) -> bool:
    return bool(states) and all(s.desired > 0 and s.running == s.desired and s.update in ("", "completed")
                                for s in states)


def rolled_back(states: list[ServiceState]) -> list[str]:
    return [s.name for s in states if s.update.startswith("rollback") or s.update == "paused"]


# ----------------------------------------------------------------------------- actions (through c.run)


def _run(c: Any, argv: list[str], **kwargs):
    return c.run(shlex.join(argv), **kwargs)


def swarm_problems(c: Any, context: str | None, roles: Iterable[str]) -> list[str]:
    where = f"context {context}" if context else "the local engine"
    info = _run(c, docker(context, "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"),
                hide=True, warn=True)
    if not info.ok:
        return [f"Docker is not reachable through {where}: check `docker {'--context ' + context + ' ' if context else ''}info`"]
    state = info.stdout.split()
    if not state or state[0] != "active":
        return [f"{where} is not part of a Swarm: run `docker swarm init` on the manager (docs: README, Swarm)"]
    if len(state) < 2 or state[1] != "true":
        return [f"{where} is a Swarm worker: point --context at a manager"]
    nodes = _run(c, docker(context, "node", "ls", "-q"), hide=True, warn=True)
    ids = nodes.stdout.split() if nodes.ok else []
    labels: set[str] = set()
    if ids:
        found = _run(c, docker(context, "node", "inspect", "--format", "{{json .Spec.Labels}}", *ids),
                     hide=True, warn=True)
        for line in (found.stdout or "").splitlines() if found.ok else []:
            try:
                labels |= {k for k, v in (json.loads(line) or {}).items() if v == "true"}
            except ValueError:
                continue
    return [f"no Swarm node is labelled for role {role}: run `invoke swarm.label NODE {role}`"
            for role in sorted(set(roles)) if f"{LABEL_PREFIX}{role}" not in labels]


def render(c: Any, settings: Settings, cluster: cl.Cluster, profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    result = _run(c, render_argv(settings, cluster, profiles), env=cl.compose_env(settings), hide=True, warn=True)
    if not result.ok:
        lines = [ln for ln in (result.stderr or "").splitlines() if ln.strip()]
        raise DifyopsError(f"compose/{cluster.name}.yml does not render: {lines[-1] if lines else 'no output'}")
    return json.loads(result.stdout)


def ensure_networks(c: Any, settings: Settings, selected: Iterable[cl.Cluster], context: str | None) -> None:
    for network in sorted({n for x in selected for n in x.networks}):
        name = cl.network_name(settings, network)
        found = _run(c, docker(context, "network", "inspect", "--format", "{{.Driver}} {{.Scope}}", name),
                     hide=True, warn=True)
        if found.ok:
            if found.stdout.split()[:1] != ["overlay"]:
                raise DifyopsError(f"network {name} exists but is not an overlay network: remove it "
                                   "(`invoke prod.down all` for a Compose deployment on this engine)")
            continue
        _run(c, network_create_argv(settings, network, context), hide=True)


def ensure_objects(c: Any, settings: Settings, stack_file: StackFile, context: str | None) -> None:
    """Create the stack's secrets (value on stdin, never on a command line) if missing."""
    for name, value in sorted(stack_file.secrets.items()):
        if _run(c, docker(context, "secret", "inspect", name), hide=True, warn=True).ok:
            continue
        _run(c, docker(context, "secret", "create", "--label", f"{cl.STACK_LABEL}={settings.stack}", name, "-"),
             in_stream=TextInput(value), hide=True)


def deploy_stack(c: Any, name: str, stack_file: StackFile, context: str | None) -> None:
    result = _run(c, deploy_argv(name, context), in_stream=TextInput(stack_file.dumps()), hide=True, warn=True)
    if not result.ok:
        lines = [ln for ln in (result.stderr or "").splitlines() if ln.strip()]
        raise DifyopsError(f"docker stack deploy {name} failed: {lines[-1] if lines else 'no output'}")


def service_states(c: Any, name: str, context: str | None) -> list[ServiceState]:
    listed = _run(c, docker(context, "service", "ls", "--filter", f"label=com.docker.stack.namespace={name}",
                            "--format", "{{.Name}}\t{{.Replicas}}"), hide=True, warn=True)
    states = parse_service_ls(listed.stdout if listed.ok else "")
    for state in states:
        update = _run(c, docker(context, "service", "inspect", "--format",
                                "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", state.name), hide=True, warn=True)
        state.update = update.stdout.strip() if update.ok else ""
    return states


def wait_converged(c: Any, name: str, context: str | None, timeout: int, poll: float = 2.0,
                   clock=time.monotonic, sleep=time.sleep, progress: Callable[[str], None] | None = None) -> float:
    """Wait (bounded by timeout) until every service of stack `name` runs all its replicas, healthy,
    with no update in progress. Returns the seconds it took; raises on rollback or timeout.
    ``progress`` is told each new state (`api_api 1/2 updating`), with the seconds so far."""
    started = clock()
    seen_update = False
    last = ""
    while True:
        states = service_states(c, name, context)
        now = ", ".join(f"{s.name.removeprefix(name + '_')} {s.running}/{s.desired} {s.update}".strip() for s in states)
        if progress and now != last:
            progress(f"{clock() - started:5.1f}s {now or 'no services yet'}")
            last = now
        seen_update = seen_update or any(s.update == "updating" for s in states)
        back = rolled_back(states)
        if back:
            raise DifyopsError(f"stack {name}: the update of {', '.join(back)} failed and was rolled back; "
                               "the previous version is serving (see `docker service ps`)")
        if converged(states):
            return clock() - started
        if clock() - started > timeout:
            detail = ", ".join(f"{s.name} {s.running}/{s.desired} {s.update}".strip() for s in states) or "no services"
            raise DifyopsError(f"stack {name} did not converge within {timeout}s ({detail}): "
                               f"see `docker service ps` on the manager")
        sleep(poll)


def crowding(ps_lines: str) -> list[str]:
    """From `docker service ps --format '{{.Name}}\t{{.Node}}'` of running tasks: a warning for each
    service with several replicas of which more than one runs on the same node."""
    by_service: dict[str, dict[str, int]] = {}
    for line in (ps_lines or "").splitlines():
        name, _, node = line.partition("\t")
        service = name.strip().rsplit(".", 1)[0]
        if not service or not node.strip():
            continue
        nodes = by_service.setdefault(service, {})
        nodes[node.strip()] = nodes.get(node.strip(), 0) + 1
    warnings = []
    for service, nodes in sorted(by_service.items()):
        total = sum(nodes.values())
        for node, count in sorted(nodes.items()):
            if total > 1 and count > 1:
                warnings.append(f"{service}: {count} of {total} replicas run on node {node}; losing that node "
                                f"stops them together. Label more nodes for the role (replicas + 1 nodes keep "
                                f"replicas apart through start-first updates)")
    return warnings


def crowded(c: Any, name: str, context: str | None) -> list[str]:
    services = [s.name for s in service_states(c, name, context) if s.desired > 1]
    if not services:
        return []
    ps = _run(c, docker(context, "service", "ps", "--filter", "desired-state=running", "--format",
                        "{{.Name}}\t{{.Node}}", *services), hide=True, warn=True)
    return crowding(ps.stdout if ps.ok else "")


def migrate(c: Any, settings: Settings, context: str | None, timeout: int, poll: float = 2.0,
            progress: Callable[[str], None] | None = None) -> None:
    """Dify's migrations once, as a one-shot service (restart none), before the api is updated."""
    api = cl.CLUSTERS["api"]
    rendered = render(c, settings, api, profiles=("migrate",))
    name = f"{settings.stack}-migrate"
    stack_file = to_stack(rendered, name, settings.env, services=["migrate"])
    svc = stack_file.stack["services"]["migrate"]
    svc["deploy"] = dict(svc.get("deploy") or {}, replicas=1, restart_policy={"condition": "none"})
    _run(c, docker(context, "stack", "rm", name), hide=True, warn=True)
    _wait_gone(c, name, context, timeout=60, poll=poll)
    ensure_objects(c, settings, stack_file, context)
    deploy_stack(c, name, stack_file, context)
    started = time.monotonic()
    last = ""
    try:
        while True:
            ps = _run(c, docker(context, "service", "ps", "--no-trunc", "--format", "{{.CurrentState}}|{{.Error}}",
                                f"{name}_migrate"), hide=True, warn=True)
            first = (ps.stdout.splitlines() or [""])[0] if ps.ok else ""
            state = first.split(" ", 1)[0]
            if progress and state != last:
                progress(f"{time.monotonic() - started:5.1f}s migration {state or 'not scheduled yet'}")
                last = state
            if first.startswith("Complete"):
                return
            if first.startswith(("Failed", "Rejected", "Shutdown")):
                _run(c, docker(context, "service", "logs", "--tail", "20", "--no-task-ids", f"{name}_migrate"),
                     warn=True)  # shown before the stack (and its logs) goes
                raise DifyopsError(f"the database migration failed ({first.strip()}); the api was not updated: "
                                   f"see `docker service logs {name}_migrate`")
            if time.monotonic() - started > timeout:
                raise DifyopsError(f"the database migration did not finish within {timeout}s; the api was not updated")
            time.sleep(poll)
    finally:
        _run(c, docker(context, "stack", "rm", name), hide=True, warn=True)


def _wait_gone(c: Any, name: str, context: str | None, timeout: int, poll: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not service_states(c, name, context):
            return
        time.sleep(poll)


def deploy_cluster(c: Any, settings: Settings, cluster: cl.Cluster, context: str | None, timeout: int,
                   progress: Callable[[str], None] | None = None, stack_file: StackFile | None = None) -> StackFile:
    """Deploy one cluster's stack and wait for it; `stack_file` is the one pre-flight rendered (else
    it is rendered here)."""
    if cluster.name == "api":
        migrate(c, settings, context, timeout, progress=progress)
    name = stack_name(settings, cluster)
    if stack_file is None:
        stack_file = to_stack(render(c, settings, cluster), name, settings.env)
    ensure_objects(c, settings, stack_file, context)
    deploy_stack(c, name, stack_file, context)
    wait_converged(c, name, context, timeout, progress=progress)
    return stack_file


def remove(c: Any, settings: Settings, selected: list[cl.Cluster], context: str | None, networks: bool,
           timeout: int = 120) -> None:
    for cluster in reversed(selected):
        name = stack_name(settings, cluster)
        _run(c, docker(context, "stack", "rm", name), hide=True, warn=True)
        _wait_gone(c, name, context, timeout=timeout, poll=2.0)
    if networks:
        for network in cl.NETWORKS:
            name = cl.network_name(settings, network)
            for _ in range(15):  # bounded: tasks take a few seconds to leave the network
                if not _run(c, docker(context, "network", "inspect", name), hide=True, warn=True).ok:
                    break
                if _run(c, docker(context, "network", "rm", name), hide=True, warn=True).ok:
                    break
                time.sleep(2)
        for kind in ("secret", "config"):
            found = _run(c, docker(context, kind, "ls", "-q", "--filter", f"label={cl.STACK_LABEL}={settings.stack}"),
                         hide=True, warn=True)
            ids = found.stdout.split() if found.ok else []
            if ids:
                _run(c, docker(context, kind, "rm", *ids), hide=True, warn=True)
