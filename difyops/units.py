"""Running compose for a cluster, or for one app unit of it (api, web, the main worker, a worker
group): what deploying (stack.py) and rolling out (rollout.py) both need, so that neither imports
the other."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from . import clusters as cl
from . import composeps, releases, workers
from .config import Settings


def cluster_env(settings: Settings, cluster: cl.Cluster) -> dict[str, str]:
    """compose's process environment for a cluster: clusters.compose_env, and for the workers the
    stop grace period their longest workflow run needs (workers.drain_env)."""
    env = cl.compose_env(settings)
    if cluster.name == "worker":
        env.update(workers.drain_env(settings.env))
    return env


def run_compose(c: Any, settings: Settings, cluster: cl.Cluster, *args: str, profiles: tuple[str, ...] = (),
                extra_env: dict[str, str] | None = None, **kwargs: Any) -> Any:
    argv = cl.compose_argv(settings, cluster, *args, profiles=profiles)
    return c.run(shlex.join(argv), env={**cluster_env(settings, cluster), **(extra_env or {})}, **kwargs)


@dataclass(frozen=True)
class Unit:
    """One rolling-replaced service: api, web, the main worker, or an extra worker group."""
    key: str  # state key and prod.scale key: api, web, worker, worker_<g>
    cluster: cl.Cluster
    service: str
    env: dict[str, str] = field(default_factory=dict)


def units(settings: Settings) -> list[Unit]:
    """api, web and every worker group (WORKER_GROUPS; DifyopsError for a bad one)."""
    out = [Unit("api", cl.CLUSTERS["api"], "api"), Unit("web", cl.CLUSTERS["web"], "web")]
    for group in workers.groups(settings):
        out.append(Unit(group.name, cl.CLUSTERS["worker"], "worker", dict(group.env)))
    return out


def extra_worker_units(settings: Settings) -> list[Unit]:
    """The worker groups besides the main worker (each its own compose project)."""
    return [u for u in units(settings) if u.key not in ("api", "web", "worker")]


def main_worker_env(settings: Settings) -> dict[str, str]:
    """The main worker's queues: the ones no worker group claims."""
    return workers.groups(settings)[0].env


def unit_env(settings: Settings, unit: Unit, image_env: dict[str, str] | None = None) -> dict[str, str]:
    env = {**cluster_env(settings, unit.cluster), **unit.env, **(image_env or {})}
    if unit.key not in releases.REPLICA_VARIABLES:
        count = releases.replicas(settings).get(unit.key)
        if count is not None:
            env["WORKER_REPLICAS"] = str(count)
    return env


def run_unit(c: Any, settings: Settings, unit: Unit, project: str, *args: str,
             image_env: dict[str, str] | None = None, profiles: tuple[str, ...] = (), **kwargs: Any) -> Any:
    argv = cl.compose_argv(settings, unit.cluster, *args, profiles=profiles, project_name=project)
    return c.run(shlex.join(argv), env=unit_env(settings, unit, image_env), **kwargs)


def unit_records(c: Any, settings: Settings, unit: Unit, project: str, *flags: str) -> list[dict[str, Any]]:
    """`docker compose ps --format json` of a unit's service (Compose lists only it), one dict per container."""
    result = run_unit(c, settings, unit, project, "ps", *flags, "--format", "json", unit.service, hide=True, warn=True)
    return composeps.records(result.stdout if result.ok else "")


def running_count(c: Any, settings: Settings, unit: Unit, project: str) -> int:
    return len(composeps.running(unit_records(c, settings, unit, project)))

