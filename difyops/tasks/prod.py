"""prod: deploy, inspect and take down the production clusters on this host."""

from __future__ import annotations

import json as jsonlib
import shlex
import sys
import time

from invoke import Collection

from .base import task
from rich.console import Console
from rich.table import Table

from .. import clusters as cl
from .. import backup, logfilter, releases, rollout, stack, units
from ..config import load_settings
from ..errors import Refused, fail, refuse
from ..stdin import TextInput

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # progress: one line each


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
    err.print("[bold]pre-flight[/]: Docker, Compose, .env, ports, images (nothing is changed yet)")
    problems = stack.preflight(c, settings, selected, say=err.print)
    refuse(problems, "nothing was started")


@task(
    help={
        "clusters": f"comma-separated clusters to deploy, in order (default: all of {', '.join(cl.CLUSTERS)})",
        "timeout": "seconds to wait for each cluster to become healthy",
        "target": "compose (this host, the default) or swarm (one stack per cluster on a Swarm manager)",
        "context": "with --target swarm: the Docker context of the Swarm manager (e.g. host=ssh://user@manager)",
    }
)
def deploy(c, clusters=None, timeout=None, target="compose", context=None):
    """Deploy the stack: pre-flight, then each cluster in order, waiting for health."""
    if target == "swarm":
        from .swarm import deploy_to_swarm

        return deploy_to_swarm(c, clusters=clusters, timeout=timeout, context=context)
    if target != "compose":
        raise fail(f"unknown target {target!r}: choose compose or swarm")
    if context:
        raise fail("--context goes with --target swarm; for Compose on another host set DOCKER_CONTEXT=NAME")
    settings = load_settings(c)
    selected = _select(clusters)
    started = time.monotonic()
    _preflight_or_exit(c, settings, selected)
    stack.ensure_shared(c, settings, selected)
    timings = []
    for cluster in selected:
        err.print(f"[bold]{cluster.name}[/]: starting ({cluster.summary}) and waiting for health")
        seconds = stack.up(c, settings, cluster, timeout=timeout, say=err.print)
        timings.append((cluster.name, seconds))
        err.print(f"[green]{cluster.name}[/]: healthy in {seconds:.1f}s")
    summary = ", ".join(f"{name} {secs:.1f}s" for name, secs in timings)
    releases.record(settings, "deploy", "ok", clusters=[x.name for x in selected],
                    to=rollout.release_images(settings.env), seconds=round(time.monotonic() - started, 1))
    out.print(f"deployed stack {settings.stack} in {time.monotonic() - started:.1f}s ({summary})")


@task(help={"cluster": "the cluster to start", "timeout": "seconds to wait for health"})
def up(c, cluster, timeout=None):
    """Start (or update) one cluster without touching the others."""
    settings = load_settings(c)
    selected = _select(cluster)
    _preflight_or_exit(c, settings, selected)
    stack.ensure_shared(c, settings, selected)
    for item in selected:
        seconds = stack.up(c, settings, item, timeout=timeout, say=err.print)
        out.print(f"{item.name}: healthy in {seconds:.1f}s")


@task(help={"cluster": "the cluster to restart", "timeout": "seconds to wait for health"})
def restart(c, cluster, timeout=None):
    """Recreate one cluster's containers and wait until they are healthy."""
    settings = load_settings(c)
    selected = _select(cluster)
    _preflight_or_exit(c, settings, selected)
    for item in selected:
        seconds = stack.up(c, settings, item, timeout=timeout, recreate=True, say=err.print)
        out.print(f"{item.name}: recreated and healthy in {seconds:.1f}s")


@task(
    help={
        "clusters": "`all` (gateway first, then the networks), or comma-separated clusters; data is kept",
        "volumes": "with `all`: also delete the data volumes (database, Redis, uploads)",
        "yes": "confirm --volumes without asking",
    },
)
def down(c, clusters, volumes=False, yes=False):
    """Stop clusters (`all` for the whole stack and its networks); data is kept."""
    settings = load_settings(c)
    everything = clusters == "all"
    selected = _select(None if everything else clusters)
    if volumes and not everything:
        raise fail("--volumes deletes the whole stack's data: use it with `all`")
    if volumes and not yes:
        answer = input(f"Delete every data volume of stack {settings.stack}? Type the stack name: ")
        if answer.strip() != settings.stack:
            raise fail("not confirmed; nothing was deleted")
    for item in reversed(selected):
        stack.down(c, settings, item)
        err.print(f"{item.name}: down")
    if everything:
        stack.remove_shared(c, settings, volumes=volumes)
        out.print(f"stack {settings.stack} is down" + (" and its data volumes are deleted" if volumes else ""))


@task(help={"clusters": "comma-separated clusters to show (default: all)",
            "target": "compose (this host, the default) or swarm (the stacks on a Swarm manager)",
            "context": "with --target swarm: the Docker context of the Swarm manager",
            "json": "print a JSON array, one object per service, instead of a table"})
def status(c, clusters=None, target="compose", context=None, json=False):
    """Show a table of every service: cluster, state, health, replicas, ports."""
    if target == "swarm":
        from .swarm import status as swarm_status

        return swarm_status(c, clusters=clusters, context=context, json=json)
    if target != "compose":
        raise fail(f"unknown target {target!r}: choose compose or swarm")
    if context:
        raise fail("--context goes with --target swarm; for Compose on another host set DOCKER_CONTEXT=NAME")
    settings = load_settings(c)
    rows = stack.status_rows(c, settings, _select(clusters))
    if json:
        print(jsonlib.dumps([row.as_json() for row in rows], indent=1))
        return
    out.print(f"release set: {stack.release_set_name(settings)}")
    table = Table(title=f"stack {settings.stack}")
    for column in ("cluster", "service", "state", "health", "replicas", "ports"):
        table.add_column(column)
    colours = {"healthy": "green", "unhealthy": "red", "starting": "yellow"}
    for row in rows:
        health = row.health
        colour = colours.get(health)
        table.add_row(row.cluster, row.service, row.state,
                      f"[{colour}]{health}[/]" if colour else health, f"{row.running}/{row.total}", " ".join(row.ports))
    _table_console().print(table)


@task(
    help={
        "clusters": "`all`, or comma-separated clusters whose logs to show",
        "service": "only this service",
        "follow": "keep following",
        "tail": "lines per container to start with",
        "since": "only logs newer than this (e.g. 10m, 2h, an RFC 3339 time)",
        "level": "only lines at this level or above: debug, info, warning, error, critical",
    }
)
def logs(c, clusters, service=None, follow=False, tail="200", since=None, level=None):
    """Show the logs of clusters (`all` for every one), by service, time and level."""
    settings = load_settings(c)
    selected = _select(None if clusters == "all" else clusters)
    stream = None
    if level:
        try:
            stream = logfilter.LevelFilter(sys.stdout, logfilter.threshold(level))
        except logfilter.UnknownLevel as exc:
            raise fail(str(exc))
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
        if stream is None:
            units.run_compose(c, settings, item, *args, warn=True, pty=False)
        else:
            units.run_compose(c, settings, item, *args, warn=True, pty=False, out_stream=stream)
            stream.flush()


@task(
    iterable=["image"],
    help={
        "version": "the Dify release to move to (its release set: every Dify image, new services, secrets, routes)",
        "api_image": "explicit api (and worker) image ref instead of --version",
        "web_image": "explicit web image ref instead of --version",
        "image": "with --version: KEY=REF for an image of the release .env pins (repeatable), "
                 "e.g. DIFY_PLUGIN_DAEMON_IMAGE=mirror.example/langgenius/dify-plugin-daemon:0.6.3-local",
        "timeout": "seconds each new replica may take to become healthy before rolling back",
        "no_backup": "do not call backup.create first",
        "target": "compose (this host, the default) or swarm (the stacks on a Swarm manager)",
        "context": "with --target swarm: the Docker context of the Swarm manager",
    }
)
def upgrade(c, version=None, api_image=None, web_image=None, image=None, timeout=None, no_backup=False,
            target="compose", context=None):
    """Upgrade to a Dify release (or api/web images) with no failed request; rolls back by itself on failure."""
    if target not in ("compose", "swarm"):
        raise fail(f"unknown target {target!r}: choose compose or swarm")
    if context and target != "swarm":
        raise fail("--context goes with --target swarm; for Compose on another host set DOCKER_CONTEXT=NAME")
    settings = load_settings(c)
    if not (version or api_image or web_image):
        raise fail("say what to upgrade to: --version X, or --api-image/--web-image")
    try:
        updates, problems = rollout.release_updates(settings.env, version, api_image, web_image, image)
    except ValueError as exc:
        raise fail(str(exc))
    if target == "swarm":
        from .. import rollout_swarm

        entry = rollout_swarm.upgrade(c, settings, updates, context, timeout=int(timeout) if timeout else None,
                                      say=err.print, update_problems=problems)
        out.print(f"upgraded stack {settings.stack} on Swarm in {entry['seconds']}s")
        return

    def take_backup():
        err.print("[bold]backup[/]: backup.create")
        backup.create_and_record(c, settings, say=out.print)

    entry = rollout.upgrade(c, settings, updates, "upgrade", timeout=int(timeout) if timeout else None,
                            backup=None if no_backup else take_backup, say=err.print, update_problems=problems)
    out.print(f"upgraded stack {settings.stack} in {entry['seconds']}s")


@task(help={"timeout": "seconds each replica of the previous release may take to become healthy"})
def rollback(c, timeout=None):
    """Go back to the release before the last upgrade (refused if the database moved past it)."""
    settings = load_settings(c)
    updates = rollout.rollback_updates(settings)
    entry = rollout.upgrade(c, settings, updates, "rollback", timeout=int(timeout) if timeout else None,
                            say=err.print)
    out.print(f"rolled stack {settings.stack} back in {entry['seconds']}s")


@task(help={"limit": "show only the last N entries", "json": "print JSON lines instead of a table"})
def history(c, limit=20, json=False):
    """Show the deploy history: deploys, upgrades, rollbacks, scaling."""
    settings = load_settings(c)
    entries = releases.history(settings)[-int(limit):]
    if json:
        for entry in entries:
            out.print(jsonlib.dumps(entry, sort_keys=True), soft_wrap=True)
        return
    table = Table(title=f"deploy history of stack {settings.stack} ({releases.history_path(settings)})")
    for column in ("time", "action", "result", "api image", "web image", "note"):
        table.add_column(column)
    for e in entries:
        to = e.get("to") or {}
        note = e.get("message") or (", ".join(f"{k}={v}" for k, v in (e.get("replicas") or {}).items()))
        table.add_row(e.get("time", ""), e.get("action", ""), e.get("result", ""), to.get("DIFY_API_IMAGE", ""),
                      to.get("DIFY_WEB_IMAGE", ""), note if e.get("result") != "ok" or e.get("action") == "scale" else "")
    if not entries:
        out.print(f"no deploys recorded for stack {settings.stack} yet")
        return
    _table_console().print(table)


@task(
    positional=["replicas"],
    help={
        "replicas": "KEY=N pairs, comma or space separated: api=2,web=2,worker=3 (worker groups: worker_<g>=N)",
        "timeout": "seconds to wait for the new replicas to become healthy",
    },
)
def scale(c, replicas, timeout=None):
    """Set replica counts of api, web and worker groups (api=2,web=2,worker=3)."""
    settings = load_settings(c)
    try:
        known = [u.key for u in units.units(settings)]
    except ValueError as exc:
        raise fail(str(exc))
    counts = rollout.parse_scale([replicas], known)
    rollout.scale(c, settings, counts, timeout=int(timeout) if timeout else None, say=err.print)
    out.print("scaled " + ", ".join(f"{k}={v}" for k, v in counts.items()))


@task(help={"env_file": "file to check (default: the configured env file, ./.env)"})
def check(c, env_file=None):
    """Refuse an insecure configuration: one line per problem (secrets, debug, HTTP, certificate)."""
    from .. import hardening

    settings = load_settings(c, env_file)
    problems = hardening.check(c, settings)
    if problems:  # plain lines, never wrapped: one line per problem
        raise Refused(f"prod.check found {len(problems)} problem(s) in {settings.env_file}", problems)
    out.print(f"{settings.env_file}: fit for production")


@task(
    help={
        "tool": "nft (nftables, default) or ufw",
        "ssh_port": "SSH port to keep open (0: none; keep it unless you have console access)",
        "apply": "apply the rules to this host (root); without it they are only printed",
    }
)
def firewall(c, tool="nft", ssh_port=22, apply=False):
    """Print (or with --apply, apply) host firewall rules opening only the gateway's ports and SSH."""
    from .. import hardening

    settings = load_settings(c)
    if tool not in ("nft", "ufw"):
        raise fail(f"--tool {tool!r} is not supported: choose nft or ufw")
    try:
        ports = hardening.gateway_ports(settings)
        ssh = int(ssh_port) or None
    except ValueError:
        raise fail("EXPOSE_NGINX_PORT, EXPOSE_NGINX_SSL_PORT and --ssh-port must be port numbers")
    if tool == "nft":
        rules = hardening.nft_rules(ports, ssh)
        if not apply:
            print(rules, end="")
            return
        result = c.run("nft -f -", in_stream=TextInput(rules), hide=True, warn=True)
    else:
        commands = hardening.ufw_commands(ports, ssh)
        if not apply:
            print("\n".join(shlex.join(cmd) for cmd in commands))
            return
        result = None
        for cmd in commands:
            result = c.run(shlex.join(cmd), hide=True, warn=True)
            if not result.ok:
                break
    if not result.ok:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise fail(f"{tool} refused the rules ({last}): run as root with {tool} installed")
    opened = ", ".join(str(p) for p in ([ssh] if ssh else []) + ports)
    out.print(f"firewall ({tool}): inbound traffic dropped except TCP {opened}")


ns = Collection("prod")
for t in (deploy, up, restart, down, status, logs, upgrade, rollback, history, scale):
    ns.add_task(t)
ns.add_task(check)
ns.add_task(firewall)
