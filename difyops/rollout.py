"""Zero-downtime upgrades, rollbacks and scaling of the app clusters (api, web, worker groups).

How traffic moves without a failed request: the gateway resolves `api` and `web` through Docker's
DNS at request time (resolver valid=5s, proxy_next_upstream on error/timeout/502/503). A new
release starts as a second compose project of the same cluster whose service has the same name on
the same app network, so once healthy it shares the traffic at once. After the gateway's DNS cache
has seen it, the old project is stopped with its grace period: gunicorn stops accepting (new
connections are refused and the gateway retries them on the new replicas) and finishes its
in-flight requests, SSE streams included, before it exits. If a new replica never becomes
healthy, the new projects are removed and the old release keeps serving, untouched.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.console import Console

from . import clusters as cl
from . import images, probes, releases, workers
from .config import Settings
from .errors import fail, refuse

console = Console(stderr=True, highlight=False)

# The gateway caches upstream addresses for resolver valid=5s; wait that long and a margin
# after the new replicas are healthy, so it knows them before the old ones stop listening.
DNS_SETTLE_SECONDS = 7
MIN_FREE_GB_DEFAULT = 2.0
MAX_REPLICAS = 20


@dataclass(frozen=True)
class Unit:
    """One rolling-replaced service: api, web, the main worker, or an extra worker group."""
    key: str  # state key and prod.scale key: api, web, worker, worker_<g>
    cluster: cl.Cluster
    service: str
    env: dict[str, str] = field(default_factory=dict)


def units(settings: Settings) -> list[Unit]:
    out = [Unit("api", cl.CLUSTERS["api"], "api"), Unit("web", cl.CLUSTERS["web"], "web")]
    for group in workers.groups(settings):
        out.append(Unit(group.name, cl.CLUSTERS["worker"], "worker", dict(group.env)))
    return out


def unit_env(settings: Settings, unit: Unit, image_env: dict[str, str] | None = None) -> dict[str, str]:
    env = {**cl.compose_env(settings), **unit.env, **(image_env or {})}
    if unit.key not in releases.REPLICA_VARIABLES:
        count = releases.replicas(settings).get(unit.key)
        if count is not None:
            env["WORKER_REPLICAS"] = str(count)
    return env


def run_unit(c: Any, settings: Settings, unit: Unit, project: str, *args: str,
             image_env: dict[str, str] | None = None, profiles=(), **kwargs):
    argv = cl.compose_argv(settings, unit.cluster, *args, profiles=profiles, project_name=project)
    return c.run(shlex.join(argv), env=unit_env(settings, unit, image_env), **kwargs)


def _last_line(text: str | None) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


# ------------------------------------------------------------------ what runs, what should
def release_images(env: dict[str, str]) -> dict[str, str]:
    """The api and web image refs a .env resolves to (the worker runs the api image)."""
    return {key: images.resolve_ref(images.find(key), env).ref for key in ("DIFY_API_IMAGE", "DIFY_WEB_IMAGE")}


def ps_records(c: Any, settings: Settings, unit: Unit, project: str, *flags: str) -> list[dict]:
    """`docker compose ps --format json` of a unit's service, one dict per container (either output
    form Compose has used: one JSON array, or one object per line)."""
    result = run_unit(c, settings, unit, project, "ps", *flags, "--format", "json", unit.service, hide=True, warn=True)
    text = (result.stdout or "").strip() if result.ok else ""
    return json.loads(text) if text.startswith("[") else [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def running_count(c: Any, settings: Settings, unit: Unit, project: str) -> int:
    return sum(1 for r in ps_records(c, settings, unit, project) if r.get("State") == "running")


def not_serving(c: Any, settings: Settings, unit: Unit, project: str, image: str) -> list[str]:
    """After `up --wait` said yes, ask Docker again: every replica of the new release must be
    running, healthy and on the image asked for. Returns one line per replica that is not."""
    records = ps_records(c, settings, unit, project, "-a")
    if not records:
        return [f"{project}: no {unit.service} container"]
    problems = []
    for r in records:
        name = r.get("Name", unit.service)
        if r.get("State") != "running" or r.get("Health") != "healthy":
            problems.append(f"{name}: {r.get('State')}, health {r.get('Health') or 'none'}")
        elif r.get("Image", image) != image:
            problems.append(f"{name}: runs {r.get('Image')}, not {image}")
    return problems


def disk_problems(c: Any, settings: Settings) -> list[str]:
    raw = settings.get("UPGRADE_MIN_FREE_GB", str(MIN_FREE_GB_DEFAULT))
    try:
        minimum = float(raw)
    except ValueError:
        return [f"UPGRADE_MIN_FREE_GB={raw!r} is not a number"]
    root = c.run("docker info --format '{{.DockerRootDir}}'", hide=True, warn=True)
    path = root.stdout.strip() if root.ok and root.stdout.strip() else "/"
    try:
        free = shutil.disk_usage(path).free / 2**30
    except OSError:  # a remote engine: its disk is not ours to measure
        return []
    if free < minimum:
        return [f"only {free:.1f} GB free under {path} (UPGRADE_MIN_FREE_GB={minimum:g}): free some space first"]
    return []


def preflight(c: Any, settings: Settings, target: dict[str, str], current: dict[str, str],
              action: str) -> list[str]:
    """Everything that must hold before an upgrade changes anything; returns the problems."""
    problems = probes.docker_problems(c) + probes.env_problems(settings)
    if problems:
        return problems
    try:
        plan = units(settings)
    except workers.WorkerGroupError as exc:
        return [str(exc)]
    pending = releases.load_state(settings).get("pending") or {}
    if pending:
        names = ", ".join(sorted(pending.values()))
        return [f"an earlier upgrade did not finish (release {names} is still there): "
                "run `invoke prod.down all` for a clean start, or remove those compose projects"]
    if target == current:
        problems.append(f"the stack already runs {target['DIFY_API_IMAGE']} and {target['DIFY_WEB_IMAGE']}: "
                        "nothing to " + action)
    for unit in plan:
        project = releases.active_project(settings, unit.key)
        if running_count(c, settings, unit, project) == 0:
            problems.append(f"{unit.key} is not running (project {project}): deploy first with `invoke prod.deploy`")
    problems += disk_problems(c, settings)
    missing = probes.missing_images(c, sorted(set(target.values())))
    mirror = settings.get("DIFYOPS_IMAGE_MIRROR")
    for ref in missing:
        if images.is_local_ref(ref) or not images.pull_one(c, ref, mirror).ok:
            problems.append(f"image {ref} is not present and could not be pulled: run `invoke images.pull` "
                            "or load an offline bundle")
    return problems


# ------------------------------------------------------------------ upgrade / rollback
def _abandon(c: Any, settings: Settings, started: list[tuple[Unit, str]]) -> None:
    for unit, project in reversed(started):
        run_unit(c, settings, unit, project, "down", "--remove-orphans", "--timeout", "10", hide=True, warn=True)


def upgrade(c: Any, settings: Settings, updates: dict[str, str], action: str = "upgrade",
            timeout: int | None = None, backup: Callable[[], None] | None = None) -> dict[str, Any]:
    """Move api, web and the workers to the images `updates` gives, without a failed request."""
    started_at = time.monotonic()
    target_env = {**settings.env, **updates}
    current, target = release_images(settings.env), release_images(target_env)
    console.print(f"[bold]pre-flight[/]: {action} {current['DIFY_API_IMAGE']} -> {target['DIFY_API_IMAGE']}, "
                  f"{current['DIFY_WEB_IMAGE']} -> {target['DIFY_WEB_IMAGE']} (nothing is changed yet)")
    problems = preflight(c, settings, target, current, action)
    refuse(problems, "nothing was changed")
    if backup is not None:
        backup()
    plan = units(settings)
    new = {u.key: releases.next_project(settings, u.key) for u in plan}
    old = {u.key: releases.active_project(settings, u.key) for u in plan}
    base = {"from": current, "to": target, "from_env": {k: settings.env.get(k, "") for k in releases.VERSION_KEYS},
            "to_env": {k: target_env.get(k, "") for k in releases.VERSION_KEYS}}
    wait = str(timeout or settings.wait_timeout)

    def finish(result: str, message: str) -> dict[str, Any]:
        return releases.record(settings, action, result, seconds=round(time.monotonic() - started_at, 1),
                               projects=new if result == "ok" else old, message=message, **base)

    # 1. Migrations, once, with the new image, before any traffic moves.
    api_unit = plan[0]
    console.print(f"[bold]migrate[/]: one-shot job with {target['DIFY_API_IMAGE']}")
    migrated = run_unit(c, settings, api_unit, new["api"], "run", "--rm", "--no-deps", "migrate",
                        image_env=target, profiles=("migrate",), warn=True)
    if not migrated.ok:
        if action == "rollback":
            message = (f"the database was migrated past what {target['DIFY_API_IMAGE']} knows: restore the "
                       "backup taken before the upgrade (`invoke backup.restore`), then roll back; "
                       f"{current['DIFY_API_IMAGE']} is still serving")
            finish("refused", message)
            raise fail(message)
        message = f"the migration with {target['DIFY_API_IMAGE']} failed (output above); {current['DIFY_API_IMAGE']} is still serving"
        finish("failed", message)
        raise fail(message)

    # 2. Start the new release beside the old one and wait until every replica is healthy.
    releases.save_state(settings, {**releases.load_state(settings), "pending": new})
    started: list[tuple[Unit, str]] = []
    for unit in plan:
        console.print(f"[bold]{unit.key}[/]: starting {new[unit.key]} beside {old[unit.key]}")
        started.append((unit, new[unit.key]))
        result = run_unit(c, settings, unit, new[unit.key], "up", "-d", "--no-deps", "--wait", "--wait-timeout",
                          wait, unit.service, image_env=target, warn=True)
        image = target["DIFY_WEB_IMAGE" if unit.key == "web" else "DIFY_API_IMAGE"]
        doubts = not_serving(c, settings, unit, new[unit.key], image) if result.ok else []
        for doubt in doubts:
            console.print(f"[red]{unit.key}[/]: compose reported it healthy, Docker does not: {doubt}")
        if not result.ok or doubts:
            _abandon(c, settings, started)
            state = releases.load_state(settings)
            state.pop("pending", None)
            releases.save_state(settings, state)
            message = (f"the new {unit.key} ({target['DIFY_API_IMAGE' if unit.key != 'web' else 'DIFY_WEB_IMAGE']}) "
                       f"did not become healthy within {wait}s: rolled back, the new release is removed and "
                       f"{current['DIFY_API_IMAGE']} is still serving (the migration stays applied)")
            finish("rolled-back", message)
            raise fail(message)

    # 3. The gateway learns the new addresses, then the old release drains and stops.
    console.print(f"new release healthy; letting the gateway's DNS cache catch up ({DNS_SETTLE_SECONDS}s)")
    time.sleep(DNS_SETTLE_SECONDS)
    for unit in plan:
        console.print(f"[bold]{unit.key}[/]: draining and stopping {old[unit.key]} (in-flight requests finish)")
        run_unit(c, settings, unit, old[unit.key], "down", "--remove-orphans", hide=True, warn=True)
        if unit.key == "worker":  # beat moves last: never two schedulers at once
            run_unit(c, settings, unit, new[unit.key], "up", "-d", "--no-deps", "--wait", "--wait-timeout", wait,
                     image_env=target, warn=True)

    state = releases.load_state(settings)
    state.pop("pending", None)
    state.setdefault("projects", {}).update(new)
    releases.save_state(settings, state)
    releases.update_env_file(settings.env_file, {k: v for k, v in updates.items()})
    entry = finish("ok", f"{action} done")
    console.print(f"[green]{action} done[/] in {entry['seconds']}s: api and worker {target['DIFY_API_IMAGE']}, "
                  f"web {target['DIFY_WEB_IMAGE']}")
    return entry


def rollback_updates(settings: Settings) -> dict[str, str]:
    """The .env values of the release before the last upgrade; refuses when there is none."""
    for entry in reversed(releases.history(settings)):
        if entry.get("action") in ("upgrade", "rollback") and entry.get("result") == "ok":
            return dict(entry.get("from_env") or {})
    raise fail("no earlier release to go back to: the deploy history has no successful upgrade "
               "(see `invoke prod.history`)")


# ------------------------------------------------------------------ scale
def parse_scale(specs: list[str], known: list[str]) -> dict[str, int]:
    """KEY=N pairs (space or comma separated) -> counts; refuses anything else."""
    counts: dict[str, int] = {}
    pairs = [p for spec in specs for p in spec.replace(",", " ").split() if p]
    if not pairs:
        raise fail(f"say what to scale as KEY=N, e.g. `invoke prod.scale api=2,web=2` (keys: {', '.join(known)})")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            raise fail(f"{pair!r} is not KEY=N with KEY one of {', '.join(known)}")
        if not value.isdigit() or not 0 <= int(value) <= MAX_REPLICAS:
            raise fail(f"{pair!r}: N must be a whole number from 0 to {MAX_REPLICAS}")
        if key in ("api", "web") and int(value) == 0:
            raise fail(f"{pair!r}: {key} needs at least one replica (use `invoke prod.down {key}` to stop it)")
        counts[key] = int(value)
    return counts


def scale(c: Any, settings: Settings, counts: dict[str, int], timeout: int | None = None) -> None:
    by_key = {u.key: u for u in units(settings)}
    wait = str(timeout or settings.wait_timeout)
    for key, count in counts.items():
        unit = by_key[key]
        project = releases.active_project(settings, key)
        console.print(f"[bold]{key}[/]: {count} replica(s) in {project}")
        args = ["up", "-d", "--no-deps", "--no-recreate", "--scale", f"{unit.service}={count}"]
        if count:
            args += ["--wait", "--wait-timeout", wait]
        variable = releases.REPLICA_VARIABLES.get(key, "WORKER_REPLICAS")
        result = run_unit(c, settings, unit, project, *args, unit.service, image_env={variable: str(count)},
                          warn=True)
        if not result.ok:
            releases.record(settings, "scale", "failed", replicas={key: count}, projects={key: project})
            raise fail(f"{key} did not reach {count} healthy replica(s): see `invoke prod.status`")
        releases.set_replicas(settings, {key: count})
    releases.record(settings, "scale", "ok", replicas=counts)
