"""The official install during the run: stopped (restart policy off), started again, waited on."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import adopt as ad
from .. import polling
from .. import backup as bk
from .. import clusters as cl
from .. import composeps, pgmove, units
from ..config import Settings
from ..report import Say
from ..report import failure_line
from .commands import RunError, Source, run, source_psql_argv


@dataclass
class Adoption:
    """What a run has done so far, so that a failure before the switch can undo all of it."""

    c: Any
    settings: Settings
    plan: ad.Plan
    image: str
    stamp: str
    say: Say
    stage: Path
    stopped: list[str] = field(default_factory=list)  # official services this run stopped
    started: list[str] = field(default_factory=list)  # official services this run started (to read them)
    policies: dict[str, str] = field(default_factory=dict)  # container -> restart policy before
    created_volumes: list[str] = field(default_factory=list)
    created_networks: list[str] = field(default_factory=list)
    env_backup: Path | None = None
    env_written: bool = False
    env_existed: bool = False
    scratch: dict[str, str] = field(default_factory=dict)  # target database -> scratch database
    staged: list[str] = field(default_factory=list)  # volume names holding a staged copy
    moved: list[pgmove.Moved] = field(default_factory=list)
    trees: dict[str, dict] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    data_started: bool = False
    data_was_running: bool = False

    @property
    def install(self) -> ad.Install:
        return self.plan.install

    def secrets(self, **extra: str) -> dict[str, str]:
        return {**bk.secret_env(self.settings), **extra}

    def compose(self, *args: str, what: str) -> str:
        return run(self.c, self.install.compose_argv(*args), what)


def stop_official(a: Adoption, services: list[str]) -> None:
    if not services:
        return
    for service in services:
        name = a.install.containers.get(service)
        if name and name not in a.policies:
            out = a.c.run(shlex.join(["docker", "inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", name]),
                          hide=True, warn=True)
            a.policies[name] = (out.stdout or "").strip() if out.ok else ""
    a.compose("stop", "--timeout", "60", *services, what=f"stopping {', '.join(services)} of {a.install.project}")
    for service in services:
        name = a.install.containers.get(service)
        if name and a.policies.get(name) not in ("", "no"):
            run(a.c, ["docker", "update", "--restart", "no", name], f"setting {name}'s restart policy to no")


def restore_policies(c: Any, policies: dict[str, str]) -> None:
    for name, policy in policies.items():
        if policy and policy != "no":
            c.run(shlex.join(["docker", "update", "--restart", policy, name]), hide=True, warn=True)


def start_official(c: Any, install: ad.Install, services: list[str], timeout: float = 180) -> None:
    """Start services of the official install again (its own containers; created if missing) and
    wait until each runs, and is healthy where it has a healthcheck."""
    if not services:
        return
    result = c.run(shlex.join(install.compose_argv("start", *services)), hide=True, warn=True, in_stream=False)
    if not result.ok:
        run(c, install.compose_argv("up", "-d", "--no-build", "--no-recreate", *services),
            f"starting {', '.join(services)} of {install.project}")
    waiting: list[str] = list(services)

    def all_up() -> bool:
        result = c.run(shlex.join(install.compose_argv("ps", "-a", "--format", "json")), hide=True, warn=True)
        states, _names, healths = composeps.by_service(composeps.records(result.stdout if result.ok else ""))
        waiting[:] = [s for s in services if states.get(s) != "running" or healths.get(s) not in ("", "healthy")]
        return not waiting

    if not polling.until(all_up, timeout, interval=2):
        raise RunError(f"the official services {', '.join(waiting)} are not running and healthy after "
                       f"{timeout:.0f}s: see `docker compose logs` in {install.dir}")


def running_count(c: Any, settings: Settings, cluster: cl.Cluster) -> int:
    result = units.run_compose(c, settings, cluster, "ps", "--format", "json", hide=True, warn=True)
    return len(composeps.running(composeps.records(result.stdout if result.ok else "")))


def wait_source_db(a: Adoption, source: Source, timeout: float = 90) -> None:
    argv = source_psql_argv(a.image, source, "SELECT 1")
    last: list[Any] = [None]

    def accepts() -> bool:
        last[0] = a.c.run(shlex.join(argv), env={"PGPASSWORD": source.password}, hide=True, warn=True, in_stream=False)
        return bool(last[0].ok)

    if not polling.until(accepts, timeout, interval=1):
        raise RunError(f"the official {source.service} did not accept connections within {timeout:.0f}s: "
                       f"{failure_line(last[0])}")
