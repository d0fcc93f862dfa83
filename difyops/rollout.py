"""Zero-downtime upgrades, rollbacks and scaling of the app clusters (api, web, worker groups).

How traffic moves without a failed request: the gateway resolves `api` and `web` through Docker's
DNS at request time (resolver valid=5s, proxy_next_upstream on error/timeout/502/503). A new
release starts as a second compose project of the same cluster whose service has the same name on
the same app network, so once healthy it shares the traffic at once. After the gateway's DNS cache
has seen it, the old project is stopped with its grace period: gunicorn stops accepting (new
connections are refused and the gateway retries them on the new replicas) and finishes its
in-flight requests, SSE streams included, before it exits. Workers drain the same way: every old
worker gets SIGTERM at once, so each stops taking tasks (Celery's warm shutdown; the new workers
take them) and finishes the workflow runs it has, for as long as the release lets a run last
(workers.drain_seconds), then stops. If a new replica never becomes healthy, the new projects are
removed and the old release keeps serving, untouched. Before anything starts, the storage volume
is given to the new image's user (stack.ensure_owners), and after the migration job the schema
must be at the new image's head (stack.schema_problem), or nothing moves.
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import replace
from typing import Any, Callable

from . import clusters as cl
from . import composeps, config, dotenv, envfile, images, probes, release_sets, releases, stack, workers
from . import rollout_release as rr
from .config import Settings
from .errors import fail, refuse
from .report import Say, quiet
from .units import Unit, run_compose, run_unit, running_count, unit_records, units

# The gateway caches upstream addresses for resolver valid=5s; wait that long and a margin
# after the new replicas are healthy, so it knows them before the old ones stop listening.
DNS_SETTLE_SECONDS = 7
MIN_FREE_GB_DEFAULT = 2.0
MAX_REPLICAS = 20


def _last_line(text: str | None) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


# ------------------------------------------------------------------ what runs, what should
def release_images(env: dict[str, str]) -> dict[str, str]:
    """The api and web image refs a .env resolves to (the worker runs the api image)."""
    return {key: images.resolve_ref(images.find(key), env).ref for key in ("DIFY_API_IMAGE", "DIFY_WEB_IMAGE")}


def not_serving(c: Any, settings: Settings, unit: Unit, project: str, image: str) -> list[str]:
    """After `up --wait` said yes, ask Docker again: every replica of the new release must be
    running, healthy and on the image asked for. Returns one line per replica that is not."""
    records = unit_records(c, settings, unit, project, "-a")
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
              action: str, target_env: dict[str, str] | None = None, more: list[str] | None = None,
              images_needed: list[str] | None = None, running: tuple[str, ...] = ()) -> list[str]:
    """Everything that must hold before an upgrade changes anything; returns the problems.
    `more`: problems found in the arguments (pins, secrets); `images_needed`: every image the target
    runs (default: its api and web); `running`: support services that must run (those it moves)."""
    problems = probes.docker_problems(c) + probes.env_problems(settings)
    if problems:
        return problems
    problems += stack.release_problems(settings.env, "DIFY_VERSION in .env")
    problems += stack.release_problems(target_env or settings.env) + workers.drain_problems(settings.env)
    problems += list(more or [])
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
    support = cl.CLUSTERS["support"]
    for service in running:
        listed = run_compose(c, settings, support, "ps", "--format", "json", service, hide=True, warn=True)
        if not composeps.running(composeps.records(listed.stdout if listed.ok else "")):
            problems.append(f"{service} is not running (cluster support): deploy first with `invoke prod.deploy`")
    problems += disk_problems(c, settings)
    missing = probes.missing_images(c, sorted(set(images_needed or target.values())))
    mirror = settings.get("DIFYOPS_IMAGE_MIRROR")
    for ref in missing:
        if images.is_local_ref(ref) or not images.pull_one(c, ref, mirror).ok:
            problems.append(f"image {ref} is not present and could not be pulled: run `invoke images.pull` "
                            "or load an offline bundle")
    return problems


def release_updates(env: dict[str, str], version: str | None, api_image: str | None, web_image: str | None,
                    image_pairs: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """The .env values `prod.upgrade` moves to, and the problems pre-flight lists with the others.
    --version of a release with a release set moves the whole set (rollout_release.target_updates);
    --api-image/--web-image win for those two; --image KEY=REF for any image of the set. ValueError
    for arguments that are not even well formed (refused before any command)."""
    pairs = envfile.assignments(image_pairs, "--image") if image_pairs else {}
    plain = releases.version_updates(env, version, api_image, web_image)  # checks the arguments' form
    target = None
    if version:
        try:
            target = release_sets.for_version(version)
        except release_sets.ReleaseSetError:
            pass  # pre-flight says which releases are supported
    if pairs and target is None:
        raise ValueError("--image goes with --version of a supported release (e.g. --version "
                         f"{release_sets.default().release})")
    try:
        current = release_sets.for_env(env)
    except release_sets.ReleaseSetError:
        current = None  # pre-flight refuses the running release
    if target is None or current is None:
        return plain, []
    updates, problems = rr.target_updates(env, current, target, pairs)
    for key, ref in (("DIFY_API_IMAGE", api_image), ("DIFY_WEB_IMAGE", web_image)):
        if ref:
            updates[key] = ref
    return updates, problems


# ------------------------------------------------------------------ upgrade / rollback
def _abandon(c: Any, settings: Settings, started: list[tuple[Unit, str]]) -> None:
    for unit, project in reversed(started):
        run_unit(c, settings, unit, project, "down", "--remove-orphans", "--timeout", "10", hide=True, warn=True)


def _up_services(c: Any, settings: Settings, cluster: str, names: tuple[str, ...], values: dict[str, str],
                 wait: str) -> Any:
    return run_compose(c, settings, cl.CLUSTERS[cluster], "up", "-d", "--no-deps", "--wait", "--wait-timeout", wait,
                       *names, extra_env=values, warn=True)


def _remove_services(c: Any, settings: Settings, services: dict[str, tuple[str, ...]], values: dict[str, str]) -> None:
    for cluster, names in services.items():
        if names:
            run_compose(c, settings, cl.CLUSTERS[cluster], "rm", "-s", "-f", *names, extra_env=values,
                        hide=True, warn=True)


def _ensure_networks(c: Any, settings: Settings, clusters: list[str]) -> list[str]:
    """The networks of the settings' release that these clusters' services join (release set
    `networks`, clusters.release_networks), created when missing; returns those it created."""
    made = []
    for network in cl.release_networks(settings, [cl.CLUSTERS[name] for name in clusters]):
        name = cl.network_name(settings, network)
        if not c.run(shlex.join(["docker", "network", "inspect", name]), hide=True, warn=True).ok:
            c.run(shlex.join(cl.network_create_argv(settings, network)), hide=True)
            made.append(name)
    return made


def upgrade(c: Any, settings: Settings, updates: dict[str, str], action: str = "upgrade",
            timeout: int | None = None, backup: Callable[[], None] | None = None, say: Say = quiet,
            update_problems: list[str] | None = None) -> dict[str, Any]:
    """Move the deployment to the release `updates` gives (rollout_release's phases), without a
    failed request: api, web and the workers blue/green; the plugin daemon and sandbox with them;
    the target's new services, secrets and gateway routes before traffic moves."""
    started_at = time.monotonic()
    target_env = {**settings.env, **updates}
    current, target = release_images(settings.env), release_images(target_env)
    phases = rr.Phases(action, list(rr.PHASES), say)
    phases.start("pre-flight", f"{action} {current['DIFY_API_IMAGE']} -> {target['DIFY_API_IMAGE']}, "
                 f"{current['DIFY_WEB_IMAGE']} -> {target['DIFY_WEB_IMAGE']} (nothing is changed yet)")
    problems = list(update_problems or [])
    plan_ok = not (stack.release_problems(settings.env) or stack.release_problems(target_env))
    generated: dict[str, str] = {}
    needed, moving = sorted(set(target.values())), tuple[str, ...]()
    current_rs: release_sets.ReleaseSet | None = None
    target_rs: release_sets.ReleaseSet | None = None
    if plan_ok:
        current_rs, target_rs = release_sets.for_env(settings.env), release_sets.for_env(target_env)
        # A secret new in the target must be well formed; one the running release has is its own business.
        generated, secret_problems = rr.secrets_to_generate(
            target_env, target_rs, check=[k for k in target_rs.secrets if k not in current_rs.secrets])
        problems += secret_problems
        needed = sorted(set(rr.target_images(target_env, target_rs).values()))
        moving = rr.lockstep_moves(rr.target_images(settings.env, current_rs), rr.target_images(target_env, target_rs),
                                   target_rs)
        current_cmp = {**rr.target_images(settings.env, current_rs), **current, "release": current_rs.release}
        target_cmp = {**rr.target_images(target_env, target_rs), **target, "release": target_rs.release}
    else:  # pre-flight refuses
        current_cmp, target_cmp = current, target
    problems = preflight(c, settings, target_cmp, current_cmp, action, target_env, more=problems,
                         images_needed=needed, running=moving)
    refuse(problems, "nothing was changed")
    assert current_rs is not None and target_rs is not None  # a set that does not load is a pre-flight problem
    plan = rr.make_plan(settings.env, target_env, current_rs, target_rs, generated, backup is not None)
    work = plan.work()
    # What a rollback puts back: the release, every image pin of either set, the gateway upstreams.
    recorded_keys = sorted(set(releases.VERSION_KEYS) | set(rr.GATEWAY_ROUTE_VARIABLES)
                           | {i.variable for rs in (current_rs, target_rs) for i in rs.images.values()})
    base = {"from": current, "to": target, "from_env": {k: settings.env.get(k, "") for k in recorded_keys},
            "to_env": {k: target_env.get(k, "") for k in recorded_keys},
            "release": {"from": current_rs.release, "to": target_rs.release}}
    wait = str(timeout or settings.wait_timeout)
    units_plan = units(settings)
    new = {u.key: releases.next_project(settings, u.key) for u in units_plan}
    old = {u.key: releases.active_project(settings, u.key) for u in units_plan}

    def finish(result: str, message: str) -> dict[str, Any]:
        phases.end()
        return releases.record(settings, action, result, seconds=round(time.monotonic() - started_at, 1),
                               projects=new if result == "ok" else old, message=message,
                               phases=dict(phases.timings), **base)

    # 2. Secrets the target needs, generated into .env (a copy of .env kept first), read again.
    phases.start("secrets", f"generating {work['secrets']} into {settings.env_file}" if generated
                 else "none new (.env is backed up before anything changes it)")
    text = settings.env_file.read_text()
    copy = dotenv.backup(settings.env_file)
    say(f"{phases.label('secrets')}: .env backed up to {copy} (restore it with `cp {copy} {settings.env_file}`)")
    if generated:
        dotenv.write_private(settings.env_file, envfile.with_values(
            text, generated, comment=f"# Secrets of Dify {target_rs.release} (generated by prod.{action})"))
        settings = config.settings_for(settings.env_file, settings.stack, settings.wait_timeout)
        target_env = {**settings.env, **updates}
    # The deployment rendered as the target release: its overlays, its images, its upstreams.
    tsettings = replace(settings, env=dict(target_env))
    values = rr.compose_values(target_env, target_rs)
    old_values = rr.compose_values(settings.env, current_rs)

    # 3. The backup every upgrade takes first.
    phases.start("backup", work["backup"])
    if backup is not None:
        backup()

    # 4. The storage volume to the new image's user, then the migrations, once, with the new image,
    #    before any traffic moves; the schema must then be at the new image's head.
    phases.start("migrate", f"one-shot job with {target['DIFY_API_IMAGE']}")
    stack.ensure_owners(c, tsettings, env=target_env, image_env=values, say=say)
    api_unit = units_plan[0]
    migrated = run_unit(c, tsettings, api_unit, new["api"], *stack.MIGRATE_ARGS,
                        image_env=values, profiles=("migrate",), warn=True)
    schema = None
    if migrated.ok:
        check = run_unit(c, tsettings, api_unit, new["api"], *stack.schema_check_args(target_env),
                         image_env=values, profiles=("migrate",), hide=True, warn=True)
        schema = stack.schema_problem(target_env, migrated.stdout or "", check, target["DIFY_API_IMAGE"])
    newer = "Can't locate revision" in (migrated.stdout or "") + (migrated.stderr or "") + (schema or "")
    if action == "rollback" and (not migrated.ok or newer):
        message = (f"the database was migrated past what {target['DIFY_API_IMAGE']} knows: restore the "
                   "backup taken before the upgrade (`invoke backup.restore`), then roll back; "
                   f"{current['DIFY_API_IMAGE']} is still serving")
        finish("refused", message)
        raise fail(message)
    if not migrated.ok or schema:
        message = (f"{schema}; {current['DIFY_API_IMAGE']} is still serving" if migrated.ok else
                   f"the migration with {target['DIFY_API_IMAGE']} failed (output above); "
                   f"{current['DIFY_API_IMAGE']} is still serving")
        finish("failed", message)
        raise fail(message)

    # 5. The target's services outside the app clusters, healthy before any traffic moves.
    phases.start("new services", work["new services"])
    if plan.new_services:
        for name in _ensure_networks(c, tsettings, list(plan.new_services)):
            say(f"{phases.label('new services')}: network {name} created")
    for cluster, names in plan.new_services.items():
        result = _up_services(c, tsettings, cluster, names, values, wait)
        if not result.ok:
            _remove_services(c, tsettings, plan.new_services, values)
            message = (f"the new services of Dify {target_rs.release} ({', '.join(names)}) did not become healthy "
                       f"within {wait}s: they are removed and {current['DIFY_API_IMAGE']} is still serving "
                       "(the migration stays applied; see `invoke prod.logs support`)")
            finish("failed", message)
            raise fail(message)

    def put_back(moved: tuple[str, ...]) -> None:
        """The running release's plugin daemon and sandbox back, and the new services gone."""
        for name in moved:
            run_compose(c, settings, cl.CLUSTERS["support"], "stop", name, hide=True, warn=True)
        if moved:
            _up_services(c, settings, "support", moved, old_values, wait)
        _remove_services(c, tsettings, plan.new_services, values)

    # 6. The plugin daemon and the sandbox, in order, with the api: the old daemon stops, the new
    #    one starts on the same storage volume (its image migrates its own database first).
    phases.start("plugin daemon and sandbox", work["plugin daemon and sandbox"])
    moved: tuple[str, ...] = ()
    for name in plan.lockstep:
        variable = target_rs.image(target_rs.services[name].image or name).variable
        say(f"[bold]{name}[/]: stopping {old_values.get(variable)}, starting {values[variable]} (same storage)")
        run_compose(c, settings, cl.CLUSTERS["support"], "stop", name, hide=True, warn=True)
        moved += (name,)
        result = _up_services(c, tsettings, "support", (name,), values, wait)
        if not result.ok:
            put_back(moved)
            message = (f"the new {name} did not become healthy within {wait}s: the running release's is back "
                       f"and {current['DIFY_API_IMAGE']} is still serving (see `invoke prod.logs support`)")
            finish("rolled-back", message)
            raise fail(message)

    # 7. Start the new release beside the old one and wait until every replica is healthy.
    phases.start("new release", work["new release"])
    releases.save_state(settings, {**releases.load_state(settings), "pending": new})
    started: list[tuple[Unit, str]] = []

    def abandon(message: str) -> None:
        _abandon(c, tsettings, started)
        put_back(moved)
        state = releases.load_state(settings)
        state.pop("pending", None)
        releases.save_state(settings, state)
        finish("rolled-back", message)
        raise fail(message)

    for unit in units_plan:
        services = (plan.app_services.get(unit.key) or (unit.service,)) if unit.key in ("api", "web") else (unit.service,)
        say(f"[bold]{unit.key}[/]: starting {new[unit.key]} beside {old[unit.key]}"
            + (f" ({', '.join(services)})" if len(services) > 1 else ""))
        started.append((unit, new[unit.key]))
        result = run_unit(c, tsettings, unit, new[unit.key], "up", "-d", "--no-deps", "--wait", "--wait-timeout",
                          wait, *services, image_env=values, warn=True)
        image = target["DIFY_WEB_IMAGE" if unit.key == "web" else "DIFY_API_IMAGE"]
        doubts = []
        if result.ok:
            for service in services:
                doubts += not_serving(c, tsettings, replace_unit(unit, service), new[unit.key], image)
        for doubt in doubts:
            say(f"[red]{unit.key}[/]: compose reported it healthy, Docker does not: {doubt}")
        if not result.ok or doubts:
            abandon(f"the new {unit.key} ({image}) did not become healthy within {wait}s: rolled back, the new "
                    f"release is removed and {current['DIFY_API_IMAGE']} is still serving (the migration stays applied)")

    # 8. The gateway's routes whose upstream the release changes, switched by a graceful reload.
    phases.start("gateway", work["gateway"])
    if plan.gateway:
        gateway = cl.CLUSTERS["gateway"]
        switched = run_compose(c, settings, gateway, *rr.gateway_switch_args(plan.gateway_switches),
                               hide=True, warn=True)
        if switched.exited == rr.NO_GATEWAY_HERE:
            # A gateway created before routes were switched this way (no watcher in it): it is
            # created again with the new routes; its port is closed while it restarts.
            say(f"{phases.label('gateway')}: the running gateway does not watch for switched routes: "
                "recreating it with them (its port closes for a moment)")
            switched = run_compose(c, tsettings, gateway, "up", "-d", "--no-deps", "--wait", "--wait-timeout", wait,
                                   "nginx", hide=True, warn=True)
        if not switched.ok:
            abandon(f"the gateway did not take the new routes ({_last_line(switched.stderr or switched.stdout)}): "
                    f"rolled back, {current['DIFY_API_IMAGE']} is still serving (the migration stays applied)")
        say(f"{phases.label('gateway')}: nginx reloaded with {work['gateway']} (a restart keeps them; its next "
            "`invoke prod.up gateway` renders the same from .env)")

    # 9. The gateway learns the new addresses, then the old release drains and stops.
    phases.start("drain", work["drain"])
    say(f"new release healthy; letting the gateway's DNS cache catch up ({DNS_SETTLE_SECONDS}s)")
    time.sleep(DNS_SETTLE_SECONDS)
    main = next(u for u in units_plan if u.key == "worker")
    # Beat moves first and alone: the old scheduler stops, then the new one starts (never two).
    say(f"[bold]worker_beat[/]: moving from {old['worker']} to {new['worker']}")
    run_unit(c, settings, main, old["worker"], "stop", "worker_beat", hide=True, warn=True)
    run_unit(c, tsettings, main, new["worker"], "up", "-d", "--no-deps", "--wait", "--wait-timeout", wait,
             "worker_beat", image_env=values, warn=True)
    drain = workers.drain_seconds(settings.env)
    old_workers = [u for u in units_plan if u.cluster.name == "worker"]
    for unit in old_workers:  # all at once: each stops taking tasks now and finishes its runs
        run_unit(c, settings, unit, old[unit.key], "kill", "-s", "SIGTERM", unit.service, hide=True, warn=True)
    for unit in units_plan:
        if unit in old_workers:
            say(f"[bold]{unit.key}[/]: draining {old[unit.key]} (it takes no new task; its running "
                f"tasks and workflow runs finish, for {drain}s at most)")
            run_unit(c, settings, unit, old[unit.key], "down", "--remove-orphans", "--timeout", str(drain),
                     hide=True, warn=True)
        else:
            say(f"[bold]{unit.key}[/]: draining and stopping {old[unit.key]} (in-flight requests finish)")
            run_unit(c, settings, unit, old[unit.key], "down", "--remove-orphans", hide=True, warn=True)

    # 10. What the target no longer has goes; .env names the release only now that all is healthy.
    phases.start("record", work["record"])
    _remove_services(c, settings, plan.retired, old_values)
    state = releases.load_state(settings)
    state.pop("pending", None)
    state.setdefault("projects", {}).update(new)
    releases.save_state(settings, state)
    if updates:
        dotenv.write_private(settings.env_file, envfile.with_values(settings.env_file.read_text(), updates))
    entry = finish("ok", f"{action} done")
    say(f"[green]{action} done[/] in {entry['seconds']}s: Dify {target_rs.release}, api and worker "
        f"{target['DIFY_API_IMAGE']}, web {target['DIFY_WEB_IMAGE']}"
        + (f", {', '.join(plan.lockstep)} moved" if plan.lockstep else ""))
    return entry


def replace_unit(unit: Unit, service: str) -> Unit:
    """The same unit, looked at through another of its services (api_websocket beside api)."""
    return unit if unit.service == service else Unit(unit.key, unit.cluster, service, unit.env)


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


def scale(c: Any, settings: Settings, counts: dict[str, int], timeout: int | None = None, say: Say = quiet) -> None:
    by_key = {u.key: u for u in units(settings)}
    wait = str(timeout or settings.wait_timeout)
    owners_given = False
    for key, count in counts.items():
        unit = by_key[key]
        project = releases.active_project(settings, key)
        say(f"[bold]{key}[/]: {count} replica(s) in {project}")
        args = ["up", "-d", "--no-deps", "--no-recreate", "--scale", f"{unit.service}={count}"]
        if count:
            args += ["--wait", "--wait-timeout", wait]
        if unit.cluster.name in stack.OWNED_BY_DIFY_USER and count and not owners_given:
            stack.ensure_owners(c, settings, say=say)  # new replicas write the storage volume
            owners_given = True
        if unit.cluster.name == "worker":  # a removed worker finishes its runs first
            args += ["--timeout", str(workers.drain_seconds(settings.env))]
        variable = releases.REPLICA_VARIABLES.get(key, "WORKER_REPLICAS")
        result = run_unit(c, settings, unit, project, *args, unit.service, image_env={variable: str(count)},
                          warn=True)
        if not result.ok:
            releases.record(settings, "scale", "failed", replicas={key: count}, projects={key: project})
            raise fail(f"{key} did not reach {count} healthy replica(s): see `invoke prod.status`")
        releases.set_replicas(settings, {key: count})
    releases.record(settings, "scale", "ok", replicas=counts)
