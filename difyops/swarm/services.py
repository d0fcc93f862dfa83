"""What runs: a stack's services and their replicas, waiting for them, removing stacks."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from .. import clusters as cl
from ..config import Settings
from ..errors import DifyopsError
from ..report import Say, quiet
from ..stdin import TextInput
from .nodes import _run, crowding, deploy_argv, docker
from .stackfile import StackFile


def stack_name(settings: Settings, cluster: cl.Cluster) -> str:
    return cl.project(settings, cluster)


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
                   clock=time.monotonic, sleep=time.sleep, say: Say = quiet) -> float:
    """Wait (bounded by timeout) until every service of stack `name` runs all its replicas, healthy,
    with no update in progress. Returns the seconds it took; raises on rollback or timeout.
    ``say`` is told each new state (`api_api 1/2 updating`), with the seconds so far."""
    started = clock()
    seen_update = False
    last = ""
    while True:
        states = service_states(c, name, context)
        now = ", ".join(f"{s.name.removeprefix(name + '_')} {s.running}/{s.desired} {s.update}".strip() for s in states)
        if now != last:
            say(f"{clock() - started:5.1f}s {now or 'no services yet'}")
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


def crowded(c: Any, name: str, context: str | None) -> list[str]:
    services = [s.name for s in service_states(c, name, context) if s.desired > 1]
    if not services:
        return []
    ps = _run(c, docker(context, "service", "ps", "--filter", "desired-state=running", "--format",
                        "{{.Name}}\t{{.Node}}", *services), hide=True, warn=True)
    return crowding(ps.stdout if ps.ok else "")


def _wait_gone(c: Any, name: str, context: str | None, timeout: int, poll: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not service_states(c, name, context):
            return
        time.sleep(poll)


def remove(c: Any, settings: Settings, selected: list[cl.Cluster], context: str | None, networks: bool,
           timeout: int = 120) -> None:
    for cluster in reversed(selected):
        name = stack_name(settings, cluster)
        _run(c, docker(context, "stack", "rm", name), hide=True, warn=True)
        _wait_gone(c, name, context, timeout=timeout, poll=2.0)
    if networks:
        for network in (*cl.NETWORKS, *cl.every_release_network()):
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
