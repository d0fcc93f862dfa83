"""prod: deploy, inspect and take down the production clusters on this host."""

from __future__ import annotations

import shlex
import time

from invoke import Collection, task
from rich.console import Console
from rich.table import Table

from .. import clusters as cl
from .. import stack
from ..config import load_settings
from ..errors import fail

out = Console(highlight=False)


def _table_console() -> Console:
    """A console for tables: terminal width on a terminal, wide enough not to cut ports in logs."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


def _select(names):
    try:
        return cl.select(names)
    except cl.UnknownCluster as exc:
        raise fail(str(exc))


def _preflight_or_exit(c, settings, selected):
    stack.console.print("[bold]pre-flight[/]: Docker, Compose, .env, ports, images (nothing is changed yet)")
    problems = stack.preflight(c, settings, selected)
    if problems:
        for problem in problems:
            stack.console.print(f"[red]problem:[/] {problem}")
        raise fail(f"pre-flight found {len(problems)} problem(s); nothing was started")


@task(
    help={
        "clusters": f"comma-separated clusters to deploy, in order (default: all of {', '.join(cl.CLUSTERS)})",
        "timeout": "seconds to wait for each cluster to become healthy",
    }
)
def deploy(c, clusters=None, timeout=None):
    """Deploy the stack: pre-flight, then each cluster in order, waiting for health."""
    settings = load_settings(c)
    selected = _select(clusters)
    started = time.monotonic()
    _preflight_or_exit(c, settings, selected)
    stack.ensure_shared(c, settings, selected)
    timings = []
    for cluster in selected:
        stack.console.print(f"[bold]{cluster.name}[/]: starting ({cluster.summary}) and waiting for health")
        seconds = stack.up(c, settings, cluster, timeout=timeout)
        timings.append((cluster.name, seconds))
        stack.console.print(f"[green]{cluster.name}[/]: healthy in {seconds:.1f}s")
    summary = ", ".join(f"{name} {secs:.1f}s" for name, secs in timings)
    out.print(f"deployed stack {settings.stack} in {time.monotonic() - started:.1f}s ({summary})")


@task(help={"cluster": "the cluster to start", "timeout": "seconds to wait for health"})
def up(c, cluster, timeout=None):
    """Start (or update) one cluster without touching the others."""
    settings = load_settings(c)
    selected = _select(cluster)
    _preflight_or_exit(c, settings, selected)
    stack.ensure_shared(c, settings, selected)
    for item in selected:
        seconds = stack.up(c, settings, item, timeout=timeout)
        out.print(f"{item.name}: healthy in {seconds:.1f}s")


@task(help={"cluster": "the cluster to restart", "timeout": "seconds to wait for health"})
def restart(c, cluster, timeout=None):
    """Recreate one cluster's containers and wait until they are healthy."""
    settings = load_settings(c)
    selected = _select(cluster)
    _preflight_or_exit(c, settings, selected)
    for item in selected:
        seconds = stack.up(c, settings, item, timeout=timeout, recreate=True)
        out.print(f"{item.name}: recreated and healthy in {seconds:.1f}s")


@task(
    optional=["cluster"],
    help={
        "cluster": "comma-separated clusters to stop (default: all, gateway first); their data is kept",
        "volumes": "with no cluster named: also delete the data volumes (database, Redis, uploads)",
        "yes": "confirm --volumes without asking",
    },
)
def down(c, cluster=None, volumes=False, yes=False):
    """Stop one cluster, or the whole stack and its networks."""
    settings = load_settings(c)
    selected = _select(cluster)
    if cluster and volumes:
        raise fail("--volumes deletes the whole stack's data: use it without naming a cluster")
    if volumes and not yes:
        answer = input(f"Delete every data volume of stack {settings.stack}? Type the stack name: ")
        if answer.strip() != settings.stack:
            raise fail("not confirmed; nothing was deleted")
    for item in reversed(selected):
        stack.down(c, settings, item)
        stack.console.print(f"{item.name}: down")
    if not cluster:
        stack.remove_shared(c, settings, volumes=volumes)
        out.print(f"stack {settings.stack} is down" + (" and its data volumes are deleted" if volumes else ""))


@task(help={"clusters": "comma-separated clusters to show (default: all)"})
def status(c, clusters=None):
    """Show a table of every service: cluster, state, health, replicas, ports."""
    settings = load_settings(c)
    rows = stack.status_rows(c, settings, _select(clusters))
    table = Table(title=f"stack {settings.stack}")
    for column in ("cluster", "service", "state", "health", "replicas", "ports"):
        table.add_column(column)
    colours = {"healthy": "green", "unhealthy": "red", "starting": "yellow"}
    for row in rows:
        health = row.health
        colour = colours.get(health)
        table.add_row(row.cluster, row.service, row.state,
                      f"[{colour}]{health}[/]" if colour else health, row.replicas, row.ports)
    _table_console().print(table)


@task(
    help={
        "cluster": "cluster whose logs to show (default: all)",
        "service": "only this service",
        "follow": "keep following",
        "tail": "lines per container to start with",
        "since": "only logs newer than this (e.g. 10m, 2h, an RFC 3339 time)",
    }
)
def logs(c, cluster=None, service=None, follow=False, tail="200", since=None):
    """Show the logs of a cluster or of every cluster."""
    settings = load_settings(c)
    selected = _select(cluster)
    if follow and len(selected) > 1:
        raise fail("--follow needs one cluster: name it, e.g. `invoke prod.logs api --follow`")
    for item in selected:
        if service and service not in item.services:
            continue
        args = ["logs", "--no-color", "--tail", str(tail)]
        if since:
            args += ["--since", since]
        if follow:
            args.append("--follow")
        if service:
            args.append(service)
        stack.run_compose(c, settings, item, *args, warn=True, pty=False)


ns = Collection("prod")
for t in (deploy, up, restart, down, status, logs):
    ns.add_task(t)
