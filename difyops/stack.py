"""What prod tasks do to a running stack: create what clusters share, bring clusters up and
down in order, give the volumes Dify's non-root processes write to their user, run the one-shot
migration and check that it reached the image's head, and read back their state."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from .report import last_line
from . import clusters as cl
from . import composeps, ha, probes, release_sets, releases
from .config import Settings
from .errors import fail
from .report import Say, quiet
from .units import cluster_env, extra_worker_units, main_worker_env, run_compose, run_unit

def cluster_images(c: Any, settings: Settings, cluster: cl.Cluster) -> list[str]:
    """Image refs a cluster runs, as Compose resolves them from .env (profiles included)."""
    result = run_compose(c, settings, cluster, "config", "--images", hide=True, warn=True)
    if not result.ok:
        raise fail(f"compose/{cluster.name}.yml does not resolve: {last_line(result.stderr, 'no output')}")
    return sorted({line.strip() for line in result.stdout.splitlines() if line.strip()})


def preflight(c: Any, settings: Settings, selected: list[cl.Cluster], pull_missing: bool = True,
              say: Say = quiet) -> list[str]:
    """Everything that must hold before anything changes; returns the problems."""
    problems = probes.docker_problems(c)
    problems += probes.env_problems(settings)
    if problems:  # the remaining probes need Docker and a valid .env
        return problems
    from . import workers  # noqa: PLC0415

    problems += release_problems(settings.env) + workers.drain_problems(settings.env)
    if problems:
        return problems
    from . import envfile  # noqa: PLC0415

    for note in envfile.renamed_notes(settings.env):  # mapped, not refused
        say(f"note: {note}")
    from . import hardening  # prod.check's lines: short secrets, debug, plain HTTP, certificate, sizes

    problems += hardening.beyond_envfile(c, settings, settings.env)
    if problems:
        return problems
    if any(x.name == "gateway" for x in selected):
        problems += probes.port_problems(c, settings)
    refs = sorted({ref for cluster in selected for ref in cluster_images(c, settings, cluster)})
    missing = probes.missing_images(c, refs)
    if missing and pull_missing:
        from . import images  # pulling changes nothing that runs

        mirror = settings.get("DIFYOPS_IMAGE_MIRROR")
        for ref in missing:
            say(f"pulling {ref}" + (f" through {mirror}" if mirror else ""))
            images.pull_one(c, ref, mirror)
        missing = probes.missing_images(c, missing)
    for ref in missing:
        problems.append(
            f"image {ref} is not present and could not be pulled: run `invoke images.pull` "
            "(set DIFYOPS_IMAGE_MIRROR where Docker Hub is blocked) or load an offline bundle"
        )
    return problems


def ensure_shared(c: Any, settings: Settings, selected: Iterable[cl.Cluster]) -> None:
    """Create the networks and data volumes the selected clusters use, if missing."""
    selected = list(selected)
    # The cluster's own networks, and the ones its release's services join (release set `networks`).
    networks = sorted({n for x in selected for n in cl.cluster_networks(settings, x)})
    volumes = sorted({v for x in selected for v in (*x.volumes, *ha.extra_volumes(settings.env, x.name))})
    for network in networks:
        name = cl.network_name(settings, network)
        if not c.run(shlex.join(["docker", "network", "inspect", name]), hide=True, warn=True).ok:
            c.run(shlex.join(cl.network_create_argv(settings, network)), hide=True)
    for volume in volumes:
        name = cl.volume_name(settings, volume)
        if not c.run(shlex.join(["docker", "volume", "inspect", name]), hide=True, warn=True).ok:
            c.run(shlex.join(cl.volume_create_argv(settings, volume)), hide=True)


# ------------------------------------------------------------------ storage ownership
# The one-shot compose service (compose/api.yml, profile init) that gives the storage volume to the
# user the api image runs as. Every path that starts api or worker containers runs it first:
# stack.up (deploy, prod.up, prod.restart, backup.restore), rollout.upgrade and rollout.scale
# (through units.run_unit), and the Swarm deploy (swarm.ensure_owners).
OWNER_SERVICE = "init_permissions"
OWNER_PROFILE = "init"
OWNER_ARGS = ("run", "--rm", "--no-deps", OWNER_SERVICE)


def storage_owner(env: dict[str, str]) -> str:
    """uid:gid the api image of the deployment's release runs as (what its volumes must belong to)."""
    image = release_sets.for_env(env).image("api")
    return image.user if not image.runs_as_root else "0:0"


def owner_env(env: dict[str, str]) -> dict[str, str]:
    return {"DIFYOPS_STORAGE_OWNER": storage_owner(env)}


def owner_problem(result: Any, who: str) -> str | None:
    if result.ok:
        return None
    return (f"could not give the storage volume to {who} ({last_line(result.stderr, 'no output')}): the api, worker and "
            "beat could not write their files; nothing was started")


def ensure_owners(c: Any, settings: Settings, env: dict[str, str] | None = None,
                  image_env: dict[str, str] | None = None, say: Say = quiet) -> None:
    """Give the storage volume to the api image's user before anything that writes it starts.
    `env` is the .env of the release about to run (an upgrade's target), `image_env` the image refs
    it runs; both default to the deployment's own."""
    target = {**settings.env, **(env or {})}
    owner = owner_env(target)
    result = run_compose(c, settings, cl.CLUSTERS["api"], *OWNER_ARGS, profiles=(OWNER_PROFILE,),
                         extra_env={**(image_env or {}), **owner}, hide=True, warn=True)
    problem = owner_problem(result, f"uid:gid {owner['DIFYOPS_STORAGE_OWNER']}")
    if problem:
        raise fail(problem)
    said = [ln for ln in (result.stdout or "").splitlines() if ln.strip()]
    say(f"[bold]storage[/]: {said[-1] if said else 'owner checked'}")


# ------------------------------------------------------------------ migrations
MIGRATE_ARGS = ("run", "--rm", "--no-deps", "migrate")


def schema_check_args(env: dict[str, str]) -> tuple[str, ...]:
    """`compose run` of the migrate service as a job that prints the applied revision (Alembic's
    `current`), without migrating again."""
    facts = release_sets.migrations_of(env)
    return ("run", "--rm", "--no-deps", "-e", "MODE=job", "-e", "MIGRATION_ENABLED=false", "migrate",
            *facts.current_command)


def schema_problem(env: dict[str, str], migration_output: str, check: Any, image: str) -> str | None:
    """Why the schema is not at the head of `image` after its migration job (None: it is). The job's
    exit code is not enough: `flask upgrade-db` exits 0 when it skipped under a held lock, and before
    Dify PR 32024 it also exited 0 when the migration failed."""
    facts = release_sets.migrations_of(env)
    out = (check.stdout or "") if check is not None else ""
    revision = next((ln.split()[0] for ln in out.splitlines() if ln.strip() and facts.head_marker in ln.split()), None)
    if check is not None and check.ok and revision:
        return None
    printed = [ln for ln in out.splitlines() if ln.strip()]
    if check is None or not check.ok:
        seen = last_line(check.stderr, 'no output') if check is not None and (check.stderr or "").strip() else last_line(out, 'no output')
        return (f"after the migration job with {image}, `flask {' '.join(facts.current_command)}` failed ({seen}): "
                "the schema cannot be shown to be at the image's head")
    last = next((ln for ln in reversed(printed) if not ln.startswith(("INFO", "Running", "Job "))), "")
    where = f"the database is at {last.split()[0] if last else 'no revision'}, not at its head"
    if facts.skipped_message in (migration_output or ""):
        why = (f"the job printed \"{facts.skipped_message}\": another process holds {facts.lock} (a migration "
               f"still running, or one that died; its lock expires {facts.lock_ttl_seconds}s after): wait, then retry")
    else:
        why = "the migration exited 0 without reaching it (output above)"
    return f"after the migration job with {image}, {where}: {why}"


def _migration_image(settings: Settings) -> str:
    from . import images  # noqa: PLC0415

    return images.resolve_ref(images.find("DIFY_API_IMAGE"), settings.env).ref


def migrate(c: Any, settings: Settings) -> None:
    """Run Dify's migrations once, as a one-shot container, before any api replica starts, and
    check that the schema is at the image's head before anything goes on."""
    api = cl.CLUSTERS["api"]
    result = run_compose(c, settings, api, *MIGRATE_ARGS, profiles=("migrate",), warn=True)
    if not result.ok:
        raise fail("the database migration failed (output above); nothing after it was started")
    check = run_compose(c, settings, api, *schema_check_args(settings.env), profiles=("migrate",),
                        hide=True, warn=True)
    problem = schema_problem(settings.env, result.stdout or "", check, _migration_image(settings))
    if problem:
        raise fail(f"{problem}; nothing after it was started")


def release_problems(env: dict[str, str], what: str = "DIFY_VERSION") -> list[str]:
    """A release the bundle has no facts for (difyops/release_sets), or Dify images of different
    releases (release_sets.mixed_problems), are refused before anything changes."""
    try:
        release_sets.for_env(env)
    except release_sets.ReleaseSetError as exc:
        return [f"{what}: {exc}"]
    return release_sets.mixed_problems(env)


# Clusters whose containers run as the api image's (non-root) user and write the storage volume.
OWNED_BY_DIFY_USER = ("api", "worker")


def up(c: Any, settings: Settings, cluster: cl.Cluster, timeout: int | None = None, recreate: bool = False,
       say: Say = quiet) -> float:
    """Start a cluster and wait until every service is healthy; returns the seconds it took."""
    started = time.monotonic()
    if cluster.name in OWNED_BY_DIFY_USER:
        ensure_owners(c, settings, say=say)
    if cluster.name == "api":
        say("[bold]api[/]: running migrations as a one-shot job")
        migrate(c, settings)
    args = ["up", "-d", "--wait", "--wait-timeout", str(timeout or settings.wait_timeout), "--remove-orphans"]
    if recreate:
        args.append("--force-recreate")
    # With worker groups, the main worker takes only the queues no group claims.
    extra_env = main_worker_env(settings) if cluster.name == "worker" else None
    result = run_compose(c, settings, cluster, *args, warn=True, extra_env=extra_env)
    if not result.ok:
        raise fail(
            f"cluster {cluster.name} did not become healthy: see `invoke prod.status` and "
            f"`invoke prod.logs {cluster.name}`"
        )
    if cluster.name == "worker":
        up_worker_groups(c, settings, timeout=timeout, recreate=recreate)
    return time.monotonic() - started


def up_worker_groups(c: Any, settings: Settings, timeout: int | None = None, recreate: bool = False) -> None:
    """Each extra worker group of WORKER_GROUPS: its own project, the worker service only."""
    for unit in extra_worker_units(settings):
        args = ["up", "-d", "--no-deps", "--wait", "--wait-timeout", str(timeout or settings.wait_timeout)]
        if recreate:
            args.append("--force-recreate")
        project = releases.active_project(settings, unit.key)
        result = run_unit(c, settings, unit, project, *args, unit.service, warn=True)
        if not result.ok:
            raise fail(f"worker group {unit.key} did not become healthy: see `invoke prod.status`")


def down(c: Any, settings: Settings, cluster: cl.Cluster) -> None:
    run_compose(c, settings, cluster, "down", "--remove-orphans", "--timeout", "30", hide=True, warn=True)
    if cluster.name in ("api", "web", "worker"):
        _down_releases(c, settings, cluster)


def _down_releases(c: Any, settings: Settings, cluster: cl.Cluster) -> None:
    """Worker groups, and a release an interrupted upgrade left, go down with their cluster."""
    state = releases.load_state(settings)
    pending = state.get("pending") or {}
    projects = [pending[cluster.name]] if cluster.name in pending else []
    if cluster.name == "worker":
        for unit in extra_worker_units(settings):
            projects.append(releases.active_project(settings, unit.key))
            if unit.key in pending:
                projects.append(pending[unit.key])
    for project in projects:
        argv = cl.compose_argv(settings, cluster, "down", "--remove-orphans", "--timeout", "30", project_name=project)
        c.run(shlex.join(argv), env=cluster_env(settings, cluster), hide=True, warn=True)
    if pending:
        for key in [k for k in pending if k == cluster.name or (cluster.name == "worker" and k.startswith("worker_"))]:
            pending.pop(key)
        state["pending"] = pending
        if not pending:
            state.pop("pending")
        releases.save_state(settings, state)


def remove_shared(c: Any, settings: Settings, volumes: bool) -> None:
    """Remove the stack's networks, and its data volumes only when asked."""
    for network in (*cl.NETWORKS, *cl.every_release_network()):  # whichever release it ran
        c.run(shlex.join(["docker", "network", "rm", cl.network_name(settings, network)]), hide=True, warn=True)
    if volumes:
        for volume in cl.VOLUMES + ha.VOLUMES:  # the overlays' too, whether or not they are on now
            c.run(shlex.join(["docker", "volume", "rm", cl.volume_name(settings, volume)]), hide=True, warn=True)


@dataclass
class ServiceRow:
    """One line of prod.status (and one object of `prod.status --json`)."""
    cluster: str
    service: str
    state: str
    health: str
    running: int
    total: int
    ports: list[str] = field(default_factory=list)

    release_set: str = ""  # the release set the deployment runs (dify-1.16.1)

    def as_json(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "service": self.service, "state": self.state, "health": self.health,
                "replicas": {"running": self.running, "total": self.total}, "ports": list(self.ports),
                "release_set": self.release_set}


def service_row(cluster: str, service: str, mine: list[dict[str, Any]]) -> ServiceRow:
    """A service's row from its containers (`docker compose ps -a --format json`)."""
    if not mine:
        return ServiceRow(cluster, service, "absent", "-", 0, 0)
    running = composeps.running(mine)
    healths = sorted({composeps.health(r) for r in running}) or ["-"]
    states = sorted({r.get("State", "?") for r in mine})
    ports = sorted({p for r in mine for p in composeps.ports(r)})
    return ServiceRow(cluster, service, ",".join(states), ",".join(healths), len(running), len(mine), ports)


def status_rows(c: Any, settings: Settings, selected: list[cl.Cluster]) -> list[ServiceRow]:
    rows = []
    for cluster in selected:
        result = run_compose(c, settings, cluster, "ps", "-a", "--format", "json", hide=True, warn=True)
        records = composeps.records(result.stdout if result.ok else "")
        # The release's own services too (api_websocket, the New Agent's): what its overlays add.
        for service in (*cl.services_of(settings, cluster), *ha.extra_services(settings.env, cluster.name)):
            rows.append(service_row(cluster.name, service, composeps.of_service(records, service)))
        if cluster.name == "worker":
            for unit in extra_worker_units(settings):
                project = releases.active_project(settings, unit.key)
                result = run_unit(c, settings, unit, project, "ps", "-a", "--format", "json", hide=True, warn=True)
                mine = composeps.of_service(composeps.records(result.stdout if result.ok else ""), unit.service)
                row = service_row("worker", unit.key, mine)
                rows.append(ServiceRow(row.cluster, row.service, row.state, row.health, row.running, row.total))
    name = release_set_name(settings)
    for row in rows:
        row.release_set = name
    return rows


def release_set_name(settings: Settings) -> str:
    """dify-<release> of the deployment's release set (prod.status, images.list)."""
    return f"dify-{cl.release(settings).release}"
