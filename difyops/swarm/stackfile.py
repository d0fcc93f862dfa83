"""A cluster rendered by Compose (clusters.compose_argv, target=swarm) turned into a Swarm stack file: secrets into Docker secrets, bind mounts into configs, the secrets shim. Pure."""

from __future__ import annotations

import hashlib
import json
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .. import clusters as cl
from .. import envfile
from ..errors import DifyopsError

SWARM_DIR = cl.SWARM_DIR


SHIM_FILE = SWARM_DIR / "secrets-env.sh"


SHIM_TARGET = "/difyops/secrets-env.sh"


SECRETS_DIR = "/run/secrets"


STACK_FILE_VERSION = "3.12"  # healthcheck start_interval needs 3.12 (Docker 25+)


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


HINTS_KEY = "x-difyops-swarm"  # per service: file_variables (the image reads VAR_FILE itself)


NAME_MAX = 64  # Docker's limit for secret and config names


@dataclass
class StackFile:
    """A stack file ready for `docker stack deploy -c -`, and what it needs to exist first."""

    stack: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)  # secret name -> value (never printed)
    dropped: list[str] = field(default_factory=list)  # "service: key" Swarm ignores

    def dumps(self) -> str:
        return json.dumps(self.stack, indent=1, sort_keys=True)


def secret_values(env: dict[str, str]) -> dict[str, str]:
    """value -> the .env key it comes from, for every non-empty secret (short values ignored)."""
    from .. import release_sets  # noqa: PLC0415

    releases = [release_sets.load(v) for v in release_sets.supported()]
    out: dict[str, str] = {}
    # The releases' own (the agent backend's server key and token, the local sandbox's token) too.
    for key in (*envfile.SECRET_KEYS, *EXTRA_SECRET_KEYS, *sorted({n for rs in releases for n in rs.secrets})):
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


def _secret_variables(spec: dict[str, Any], secrets: dict[str, str], file_vars: set[str]) -> list[str]:
    return [var for var, value in sorted((spec.get("environment") or {}).items())
            if value is not None and var not in file_vars and _contains_secret(value, secrets) is not None]


def shimmed_images(rendered: dict[str, Any], env: dict[str, str], services: Iterable[str] | None = None) -> list[str]:
    """The images whose ENTRYPOINT and CMD the shim must run (services that get secrets through the
    shim and set no entrypoint of their own): what :func:`start_commands` must read."""
    secrets = secret_values(env)
    wanted = set(services) if services is not None else None
    hints_all = rendered.get(HINTS_KEY) or {}
    refs = set()
    for name, spec in (rendered.get("services") or {}).items():
        if wanted is not None and name not in wanted:
            continue
        file_vars = set((hints_all.get(name) or {}).get("file_variables") or [])
        if _secret_variables(spec, secrets, file_vars) and not spec.get("entrypoint") and spec.get("image"):
            refs.add(spec["image"])
    return sorted(refs)


def parse_start_command(text: str) -> tuple[list[str], list[str]]:
    """`docker image inspect --format '{{json .Config.Entrypoint}} {{json .Config.Cmd}}'` -> lists."""
    decoder = json.JSONDecoder()
    values, rest = [], (text or "").strip()
    for _ in range(2):
        value, end = decoder.raw_decode(rest)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise ValueError(f"not a list of strings: {value!r}")
        values.append(list(value or []))
        rest = rest[end:].strip()
    return values[0], values[1]


def wrapped_command(name: str, spec: dict[str, Any], start: tuple[list[str], list[str]] | None) -> list[str]:
    """What the shim runs for a service: its entrypoint, else the image's ENTRYPOINT followed by the
    image's CMD unless the service sets its own command (then that command follows, as args)."""
    if spec.get("entrypoint"):
        return list(spec["entrypoint"])
    if start is None:
        raise DifyopsError(f"service {name}: the ENTRYPOINT and CMD of {spec.get('image')} are unknown")
    entrypoint, cmd = start
    wrapped = entrypoint if spec.get("command") else entrypoint + cmd
    if not wrapped:
        raise DifyopsError(f"service {name}: {spec.get('image')} has neither ENTRYPOINT nor CMD (and the service sets "
                           "no command): there is nothing for the secrets shim to start")
    return wrapped


def to_stack(rendered: dict[str, Any], stack: str, env: dict[str, str], services: Iterable[str] | None = None,
             shim: Path = SHIM_FILE, start: dict[str, tuple[list[str], list[str]]] | None = None) -> StackFile:
    """Turn `docker compose config --format json` output into a Swarm stack file (see module doc).
    `start` maps an image ref to its (ENTRYPOINT, CMD), for the services the shim wraps."""
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
        if "entrypoint" in hints:
            raise DifyopsError(f"{HINTS_KEY}.{name}.entrypoint is not read any more: the secrets shim runs the image's "
                               "own ENTRYPOINT and CMD, read from the image; remove the line from compose/swarm")

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
            image_start = (start or {}).get(spec.get("image") or "")
            if not spec.get("entrypoint") and image_start is None:
                raise DifyopsError(
                    f"service {name} gets secrets ({', '.join(moved)}) through the secrets shim, but the ENTRYPOINT "
                    f"and CMD of its image {spec.get('image')} were not read (swarm.start_commands)")
            svc["entrypoint"] = ["/bin/sh", SHIM_TARGET, *wrapped_command(name, spec, image_start)]
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
        if ports and publish == "host":
            # A host-mode port is the node's own: a start-first task on the same node cannot bind it
            # and stays pending ("host-mode port already in use"), so the update never ends. Such a
            # service is replaced stop-first (a gap of a few seconds on that node; ingress has none).
            for key in ("update_config", "rollback_config"):
                if isinstance(deploy.get(key), dict):
                    deploy[key] = {**deploy[key], "order": "stop-first"}
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
    top_volumes: dict[str, dict[str, Any]] = {}
    for key, value in (rendered.get("volumes") or {}).items():
        if any(v.get("source") == key for s in out_services.values() for v in s.get("volumes") or []):
            top_volumes[key] = {"name": value.get("name", key), "external": bool(value.get("external"))}
    stack_doc: dict[str, Any] = {"version": STACK_FILE_VERSION, "services": out_services}
    for key, value in (("networks", networks), ("volumes", top_volumes), ("secrets", top_secrets),
                       ("configs", top_configs)):
        if value:
            stack_doc[key] = value
    return StackFile(stack_doc, secret_values_out, dropped)
