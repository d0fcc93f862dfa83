"""One-shot services on Swarm: the storage owner on every app node, the migration and the schema check."""

from __future__ import annotations

import time
from typing import Any

from .. import clusters as cl
from .. import release_sets
from ..config import Settings
from ..errors import DifyopsError
from ..report import Say, quiet
from .nodes import _run, docker, nodes_for
from .render import ensure_objects, make_stack_file
from .services import _wait_gone, deploy_stack
from .stackfile import StackFile


class _Output:
    """What a one-shot service printed, shaped as a command's result (for stack.schema_problem)."""

    def __init__(self, stdout: str, ok: bool = True):
        self.stdout, self.stderr, self.ok = stdout, "", ok


def one_shot(c: Any, settings: Settings, context: str | None, name: str, stack_file: StackFile, service: str,
             timeout: int, what: str, replicas: int = 1, poll: float = 2.0,
             say: Say = quiet) -> str:
    """Run `service` of `stack_file` as the one-shot stack `name`: `replicas` tasks (one per node
    when more than one), never restarted; wait, bounded, until every task completed; return what
    they printed. The stack is removed afterwards, whatever happened."""
    svc = stack_file.stack["services"][service]
    deploy = dict(svc.get("deploy") or {}, replicas=replicas, restart_policy={"condition": "none"})
    if replicas > 1:
        deploy["placement"] = dict(deploy.get("placement") or {}, max_replicas_per_node=1)
    svc["deploy"] = deploy
    full = f"{name}_{service}"
    _run(c, docker(context, "stack", "rm", name), hide=True, warn=True)
    _wait_gone(c, name, context, timeout=60, poll=poll)
    ensure_objects(c, settings, stack_file, context)
    deploy_stack(c, name, stack_file, context)
    started = time.monotonic()
    last = ""
    try:
        while True:
            ps = _run(c, docker(context, "service", "ps", "--no-trunc", "--format", "{{.CurrentState}}|{{.Error}}",
                                full), hide=True, warn=True)
            lines = [ln for ln in (ps.stdout or "").splitlines() if ln.strip()] if ps.ok else []
            states = [ln.split(" ", 1)[0] for ln in lines]
            now = ", ".join(sorted(set(states))) or "not scheduled yet"
            if now != last:
                say(f"{time.monotonic() - started:5.1f}s {what}: {now}")
                last = now
            failed = [ln for ln in lines if ln.startswith(("Failed", "Rejected", "Shutdown"))]
            if failed:
                _run(c, docker(context, "service", "logs", "--tail", "20", "--no-task-ids", full),
                     warn=True)  # shown before the stack (and its logs) goes
                raise DifyopsError(f"{what} failed ({failed[0].strip()}): see `docker service logs {full}`")
            if len(lines) >= replicas and all(s == "Complete" for s in states):
                for _ in range(5):  # bounded: the logs of a finished task reach the manager shortly after
                    logs = _run(c, docker(context, "service", "logs", "--raw", "--no-task-ids", full),
                                hide=True, warn=True)
                    if logs.ok and (logs.stdout or "").strip():
                        return logs.stdout
                    time.sleep(poll)
                return ""
            if time.monotonic() - started > timeout:
                raise DifyopsError(f"{what} did not finish within {timeout}s")
            time.sleep(poll)
    finally:
        _run(c, docker(context, "stack", "rm", name), hide=True, warn=True)


def ensure_owners(c: Any, settings: Settings, context: str | None, timeout: int, poll: float = 2.0,
                  say: Say = quiet) -> None:
    """The storage volume is local to each node: give it to the api image's user on every node the
    api and workers may run on (compose/api.yml's init_permissions, one task per node, then gone)."""
    from .. import stack  # noqa: PLC0415

    owner = stack.owner_env(settings.env)
    name = f"{settings.stack}-init"
    sf = make_stack_file(c, settings, cl.CLUSTERS["api"], context, name=name, profiles=(stack.OWNER_PROFILE,),
                    services=[stack.OWNER_SERVICE], extra_env=owner)
    nodes = nodes_for(c, context, sf.stack["services"][stack.OWNER_SERVICE])
    if not nodes:
        raise DifyopsError("no Swarm node is labelled for the api's role: run `invoke swarm.label NODE app`")
    one_shot(c, settings, context, name, sf, stack.OWNER_SERVICE, timeout,
             f"giving the storage volume to {owner['DIFYOPS_STORAGE_OWNER']} on {nodes} node(s)",
             replicas=nodes, poll=poll, say=say)


def migrate(c: Any, settings: Settings, context: str | None, timeout: int, poll: float = 2.0,
            say: Say = quiet) -> None:
    """Dify's migrations once, as a one-shot service, before the api is updated; then, as another
    one-shot, where the schema is (Alembic's `current`): it must be at the image's head."""
    from .. import stack  # noqa: PLC0415

    api = cl.CLUSTERS["api"]
    name = f"{settings.stack}-migrate"
    sf = make_stack_file(c, settings, api, context, name=name, profiles=("migrate",), services=["migrate"])
    image = sf.stack["services"]["migrate"].get("image", "the api image")
    try:
        output = one_shot(c, settings, context, name, sf, "migrate", timeout, "the database migration",
                          poll=poll, say=say)
    except DifyopsError as exc:
        raise DifyopsError(f"{exc}; the api was not updated") from None
    current = release_sets.migrations_of(settings.env).current_command

    def as_check(rendered: dict[str, Any]) -> None:
        svc = rendered["services"]["migrate"]
        svc["environment"] = dict(svc.get("environment") or {}, MODE="job", MIGRATION_ENABLED="false")
        svc["command"] = list(current)

    check_sf = make_stack_file(c, settings, api, context, name=f"{settings.stack}-schema", profiles=("migrate",),
                          services=["migrate"], edit=as_check)
    try:
        printed = one_shot(c, settings, context, f"{settings.stack}-schema", check_sf, "migrate", timeout,
                           "the schema check", poll=poll, say=say)
        check = _Output(printed)
    except DifyopsError as exc:
        check = _Output(str(exc), ok=False)
    problem = stack.schema_problem(settings.env, output, check, image)
    if problem:
        raise DifyopsError(f"{problem}; the api was not updated")


def switch_routes(c: Any, settings: Settings, context: str | None, switches: dict[str, tuple[str, str]],
                  timeout: int, poll: float = 2.0, say: Say = quiet) -> None:
    """Gateway routes a release moves, switched without touching the gateway's tasks: a one-shot
    task on every gateway node writes them into that node's routes volume and waits, bounded, until
    the gateway there applied them by a graceful reload (on a node that runs no gateway, one started
    there later reads them: nginx/entrypoint.d/45-difyops-routes.sh)."""
    from .. import rollout_release as rr  # noqa: PLC0415

    script = rr.routes_script(switches, no_gateway_code=0)

    def as_job(rendered: dict[str, Any]) -> None:
        svc = rendered["services"]["nginx"]
        for key in ("ports", "healthcheck", "configs", "secrets"):
            svc.pop(key, None)
        # only the routes volume: no bind mount (config) and nothing else of the gateway's
        svc["volumes"] = [v for v in svc.get("volumes") or []
                          if isinstance(v, dict) and v.get("target") == rr.GATEWAY_ROUTES_DIR]
        svc["entrypoint"] = ["/bin/sh", "-c"]
        # the rendered file is Compose's (interpolated again by `docker stack deploy`): $ as $$
        svc["command"] = [script.replace("$", "$$")]
        svc["stop_grace_period"] = "5s"

    name = f"{settings.stack}-routes"
    sf = make_stack_file(c, settings, cl.CLUSTERS["gateway"], context, name=name, services=["nginx"], edit=as_job)
    nodes = nodes_for(c, context, sf.stack["services"]["nginx"])
    if not nodes:
        raise DifyopsError("no Swarm node is labelled for the gateway's role: run `invoke swarm.label NODE gateway`")
    one_shot(c, settings, context, name, sf, "nginx", timeout,
             f"switching the gateway's routes ({', '.join(f'{k}={v[1]}' for k, v in sorted(switches.items()))}) "
             f"on {nodes} node(s)", replicas=nodes, poll=poll, say=say)
