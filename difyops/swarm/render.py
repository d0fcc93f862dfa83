"""Rendering a cluster for Swarm and making its stack file (the images' start commands read on the manager)."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from .. import clusters as cl
from .. import release_sets, units
from ..config import Settings
from ..errors import DifyopsError
from ..stdin import TextInput
from .nodes import _run, docker, network_create_argv
from .services import stack_name
from .stackfile import StackFile, parse_start_command, shimmed_images, to_stack


def render_argv(settings: Settings, cluster: cl.Cluster, profiles: tuple[str, ...] = ()) -> list[str]:
    """The cluster rendered as on one host (clusters.compose_argv), with its Swarm overlay."""
    return cl.compose_argv(settings, cluster, "config", "--format", "json", profiles=profiles, target="swarm")


def render_env(settings: Settings, cluster: cl.Cluster) -> dict[str, str]:
    """compose's environment for rendering a cluster: as on one host (stack.cluster_env), and the
    main worker's queues (workers.groups: every queue of the release)."""
    from .. import workers  # noqa: PLC0415

    env = units.cluster_env(settings, cluster)
    if cluster.name == "worker":
        try:
            env.update(workers.groups(settings)[0].env)
        except workers.WorkerGroupError as exc:
            raise DifyopsError(str(exc)) from None
    return env


def render(c: Any, settings: Settings, cluster: cl.Cluster, profiles: tuple[str, ...] = (),
           extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    env = {**render_env(settings, cluster), **(extra_env or {})}
    result = _run(c, render_argv(settings, cluster, profiles), env=env, hide=True, warn=True)
    if not result.ok:
        lines = [ln for ln in (result.stderr or "").splitlines() if ln.strip()]
        raise DifyopsError(f"compose/{cluster.name}.yml does not render: {lines[-1] if lines else 'no output'}")
    return json.loads(result.stdout)


def start_commands(c: Any, context: str | None, refs: Iterable[str],
                   env: dict[str, str]) -> dict[str, tuple[list[str], list[str]]]:
    """(ENTRYPOINT, CMD) of each image, as the manager's engine has it; for an image it does not
    have, what the release set recorded from the image's Dockerfile (difyops/release_sets), if the
    ref is the release's own; otherwise a one-line refusal."""
    out = {}
    for ref in refs:
        found = _run(c, docker(context, "image", "inspect", "--format",
                               "{{json .Config.Entrypoint}} {{json .Config.Cmd}}", ref), hide=True, warn=True)
        if found.ok:
            try:
                out[ref] = parse_start_command(found.stdout)
                continue
            except ValueError:
                pass
        try:
            known = release_sets.for_env(env).image_by_ref(ref)
        except release_sets.ReleaseSetError:
            known = None
        if known is None:
            where = f"context {context}" if context else "the local engine"
            raise DifyopsError(f"image {ref} is not on the Swarm manager ({where}), so its ENTRYPOINT and CMD "
                               "(which the secrets shim starts) cannot be read: pull or load it there first")
        out[ref] = (list(known.entrypoint), list(known.command))
    return out


def make_stack_file(c: Any, settings: Settings, cluster: cl.Cluster, context: str | None, name: str | None = None,
               profiles: tuple[str, ...] = (), services: Iterable[str] | None = None,
               extra_env: dict[str, str] | None = None,
               edit: Callable[[dict[str, Any]], None] | None = None) -> StackFile:
    """Render a cluster, read the start commands of the images the shim wraps, and make its stack
    file (`edit` may change the rendered services first)."""
    rendered = render(c, settings, cluster, profiles, extra_env)
    if edit is not None:
        edit(rendered)
    wanted = list(services) if services is not None else None
    start = start_commands(c, context, shimmed_images(rendered, settings.env, wanted), settings.env)
    return to_stack(rendered, name or stack_name(settings, cluster), settings.env, services=wanted, start=start)


def ensure_networks(c: Any, settings: Settings, selected: Iterable[cl.Cluster], context: str | None) -> None:
    for network in sorted({n for x in selected for n in cl.cluster_networks(settings, x)}):
        name = cl.network_name(settings, network)
        found = _run(c, docker(context, "network", "inspect", "--format", "{{.Driver}} {{.Scope}}", name),
                     hide=True, warn=True)
        if found.ok:
            if found.stdout.split()[:1] != ["overlay"]:
                raise DifyopsError(f"network {name} exists but is not an overlay network: remove it "
                                   "(`invoke prod.down all` for a Compose deployment on this engine)")
            continue
        _run(c, network_create_argv(settings, network, context), hide=True)


def ensure_objects(c: Any, settings: Settings, stack_file: StackFile, context: str | None) -> None:
    """Create the stack's secrets (value on stdin, never on a command line) if missing."""
    for name, value in sorted(stack_file.secrets.items()):
        if _run(c, docker(context, "secret", "inspect", name), hide=True, warn=True).ok:
            continue
        _run(c, docker(context, "secret", "create", "--label", f"{cl.STACK_LABEL}={settings.stack}", name, "-"),
             in_stream=TextInput(value), hide=True)
