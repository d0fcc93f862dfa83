"""Deploying clusters to Swarm: pre-flight, then one stack per cluster, each waited on."""

from __future__ import annotations

import time
from typing import Any

from .. import clusters as cl
from .. import probes
from ..config import Settings
from ..errors import DifyopsError, refuse
from ..report import Say, quiet
from .jobs import ensure_owners, migrate
from .nodes import ROLES, required_roles, swarm_problems, unsupported_problems
from .render import ensure_networks, ensure_objects, make_stack_file
from .services import crowded, deploy_stack, stack_name, wait_converged
from .stackfile import StackFile


def deploy_cluster(c: Any, settings: Settings, cluster: cl.Cluster, context: str | None, timeout: int,
                   say: Say = quiet, stack_file: StackFile | None = None) -> StackFile:
    """Deploy one cluster's stack and wait for it; `stack_file` is the one pre-flight rendered (else
    it is rendered here)."""
    from .. import stack  # noqa: PLC0415

    if cluster.name in stack.OWNED_BY_DIFY_USER:
        ensure_owners(c, settings, context, timeout, say=say)
    if cluster.name == "api":
        migrate(c, settings, context, timeout, say=say)
    name = stack_name(settings, cluster)
    if stack_file is None:
        stack_file = make_stack_file(c, settings, cluster, context)
    ensure_objects(c, settings, stack_file, context)
    deploy_stack(c, name, stack_file, context)
    wait_converged(c, name, context, timeout, say=say)
    return stack_file


def deploy(c: Any, settings: Settings, selected: list[cl.Cluster], context: str | None, wait: int,
           say: Say = quiet) -> list[tuple[str, float]]:
    """`prod.deploy --target swarm`: pre-flight (every cluster rendered first: a bad file changes
    nothing), then one stack per cluster, each waited on. Returns (cluster, seconds) in order."""
    where = f"context {context}" if context else "the local engine"
    say(f"[bold]pre-flight[/]: Swarm manager ({where}), .env, node labels (nothing is changed yet)")
    problems = probes.env_problems(settings) + unsupported_problems(settings.env)
    stack_files = {}
    if not problems:
        for cluster in selected:
            try:
                stack_files[cluster.name] = make_stack_file(c, settings, cluster, context)
            except DifyopsError as exc:
                problems.append(str(exc))
    roles = required_roles(stack_files.values())
    unknown = sorted(roles - set(ROLES))
    problems += [f"a placement constraint asks for node role {role!r}, which is not one of "
                 f"{', '.join(ROLES)} (check PLUGIN_DAEMON_SWARM_ROLE in .env)" for role in unknown]
    # Reachability always; node labels for the roles the stacks' constraints name.
    problems += swarm_problems(c, context, roles - set(unknown))
    refuse(problems, "nothing was deployed")
    for name, stack_file in stack_files.items():
        if stack_file.dropped:
            say(f"[yellow]{name}[/]: Swarm ignores {'; '.join(stack_file.dropped)}")
    timings = []
    ensure_networks(c, settings, selected, context)
    for cluster in selected:
        say(f"[bold]{cluster.name}[/]: stack {stack_name(settings, cluster)} ({cluster.summary}), "
            "waiting until every replica is healthy")
        mark = time.monotonic()
        deploy_cluster(c, settings, cluster, context, wait, stack_file=stack_files[cluster.name],
                       say=lambda line: say(f"  [dim]{line}[/]"))
        timings.append((cluster.name, time.monotonic() - mark))
        say(f"[green]{cluster.name}[/]: converged in {timings[-1][1]:.1f}s")
        for warning in crowded(c, stack_name(settings, cluster), context):
            say(f"[yellow]warning[/]: {warning}")
    return timings
