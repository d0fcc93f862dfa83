"""adopt.run and adopt.rollback: the order that leaves nothing half imported, the switch, the record."""

from __future__ import annotations

import datetime as dt
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

from .. import adopt as ad
from .. import polling
from .. import backup as bk
from .. import clusters as cl
from .. import composeps, dotenv, pgmove, probes, releases, units
from .. import stack as st
from ..config import Settings
from ..report import Say, quiet
from .commands import USER_TABLES_SQL, RunError, run, tool_argv
from .moving import (
    move_databases,
    place_certificates,
    place_redis,
    prepare_target,
    snapshot_redis,
    stage_files,
)
from .official import Adoption, restore_policies, start_official, stop_official


def undo(a: Adoption) -> list[str]:
    """Everything a run did before the switch, undone; returns what could not be."""
    leftovers = []
    c = a.c
    cfg = bk.config_from(a.settings)
    secrets = a.secrets()
    if a.data_started:
        for scratch in a.scratch.values():
            c.run(shlex.join(bk.psql_argv(cfg, pgmove.drop_sql(scratch))), env=secrets, hide=True, warn=True)
    for volume in a.staged:
        argv = tool_argv(a.image, None, [(volume, "/target", False)], {}, (), "bash", "/difyops/stage-tree.sh",
                         "drop", "/target", a.stamp)
        if not c.run(shlex.join(argv), hide=True, warn=True).ok:
            leftovers.append(f"the staging folder .difyops-stage-{a.stamp} in {volume}")
    if a.data_started and not a.data_was_running:
        units.run_compose(c, a.settings, cl.CLUSTERS["data"], "down", "--remove-orphans", "--timeout", "30",
                       hide=True, warn=True)
    for volume in a.created_volumes:
        if not c.run(shlex.join(["docker", "volume", "rm", volume]), hide=True, warn=True).ok:
            leftovers.append(f"volume {volume}")
    for network in a.created_networks:
        c.run(shlex.join(["docker", "network", "rm", network]), hide=True, warn=True)
    if a.env_written:
        if a.env_backup is not None:
            dotenv.write_private(a.settings.env_file, a.env_backup.read_bytes())
            a.env_backup.unlink()
        elif not a.env_existed:
            a.settings.env_file.unlink(missing_ok=True)
    shutil.rmtree(a.stage, ignore_errors=True)
    if a.started:
        a.c.run(shlex.join(a.install.compose_argv("stop", *a.started)), hide=True, warn=True)
    restore_policies(c, a.policies)
    try:
        start_official(c, a.install, a.stopped)
    except RunError as exc:
        leftovers.append(str(exc))
    return leftovers


def switch(a: Adoption) -> None:
    """Put everything verified in place (from here on, undo is adopt.rollback)."""
    place_redis(a)
    for volume in a.staged:
        argv = tool_argv(a.image, None, [(volume, "/target", False)], {}, (), "bash", "/difyops/stage-tree.sh",
                         "switch", "/target", a.stamp)
        out = run(a.c, argv, f"putting the copy in place in {volume}")
        if "aside\t" in out:
            a.say(f"  {volume}: previous content kept in {out.split(chr(9), 1)[1].strip()} inside it")
    a.staged = []
    place_certificates(a)
    cfg = bk.config_from(a.settings)
    secrets = a.secrets()
    present = set(run(a.c, bk.psql_argv(cfg, "SELECT datname FROM pg_database"), "listing this stack's databases",
                      secrets).split())
    renames = [(final, f"{final}_pre_adopt_{a.stamp}" if final in present else None, scratch)
               for final, scratch in a.scratch.items()]
    run(a.c, bk.psql_argv(cfg, pgmove.rename_sql(renames)), "renaming the moved databases into place", secrets)
    notes = {}
    for final, aside, _scratch in renames:
        if not aside:
            continue
        # A new data cluster makes DB_DATABASE and DB_PLUGIN_DATABASE empty at initialisation: those go.
        tables = run(a.c, bk.psql_argv(cfg, USER_TABLES_SQL, database=aside), f"looking into {aside}", secrets)
        if tables.strip() == "0":
            run(a.c, bk.psql_argv(cfg, pgmove.drop_sql(aside)), f"dropping the empty {aside}", secrets)
            notes[final] = " (the empty one from the cluster's initialisation dropped)"
        else:
            notes[final] = f" (previous kept as {aside})"
    a.say("  databases in place: " + ", ".join(final + notes.get(final, "") for final, _a, _s in renames))


def health(a: Adoption, timeout: float = 120) -> list[str]:
    """Every service of the stack running and healthy; the gateway answers on its port."""
    import requests  # noqa: PLC0415

    rows = st.status_rows(a.c, a.settings, list(cl.CLUSTERS.values()))
    bad = [f"{r.cluster}/{r.service} {r.state} ({r.health})" for r in rows
           if r.state != "running" or r.health not in ("healthy", "none")]
    if bad:
        return [f"not healthy: {', '.join(bad)}"]
    bind = a.settings.get("NGINX_BIND_ADDRESS", "127.0.0.1")
    host = "127.0.0.1" if bind in ("", "0.0.0.0") else bind
    url = f"http://{host}:{a.settings.get('EXPOSE_NGINX_PORT', '80')}/"
    last = [""]

    def answers() -> bool:
        try:
            response = requests.get(url, timeout=5, allow_redirects=False)
        except requests.RequestException as exc:
            last[0] = type(exc).__name__
            return False
        last[0] = f"HTTP {response.status_code}"
        return response.status_code < 500

    if polling.until(answers, timeout, interval=2):
        return []
    return [f"the gateway {url} did not answer within {timeout:.0f}s ({last[0]})"]


def record(a: Adoption, status: str, **extra: Any) -> Path:
    inst = a.install
    state = {
        "status": status,
        "stamp": a.stamp,
        "from": str(inst.dir),
        "project": inst.project,
        "compose_files": [str(p) for p in inst.compose_files],
        "version": inst.version,
        "release": a.plan.release,
        "running_before": inst.running,
        "stopped": a.stopped,
        "restart_policies": a.policies,
        "env_backup": str(a.env_backup) if a.env_backup else None,
        "databases": {m.meta.get("final", m.target_database): {
            "from": f"{m.meta.get('server')}/{m.source_database}", "tables": len(m.tables), "rows": m.rows,
            "bytes": m.source_bytes, "seconds": round(m.seconds, 2),
            "move_ms": m.ms("move"), "fingerprint_ms": m.ms("source_fingerprint") + m.ms("target_fingerprint")}
            for m in a.moved},
        "files": {name: {"files": len(t["files"]), "bytes": t["bytes"], "seconds": round(t["seconds"], 2),
                         "volume": t["volume"]} for name, t in a.trees.items()},
        "redis": {k: v for k, v in a.redis.items() if k != "source"} | {
            "keys": sum(v[0] for v in (a.redis.get("source") or {}).values())},
        "timings": {k: round(v, 1) for k, v in a.timings.items()},
        **extra,
    }
    return ad.save_state(a.settings, state)


def adopt(c: Any, settings: Settings, plan: ad.Plan, image: str, mapped_text: str, stamp: str,
          say: Say = quiet) -> dict:
    """Everything after pre-flight and confirmation. Returns the record."""
    started = time.monotonic()
    a = Adoption(c, settings, plan, image, stamp, say, releases.state_dir(settings) / f"adopt-{stamp}")
    inst = plan.install
    try:
        mark = time.monotonic()
        a.stopped = [s for s in inst.running if s not in ad.READ_LIVE]
        stop_official(a, a.stopped)
        live = [s for s in ad.READ_LIVE if s in inst.services and (s != "pgvector" or inst.vector_store == "pgvector")]
        a.started = [s for s in live if s not in inst.running]
        if a.started:
            start_official(c, inst, a.started)
            listed = c.run(shlex.join(inst.compose_argv("ps", "-a", "--format", "json")), hide=True, warn=True)
            _, inst.containers, _ = composeps.by_service(composeps.records(listed.stdout if listed.ok else ""))
        say(f"official stack {inst.project}: stopped {', '.join(a.stopped) or 'nothing'}; "
            f"{', '.join(live)} {'started ' if a.started else ''}to be read")
        a.timings["stop official app"] = time.monotonic() - mark
        mark = time.monotonic()
        prepare_target(a, mapped_text)
        port = probes.port_problems(c, a.settings)
        if port:
            raise RunError(port[0])
        a.timings["target data cluster"] = time.monotonic() - mark
        say(f"stack {a.settings.stack}: .env written"
            + (f" (previous kept as {a.env_backup.name})" if a.env_backup else "") + ", data cluster up")
        mark = time.monotonic()
        move_databases(a)
        a.timings["databases"] = time.monotonic() - mark
        mark = time.monotonic()
        stage_files(a)
        a.timings["files"] = time.monotonic() - mark
        mark = time.monotonic()
        snapshot_redis(a)
        a.timings["redis snapshot"] = time.monotonic() - mark
    except BaseException as exc:
        leftovers = undo(a)
        tail = f"; NOT undone: {', '.join(leftovers)}" if leftovers else ""
        message = exc if isinstance(exc, (RunError, pgmove.MoveError, ad.AdoptError)) else f"{type(exc).__name__}: {exc}"
        raise RunError(f"{message}. Nothing was imported: this stack is as it was and the official stack "
                       f"{inst.project} runs as before{tail}") from None

    # From here on the stack changes for good; the way back is adopt.rollback.
    try:
        mark = time.monotonic()
        data_services = [s for s in ad.READ_LIVE if s in inst.services and s in (*inst.running, *a.started)]
        stop_official(a, data_services)
        a.stopped += [s for s in data_services if s in inst.running]
        record(a, "switching")
        if plan.target_holds:
            for name in ("gateway", "web", "worker", "api", "support"):
                st.down(c, a.settings, cl.CLUSTERS[name])
        switch(a)
        a.timings["switch"] = time.monotonic() - mark
        mark = time.monotonic()
        for cluster in cl.CLUSTERS.values():
            seconds = st.up(c, a.settings, cluster)
            say(f"  {cluster.name}: healthy in {seconds:.1f}s")
        a.timings["start clusters"] = time.monotonic() - mark
        mark = time.monotonic()
        problems = health(a)
        if problems:
            raise RunError("; ".join(problems))
        a.timings["health checks"] = time.monotonic() - mark
    except BaseException as exc:
        record(a, "failed", error=str(exc))
        message = str(exc) if isinstance(exc, RunError) else f"{type(exc).__name__}: {exc}"
        raise RunError(f"{message}. The switch had begun: the official install's files are untouched and "
                       f"`invoke adopt.rollback` starts it again") from None
    shutil.rmtree(a.stage, ignore_errors=True)
    a.timings["total (downtime)"] = time.monotonic() - started
    path = record(a, "adopted", finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    from .. import rollout  # noqa: PLC0415

    releases.record(a.settings, "adopt", "ok", source=str(inst.dir), version=inst.version, release=plan.release,
                    to=rollout.release_images(a.settings.env), seconds=round(a.timings["total (downtime)"], 1))
    return ad.load_state(a.settings) | {"record": str(path)}


def rollback(c: Any, settings: Settings, folder: str | None = None, say: Say = quiet) -> dict:
    """Stop this stack (its data kept) and start the official install's services that ran before."""
    state = ad.load_state(settings)
    if not state:
        raise RunError(f"no adoption is recorded for stack {settings.stack} ({ad.state_path(settings)}): "
                       "nothing to roll back")
    install = ad.find_install(c, folder or state["from"])
    if install.project != state.get("project"):
        raise RunError(f"{install.dir} is compose project {install.project}, the adoption came from "
                       f"{state.get('project')}: nothing was changed")
    for cluster in reversed(list(cl.CLUSTERS.values())):
        st.down(c, settings, cluster)
    st.remove_shared(c, settings, volumes=False)
    say(f"stack {settings.stack}: down (its volumes are kept)")
    restore_policies(c, state.get("restart_policies") or {})
    before = state.get("running_before") or []
    start_official(c, install, before)
    say(f"official stack {install.project}: {', '.join(before) or 'nothing'} running again")
    state["status"] = "rolled back"
    state["rolled_back_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    ad.save_state(settings, state)
    return state
