"""middleware: the development middleware (compose/dev/middleware.yml) on 127.0.0.1."""

from __future__ import annotations

from invoke import Collection

from .base import task
from rich.console import Console
from rich.table import Table

from .. import dev, envfile
from ..devconfig import load_dev
from ..errors import fail

out = Console(highlight=False)


def _settings(c, overrides=None):
    ds = load_dev(c)
    dev.ensure_middleware_env(ds, overrides)
    return ds


@task(default=True, iterable=["set"],
      help={"viewer": "also start the database viewer (Adminer on 127.0.0.1, login prefilled)",
            "timeout": "seconds to wait for every service to become healthy",
            "set": "KEY=VALUE for var/dev/middleware.env (ports, images, VECTOR_STORE); repeatable"})
def start(c, viewer=False, timeout=None, set=None):
    """Start the development middleware and wait until it is healthy."""
    ds = _settings(c, envfile.assignments(set))
    seconds = dev.start_middleware(c, ds, viewer, timeout=int(timeout) if timeout else None)
    out.print(f"middleware {ds.project} healthy in {seconds:.1f}s")
    if viewer:
        out.print(f"database viewer: http://127.0.0.1:{ds.port('EXPOSE_VIEWER_PORT', 8081)}/ "
                  f"(password: DB_PASSWORD in {ds.env_file})")


@task(help={"volumes": "also delete the middleware's data (same as `invoke dev.reset`)",
            "yes": "confirm --volumes without asking"})
def stop(c, volumes=False, yes=False):
    """Stop the development middleware (its data is kept)."""
    ds = load_dev(c)
    if volumes and not yes:
        answer = input(f"Delete every volume of {ds.project}? Type {ds.stack} to confirm: ")
        if answer.strip() != ds.stack:
            raise fail("not confirmed; nothing was deleted")
    dev.stop_middleware(c, ds, volumes=volumes)
    out.print(f"middleware {ds.project}: down" + (" and its data deleted" if volumes else ""))


@task(help={"viewer": "include the database viewer", "timeout": "seconds to wait for health"})
def restart(c, viewer=False, timeout=None):
    """Recreate the middleware's containers (data kept) and wait until healthy."""
    ds = load_dev(c)
    dev.stop_middleware(c, ds)
    seconds = dev.start_middleware(c, ds, viewer, timeout=int(timeout) if timeout else None)
    out.print(f"middleware {ds.project} restarted, healthy in {seconds:.1f}s")


@task
def status(c):
    """Show the middleware's containers: state, health, ports."""
    ds = load_dev(c)
    if not ds.env_file.exists():
        raise fail(f"the development middleware is not set up ({ds.env_file} is missing): run `invoke dev.init`")
    table = Table(title=f"middleware {ds.project}")
    for column in ("service", "state", "health", "ports"):
        table.add_column(column)
    for row in dev.middleware_rows(c, ds):
        table.add_row(row.service, row.state, row.health, row.ports)
    console = Console(highlight=False)
    (console if console.is_terminal else Console(highlight=False, width=160)).print(table)


@task(help={"service": "only this service (db_postgres, redis, sandbox, ssrf_proxy, plugin_daemon, viewer)",
            "follow": "keep following", "tail": "lines per container to start with",
            "since": "only logs newer than this (e.g. 10m)"})
def logs(c, service=None, follow=False, tail="100", since=None):
    """Show the middleware's logs."""
    ds = load_dev(c)
    args = ["logs", "--no-color", "--tail", str(tail)] + (["--since", since] if since else []) \
        + (["--follow"] if follow else []) + ([service] if service else [])
    dev.run_compose(c, ds, *args, warn=True, pty=False)


ns = Collection("middleware")
for t in (start, stop, restart, status, logs):
    ns.add_task(t)
