"""The development middleware (compose/dev/middleware.yml): start, stop, state."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import Any

from .. import composeps, probes
from ..devconfig import MIDDLEWARE_FILE, DevSettings
from ..errors import Refused, fail
from .checkout import CORE_SERVICES, HOST, MIDDLEWARE_SERVICES, VECTOR_PROFILES


def profiles(ds: DevSettings, viewer: bool = False) -> tuple[str, ...]:
    store = ds.get("VECTOR_STORE", "pgvector")
    if store not in VECTOR_PROFILES:
        raise fail(f"VECTOR_STORE={store!r} is not one the development middleware runs: choose "
                   f"{', '.join(VECTOR_PROFILES)}")
    profile = VECTOR_PROFILES[store]
    chosen = [profile] if profile else []
    if viewer:
        chosen.append("viewer")
    return tuple(chosen)


def compose_argv(ds: DevSettings, *args: str, profiles: tuple[str, ...] = ()) -> list[str]:
    argv = ["docker", "compose", "-f", str(MIDDLEWARE_FILE), "--env-file", str(ds.env_file), "-p", ds.project]
    for profile in profiles:
        argv += ["--profile", profile]
    return argv + list(args)


def run_compose(c: Any, ds: DevSettings, *args: str, profiles: tuple[str, ...] = (), **kwargs):
    return c.run(shlex.join(compose_argv(ds, *args, profiles=profiles)), **kwargs)


def port_keys(ds: DevSettings, viewer: bool) -> list[str]:
    keys = ["EXPOSE_POSTGRES_PORT", "EXPOSE_REDIS_PORT", "EXPOSE_SANDBOX_PORT", "EXPOSE_SSRF_PROXY_PORT",
            "EXPOSE_PLUGIN_DAEMON_PORT", "EXPOSE_PLUGIN_DEBUGGING_PORT"]
    store = ds.get("VECTOR_STORE", "pgvector")
    if store == "weaviate":
        keys.append("EXPOSE_WEAVIATE_PORT")
    if store == "qdrant":
        keys.append("EXPOSE_QDRANT_PORT")
    if viewer:
        keys.append("EXPOSE_VIEWER_PORT")
    return keys


def middleware_preflight(c: Any, ds: DevSettings, viewer: bool = False) -> list[str]:
    problems = probes.docker_problems(c)
    if problems:
        return problems
    if not ds.env_file.exists():
        return [f"{ds.env_file} does not exist: run `invoke dev.init` (or `invoke middleware.start`) first"]
    ours = published_ports(c, ds)
    defaults = {"EXPOSE_POSTGRES_PORT": 5432, "EXPOSE_REDIS_PORT": 6379, "EXPOSE_SANDBOX_PORT": 8194,
                "EXPOSE_SSRF_PROXY_PORT": 3128, "EXPOSE_PLUGIN_DAEMON_PORT": 5002,
                "EXPOSE_PLUGIN_DEBUGGING_PORT": 5003, "EXPOSE_WEAVIATE_PORT": 8080,
                "EXPOSE_QDRANT_PORT": 6333, "EXPOSE_VIEWER_PORT": 8081}
    for key in port_keys(ds, viewer):
        port = ds.port(key, defaults[key])
        if port not in ours and probes.port_in_use(HOST, port):
            problems.append(f"port {port} on {HOST} is already in use: stop what holds it or set {key} "
                            f"in {ds.env_file}")
    return problems


def ps_records(c: Any, ds: DevSettings) -> list[dict]:
    result = run_compose(c, ds, "ps", "-a", "--format", "json", hide=True, warn=True)
    return composeps.records(result.stdout if result.ok else "")


def published_ports(c: Any, ds: DevSettings) -> set[int]:
    return composeps.published_ports(ps_records(c, ds))


@dataclass
class ServiceRow:
    service: str
    state: str
    health: str
    ports: str


def middleware_rows(c: Any, ds: DevSettings) -> list[ServiceRow]:
    records = ps_records(c, ds)
    names = list(MIDDLEWARE_SERVICES) + sorted({r.get("Service", "") for r in records} - set(MIDDLEWARE_SERVICES))
    rows = []
    for service in names:
        mine = composeps.of_service(records, service)
        if not mine:
            rows.append(ServiceRow(service, "absent", "-", ""))
            continue
        record = mine[0]
        state = record.get("State", "?")
        health = composeps.health(record) if state == "running" else "-"
        rows.append(ServiceRow(service, state, health, " ".join(composeps.ports(record))))
    return rows


def middleware_down_problem(c: Any, ds: DevSettings) -> str | None:
    """None when db_postgres and redis are running and healthy; else what to do."""
    if not ds.env_file.exists():
        return f"the development middleware is not set up ({ds.env_file} is missing): run `invoke dev.init`"
    rows = {r.service: r for r in middleware_rows(c, ds)}
    bad = [f"{name} {rows[name].state}/{rows[name].health}" for name in CORE_SERVICES
           if rows[name].state != "running" or rows[name].health != "healthy"]
    if bad:
        return f"the development middleware is not running ({', '.join(bad)}): run `invoke middleware.start`"
    return None


def start_middleware(c: Any, ds: DevSettings, viewer: bool = False, timeout: int | None = None) -> float:
    problems = middleware_preflight(c, ds, viewer)
    if len(problems) > 1:
        raise Refused(f"{len(problems)} problem(s) before starting the middleware; nothing was started", problems)
    if problems:
        raise fail(problems[0])
    started = time.monotonic()
    result = run_compose(c, ds, "up", "-d", "--wait", "--wait-timeout", str(timeout or ds.wait_timeout),
                         "--remove-orphans", profiles=profiles(ds, viewer), warn=True)
    if not result.ok:
        raise fail("the development middleware did not become healthy: see `invoke middleware.status` "
                   "and `invoke middleware.logs`")
    return time.monotonic() - started


def stop_middleware(c: Any, ds: DevSettings, volumes: bool = False) -> None:
    """`down` the middleware. The named volumes (the data) are kept unless ``volumes``; the
    anonymous ones (an image's VOLUME path this file does not map) never are: a later `up` gives
    the new containers new ones, so `down` alone would leave them behind, empty and unused."""
    if not ds.env_file.exists():
        return
    every = ("weaviate", "qdrant", "viewer")  # every profile, so an opt-in viewer or vector store goes too
    if not volumes:
        # `rm --volumes` removes a container's anonymous volumes only; `down --volumes` would also
        # delete the named ones.
        run_compose(c, ds, "stop", "--timeout", "20", profiles=every, hide=True, warn=True)
        run_compose(c, ds, "rm", "--force", "--volumes", profiles=every, hide=True, warn=True)
    args = ["down", "--remove-orphans", "--timeout", "20"] + (["--volumes"] if volumes else [])
    run_compose(c, ds, *args, profiles=every, hide=True, warn=True)
