"""swarm: Docker Swarm nodes and stacks (`invoke prod.deploy --target swarm` deploys the clusters)."""

from __future__ import annotations

import json as jsonlib
import time

from invoke import Collection

from .base import task
from rich.console import Console
from rich.table import Table

from .. import clusters as cl
from .. import stack, swarm
from ..config import load_settings
from ..errors import DifyopsError, fail

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

CONTEXT_HELP = "Docker context of a Swarm manager (docker context ls; e.g. one made with host=ssh://user@manager)"


def _select(names):
    try:
        selected = cl.select(names)
    except cl.UnknownCluster as exc:
        raise fail(str(exc))
    missing = [x.name for x in selected if not cl.swarm_overlay(x).exists()]
    if missing:
        raise fail(f"cluster(s) {', '.join(missing)} have no Swarm overlay yet (compose/swarm/<cluster>.yml): "
                   f"deploy them with Compose, or choose from "
                   f"{', '.join(x for x in cl.CLUSTERS if cl.swarm_overlay(cl.CLUSTERS[x]).exists())}")
    return selected


def deploy_to_swarm(c, clusters=None, timeout=None, context=None):
    """`prod.deploy --target swarm`: pre-flight, then one stack per cluster, each waited on."""
    settings = load_settings(c)
    selected = _select(clusters)
    started = time.monotonic()
    timings = swarm.deploy(c, settings, selected, context, int(timeout or settings.wait_timeout), say=err.print)
    summary = ", ".join(f"{name} {secs:.1f}s" for name, secs in timings)
    where = f"context {context}" if context else "the local engine"
    out.print(f"deployed stack {settings.stack} to Swarm ({where}) in {time.monotonic() - started:.1f}s ({summary})")


@task(
    positional=["node", "roles"],
    help={
        "node": "the Swarm node (name or id, as `docker node ls` shows)",
        "roles": f"comma-separated roles it takes: {', '.join(swarm.ROLES)} (data: PostgreSQL and Redis; "
                 "app: api, worker, web, sandbox, SSRF proxy; gateway: nginx; the plugin daemon goes "
                 "with data unless PLUGIN_DAEMON_SWARM_ROLE says app)",
        "remove": "take these roles away instead of adding them",
        "context": CONTEXT_HELP,
    },
)
def label(c, node, roles, remove=False, context=None):
    """Give a Swarm node roles (node labels difyops.role.<role>=true) that place the clusters."""
    try:
        chosen = swarm.parse_roles(roles)
    except DifyopsError as exc:
        raise fail(str(exc))
    argv = swarm.label_argv(context, node, [] if remove else chosen, chosen if remove else [])
    result = c.run(" ".join(argv), hide=True, warn=True)
    if not result.ok:
        lines = [ln for ln in (result.stderr or "").splitlines() if ln.strip()]
        raise fail(f"could not label node {node}: {lines[-1] if lines else 'no output'}")
    out.print(f"node {node}: {'removed' if remove else 'added'} role(s) {', '.join(chosen)}")


@task(help={"clusters": "comma-separated clusters to show (default: all with a Swarm overlay)",
            "context": CONTEXT_HELP,
            "json": "print a JSON array, one object per service, instead of a table"})
def status(c, clusters=None, context=None, json=False):
    """Show each stack's services: replicas running/desired and the state of the last update."""
    settings = load_settings(c)
    selected = _select(clusters) if clusters else [x for x in cl.CLUSTERS.values() if cl.swarm_overlay(x).exists()]
    found = [(cluster, swarm.service_states(c, swarm.stack_name(settings, cluster), context)) for cluster in selected]
    if json:  # "service": the name in the cluster's stack (api, not <stack>-api_api)
        print(jsonlib.dumps([{"cluster": cluster.name,
                              "service": s.name.removeprefix(swarm.stack_name(settings, cluster) + "_"),
                              "replicas": {"running": s.running, "desired": s.desired}, "update": s.update,
                              "release_set": stack.release_set_name(settings)}
                             for cluster, states in found for s in states], indent=1))
        return
    out.print(f"release set: {stack.release_set_name(settings)}")
    table = Table(title=f"stack {settings.stack} on Swarm")
    for column in ("cluster", "service", "replicas", "update"):
        table.add_column(column)
    for cluster, states in found:
        if not states:
            table.add_row(cluster.name, "-", "absent", "")
        for s in states:
            colour = "green" if s.running == s.desired and s.desired else "red"
            table.add_row(cluster.name, s.name, f"[{colour}]{s.running}/{s.desired}[/]", s.update)
    out.print(table)


@task(
    help={
        "clusters": "`all` (gateway first, then the networks and secrets), or comma-separated clusters; "
                    "volumes are kept",
        "context": CONTEXT_HELP,
    },
)
def down(c, clusters, context=None):
    """Remove the stacks of a Swarm deployment (`all`: also its networks and secrets)."""
    settings = load_settings(c)
    everything = clusters == "all"
    selected = ([x for x in cl.CLUSTERS.values() if cl.swarm_overlay(x).exists()] if everything
                else _select(clusters))
    swarm.remove(c, settings, selected, context, networks=everything)
    out.print(f"stack {settings.stack}: removed from Swarm ({', '.join(x.name for x in selected)}); volumes kept")

ns = Collection("swarm")
for t in (label, status, down):
    ns.add_task(t)
