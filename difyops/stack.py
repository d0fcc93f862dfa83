"""What prod tasks do to a running stack: create what clusters share, bring clusters up and
down in order, run the one-shot migration, and read back their state."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from typing import Any, Iterable

from rich.console import Console

from . import clusters as cl
from . import ha, probes
from .config import Settings
from .errors import fail

console = Console(stderr=True, highlight=False, soft_wrap=True)  # one problem, one line


def run_compose(c: Any, settings: Settings, cluster: cl.Cluster, *args: str, profiles=(), extra_env=None, **kwargs):
    argv = cl.compose_argv(settings, cluster, *args, profiles=profiles)
    return c.run(shlex.join(argv), env={**cl.compose_env(settings), **(extra_env or {})}, **kwargs)


def cluster_images(c: Any, settings: Settings, cluster: cl.Cluster) -> list[str]:
    """Image refs a cluster runs, as Compose resolves them from .env (profiles included)."""
    result = run_compose(c, settings, cluster, "config", "--images", hide=True, warn=True)
    if not result.ok:
        raise fail(f"compose/{cluster.name}.yml does not resolve: {_last_line(result.stderr)}")
    return sorted({line.strip() for line in result.stdout.splitlines() if line.strip()})


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def preflight(c: Any, settings: Settings, selected: list[cl.Cluster], pull_missing: bool = True) -> list[str]:
    """Everything that must hold before anything changes; returns the problems."""
    problems = probes.docker_problems(c)
    problems += probes.env_problems(settings)
    if problems:  # the remaining probes need Docker and a valid .env
        return problems
    from . import hardening  # prod.check's lines: short secrets, debug, plain HTTP, certificate, sizes

    problems += hardening.beyond_envfile(c, settings, settings.env)
    if problems:
        return problems
    if any(x.name == "gateway" for x in selected):
        problems += probes.port_problems(c, settings)
    refs = sorted({ref for cluster in selected for ref in cluster_images(c, settings, cluster)})
    missing = probes.missing_images(c, refs)
    if missing and pull_missing:
        from . import images  # pulling changes nothing that runs

        mirror = settings.get("DIFYOPS_IMAGE_MIRROR")
        for ref in missing:
            console.print(f"pulling {ref}" + (f" through {mirror}" if mirror else ""))
            images.pull_one(c, ref, mirror)
        missing = probes.missing_images(c, missing)
    for ref in missing:
        problems.append(
            f"image {ref} is not present and could not be pulled: run `invoke images.pull` "
            "(set DIFYOPS_IMAGE_MIRROR where Docker Hub is blocked) or load an offline bundle"
        )
    return problems


def ensure_shared(c: Any, settings: Settings, selected: Iterable[cl.Cluster]) -> None:
    """Create the networks and data volumes the selected clusters use, if missing."""
    networks = sorted({n for x in selected for n in x.networks})
    volumes = sorted({v for x in selected for v in (*x.volumes, *ha.extra_volumes(settings.env, x.name))})
    for network in networks:
        name = cl.network_name(settings, network)
        if not c.run(shlex.join(["docker", "network", "inspect", name]), hide=True, warn=True).ok:
            c.run(shlex.join(cl.network_create_argv(settings, network)), hide=True)
    for volume in volumes:
        name = cl.volume_name(settings, volume)
        if not c.run(shlex.join(["docker", "volume", "inspect", name]), hide=True, warn=True).ok:
            c.run(shlex.join(cl.volume_create_argv(settings, volume)), hide=True)


def migrate(c: Any, settings: Settings) -> None:
    """Run Dify's migrations once, as a one-shot container, before any api replica starts."""
    api = cl.CLUSTERS["api"]
    result = run_compose(c, settings, api, "run", "--rm", "--no-deps", "migrate", profiles=("migrate",), warn=True)
    if not result.ok:
        raise fail("the database migration failed (output above); nothing after it was started")


def up(c: Any, settings: Settings, cluster: cl.Cluster, timeout: int | None = None, recreate: bool = False) -> float:
    """Start a cluster and wait until every service is healthy; returns the seconds it took."""
    started = time.monotonic()
    if cluster.name == "api":
        console.print("[bold]api[/]: running migrations as a one-shot job")
        migrate(c, settings)
    args = ["up", "-d", "--wait", "--wait-timeout", str(timeout or settings.wait_timeout), "--remove-orphans"]
    if recreate:
        args.append("--force-recreate")
    # With worker groups, the main worker takes only the queues no group claims.
    extra_env = _main_worker_env(settings) if cluster.name == "worker" else None
    result = run_compose(c, settings, cluster, *args, warn=True, extra_env=extra_env)
    if not result.ok:
        raise fail(
            f"cluster {cluster.name} did not become healthy: see `invoke prod.status` and "
            f"`invoke prod.logs {cluster.name}`"
        )
    if cluster.name == "worker":
        up_worker_groups(c, settings, timeout=timeout, recreate=recreate)
    return time.monotonic() - started


def _main_worker_env(settings: Settings) -> dict[str, str]:
    from . import workers

    try:
        return workers.groups(settings)[0].env
    except workers.WorkerGroupError as exc:
        raise fail(str(exc))


def _extra_worker_units(settings: Settings):
    from . import rollout, workers

    try:
        return [u for u in rollout.units(settings) if u.key not in ("api", "web", "worker")]
    except workers.WorkerGroupError as exc:
        raise fail(str(exc))


def up_worker_groups(c: Any, settings: Settings, timeout: int | None = None, recreate: bool = False) -> None:
    """Each extra worker group of WORKER_GROUPS: its own project, the worker service only."""
    from . import releases, rollout

    for unit in _extra_worker_units(settings):
        args = ["up", "-d", "--no-deps", "--wait", "--wait-timeout", str(timeout or settings.wait_timeout)]
        if recreate:
            args.append("--force-recreate")
        project = releases.active_project(settings, unit.key)
        result = rollout.run_unit(c, settings, unit, project, *args, unit.service, warn=True)
        if not result.ok:
            raise fail(f"worker group {unit.key} did not become healthy: see `invoke prod.status`")


def down(c: Any, settings: Settings, cluster: cl.Cluster) -> None:
    run_compose(c, settings, cluster, "down", "--remove-orphans", "--timeout", "30", hide=True, warn=True)
    if cluster.name in ("api", "web", "worker"):
        _down_releases(c, settings, cluster)


def _down_releases(c: Any, settings: Settings, cluster: cl.Cluster) -> None:
    """Worker groups, and a release an interrupted upgrade left, go down with their cluster."""
    from . import releases

    state = releases.load_state(settings)
    pending = state.get("pending") or {}
    projects = [pending[cluster.name]] if cluster.name in pending else []
    if cluster.name == "worker":
        for unit in _extra_worker_units(settings):
            projects.append(releases.active_project(settings, unit.key))
            if unit.key in pending:
                projects.append(pending[unit.key])
    for project in projects:
        argv = cl.compose_argv(settings, cluster, "down", "--remove-orphans", "--timeout", "30", project_name=project)
        c.run(shlex.join(argv), env=cl.compose_env(settings), hide=True, warn=True)
    if pending:
        for key in [k for k in pending if k == cluster.name or (cluster.name == "worker" and k.startswith("worker_"))]:
            pending.pop(key)
        state["pending"] = pending
        if not pending:
            state.pop("pending")
        releases.save_state(settings, state)


def remove_shared(c: Any, settings: Settings, volumes: bool) -> None:
    """Remove the stack's networks, and its data volumes only when asked."""
    for network in cl.NETWORKS:
        c.run(shlex.join(["docker", "network", "rm", cl.network_name(settings, network)]), hide=True, warn=True)
    if volumes:
        for volume in cl.VOLUMES + ha.VOLUMES:  # the overlays' too, whether or not they are on now
            c.run(shlex.join(["docker", "volume", "rm", cl.volume_name(settings, volume)]), hide=True, warn=True)


@dataclass
class ServiceRow:
    cluster: str
    service: str
    state: str
    health: str
    replicas: str
    ports: str


def _ps_records(stdout: str) -> list[dict]:
    text = stdout.strip()
    if not text:
        return []
    if text.startswith("["):  # older Compose prints one JSON array
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _ports(record: dict) -> list[str]:
    out = []
    for pub in record.get("Publishers") or []:
        if pub.get("PublishedPort"):
            out.append(f"{pub.get('URL') or '0.0.0.0'}:{pub['PublishedPort']}->{pub['TargetPort']}")
    return out


def status_rows(c: Any, settings: Settings, selected: list[cl.Cluster]) -> list[ServiceRow]:
    rows = []
    for cluster in selected:
        result = run_compose(c, settings, cluster, "ps", "-a", "--format", "json", hide=True, warn=True)
        records = _ps_records(result.stdout) if result.ok else []
        for service in (*cluster.services, *ha.extra_services(settings.env, cluster.name)):
            mine = [r for r in records if r.get("Service") == service]
            if not mine:
                rows.append(ServiceRow(cluster.name, service, "absent", "-", "0/0", ""))
                continue
            running = [r for r in mine if r.get("State") == "running"]
            healths = sorted({r.get("Health") or "none" for r in running}) or ["-"]
            states = sorted({r.get("State", "?") for r in mine})
            ports = sorted({p for r in mine for p in _ports(r)})
            rows.append(ServiceRow(cluster.name, service, ",".join(states), ",".join(healths),
                                   f"{len(running)}/{len(mine)}", " ".join(ports)))
        if cluster.name == "worker":
            rows += _worker_group_rows(c, settings)
    return rows


def _worker_group_rows(c: Any, settings: Settings) -> list[ServiceRow]:
    from . import releases, rollout

    rows = []
    for unit in _extra_worker_units(settings):
        project = releases.active_project(settings, unit.key)
        result = rollout.run_unit(c, settings, unit, project, "ps", "-a", "--format", "json", hide=True, warn=True)
        mine = [r for r in (_ps_records(result.stdout) if result.ok else []) if r.get("Service") == unit.service]
        running = [r for r in mine if r.get("State") == "running"]
        if not mine:
            rows.append(ServiceRow("worker", unit.key, "absent", "-", "0/0", ""))
            continue
        healths = sorted({r.get("Health") or "none" for r in running}) or ["-"]
        rows.append(ServiceRow("worker", unit.key, ",".join(sorted({r.get("State", "?") for r in mine})),
                               ",".join(healths), f"{len(running)}/{len(mine)}", ""))
    return rows
