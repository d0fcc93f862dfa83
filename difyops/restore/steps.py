"""The restore's Docker steps: stopping what writes the data, starting clusters again, SQL against the data cluster."""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

from ..report import failure_line
from .. import backup as bk
from .. import clusters as cl
from .. import ha, releases, units
from ..config import Settings
from .values import MONITORING_READERS, USERS


def _stack():
    from .. import stack as st  # noqa: PLC0415 (stack imports probes, images: loaded when needed)

    return st


def _exit_text(exc: BaseException) -> str:
    return str(exc).removeprefix("error: ").strip()


def rendered(c: Any, settings: Settings) -> dict[str, dict]:
    """Each cluster's services as `docker compose config` renders them from a .env."""
    out = {}
    for name, cluster in cl.CLUSTERS.items():
        result = units.run_compose(c, settings, cluster, "config", "--format", "json", hide=True, warn=True)
        if not result.ok:
            raise bk.BackupError(f"compose/{name}.yml does not resolve with {settings.env_file.name}: "
                                 f"{failure_line(result)}")
        try:
            out[name] = json.loads(result.stdout or "{}").get("services") or {}
        except ValueError:
            raise bk.BackupError(f"`docker compose config` of compose/{name}.yml gave no JSON") from None
    return out


def stop_users(c: Any, settings: Settings) -> None:
    """Stop what reads and writes the data: api, every worker group, the plugin daemon."""
    from .. import workers  # noqa: PLC0415

    for name, services in USERS:
        units.run_compose(c, settings, cl.CLUSTERS[name], "stop", "--timeout", "60", *services, hide=True, warn=True)
    try:
        groups = [u for u in units.units(settings) if u.key not in ("api", "web", "worker")]
    except workers.WorkerGroupError:
        groups = []
    for unit in groups:
        units.run_unit(c, settings, unit, releases.active_project(settings, unit.key), "stop", "--timeout", "60",
                         unit.service, hide=True, warn=True)


def redis_services(settings: Settings) -> tuple[str, ...]:
    """The data cluster's Redis services, sentinels first: with Sentinel on, none may promote the
    replica (holding the data being replaced) while Redis is down."""
    if ha.enabled(settings.env):
        return (*ha.SENTINELS, "redis-replica", "redis")
    return ("redis",)


def up_clusters(c: Any, settings: Settings, names: list[str], recreate: list[str]) -> None:
    st = _stack()
    for name in names:
        st.up(c, settings, cl.CLUSTERS[name], recreate=name in recreate)


def refresh_monitoring(c: Any, settings: Settings) -> None:
    """The monitoring exporters that log in to PostgreSQL and Redis, when monitoring runs: Compose
    recreates them where their configuration changed (the rest of monitoring is left alone)."""
    from .. import monitoring  # noqa: PLC0415

    argv = cl.compose_argv(settings, monitoring.CLUSTER, "ps", "-q")
    running = c.run(shlex.join(argv), env=monitoring.compose_env(settings), hide=True, warn=True)
    if not (running.ok and running.stdout.strip()):
        return
    argv = cl.compose_argv(settings, monitoring.CLUSTER, "up", "-d", "--no-deps", "--wait", "--wait-timeout",
                           str(settings.wait_timeout), *MONITORING_READERS)
    result = c.run(shlex.join(argv), env=monitoring.compose_env(settings), hide=True, warn=True)
    if not result.ok:
        raise bk.BackupError(f"the monitoring exporters did not become healthy: {failure_line(result)}")


def run_sql(c: Any, cfg: bk.BackupConfig, sql: str, password: str, what: str, attempts: int = 5) -> None:
    """psql in the backup image; retried (bounded) since a terminated client may reconnect meanwhile."""
    for attempt in range(attempts):
        result = c.run(shlex.join(bk.psql_argv(cfg, sql)), env={"PGPASSWORD": password}, hide=True, warn=True,
                       in_stream=False)
        if result.ok:
            return
        if attempt == attempts - 1:
            raise bk.BackupError(f"{what} failed: {failure_line(result)}")
        time.sleep(1)  # terminated sessions take a moment to end


def set_role_passwords(c: Any, cfg: bk.BackupConfig, roles: list[tuple[str, str]], connect: list[str],
                       passwords: dict[str, str]) -> None:
    """ALTER ROLE ... PASSWORD for each (role, key), in one transaction; the passwords travel by
    name through the environment (passwords: key -> value). connect: the passwords the login role
    may have now, tried in order (a rollback resumed later may find either)."""
    variables = {f"DIFYOPS_ROLE_PASSWORD_{i}": passwords[key] for i, (_role, key) in enumerate(roles)}
    argv = bk.role_passwords_argv(cfg, [(role, f"DIFYOPS_ROLE_PASSWORD_{i}") for i, (role, _k) in enumerate(roles)])
    candidates = list(dict.fromkeys(p for p in connect if p))
    for n, password in enumerate(candidates):
        try:
            bk.run_step(c, argv, "setting the PostgreSQL roles' passwords", {"PGPASSWORD": password, **variables})
            return
        except bk.BackupError:
            if n == len(candidates) - 1:
                raise


def existing_roles(c: Any, cfg: bk.BackupConfig, password: str, names: list[str]) -> set[str]:
    listed = ", ".join("'" + n.replace("'", "''") + "'" for n in names)
    out = bk.run_step(c, bk.psql_argv(cfg, f"SELECT rolname FROM pg_roles WHERE rolname IN ({listed})"),
                      "listing the PostgreSQL roles", {"PGPASSWORD": password})
    return set(out.split())


def swap_sql(names: list[tuple[str, str, str]]) -> str:
    """One transaction: every current database renamed aside, every restored one into its place."""
    statements = ["BEGIN;"]
    for db, _new, _old in names:
        statements.append(_terminate(db))
    for db, new, old in names:
        statements.append(f'ALTER DATABASE "{db}" RENAME TO "{old}";')
        statements.append(f'ALTER DATABASE "{new}" RENAME TO "{db}";')
    statements.append("COMMIT;")
    return " ".join(statements)


def swap_back_sql(swaps: list[tuple[str, str]], fresh: list[str], keep_as: str) -> str:
    """One transaction: the restored databases renamed to <db><keep_as>, the replaced ones back."""
    statements = ["BEGIN;"] + [_terminate(db) for db in [*[db for db, _ in swaps], *fresh]]
    for db, old in swaps:
        statements.append(f'ALTER DATABASE "{db}" RENAME TO "{db}{keep_as}";')
        statements.append(f'ALTER DATABASE "{old}" RENAME TO "{db}";')
    for db in fresh:
        statements.append(f'ALTER DATABASE "{db}" RENAME TO "{db}{keep_as}";')
    statements.append("COMMIT;")
    return " ".join(statements)


def _terminate(db: str) -> str:
    return (f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' "
            "AND pid <> pg_backend_pid();")


def restore_names(databases: list[str], stamp: str) -> list[tuple[str, str, str]]:
    """(database, restore into, move the current one to) for each database."""
    return [(db, f"{db}_restore_{stamp}", f"{db}_old_{stamp}") for db in databases]


def existing_volumes(c: Any, stack: str) -> list[str]:
    result = c.run(shlex.join(["docker", "volume", "ls", "-q", "--filter", f"name={stack}-"]), hide=True, warn=True)
    wanted = {f"{stack}-{v}" for v in (*cl.VOLUMES, *ha.VOLUMES)}
    return sorted(v for v in (result.stdout or "").split() if v in wanted) if result.ok else []


def _ensure_shared(c: Any, settings: Settings) -> dict[str, list[str]]:
    """prod.deploy's networks and volumes; returns those this call created."""
    st = _stack()
    selected = list(cl.CLUSTERS.values())
    networks = sorted({n for x in selected for n in x.networks})
    volumes = sorted({v for x in selected for v in (*x.volumes, *ha.extra_volumes(settings.env, x.name))})
    before_n = [n for n in networks if _exists(c, "network", cl.network_name(settings, n))]
    before_v = [v for v in volumes if bk.volume_exists(c, cl.volume_name(settings, v))]
    st.ensure_shared(c, settings, selected)
    return {"networks": [cl.network_name(settings, n) for n in networks if n not in before_n],
            "volumes": [cl.volume_name(settings, v) for v in volumes if v not in before_v]}


def _exists(c: Any, kind: str, name: str) -> bool:
    return c.run(shlex.join(["docker", kind, "inspect", name]), hide=True, warn=True).ok
