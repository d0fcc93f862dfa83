"""Putting back what a restore replaced, from its journal (on failure, and for --undo)."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

from .. import backup as bk
from .. import clusters as cl
from .. import dotenv
from ..config import Settings, settings_for
from ..report import Say, quiet
from .journal import Journal
from .steps import (
    _stack,
    redis_services,
    refresh_monitoring,
    run_sql,
    set_role_passwords,
    stop_users,
    swap_back_sql,
    up_clusters,
)
from .values import STARTED_AGAIN, UNDONE


def put_back(c: Any, journal: Journal, say: Say = quiet) -> None:
    """Walk a journal backwards: every change not yet put back is undone (each marked when done, so
    a second run continues where a first one stopped). mode rollback: what the restore brought is
    deleted; mode undo: it is kept aside (<db>_undone_<t>, .difyops-undone-<t>)."""
    if journal.data.get("fresh"):
        return _remove_fresh(c, journal, say)
    undo = journal.data.get("mode") == "undo"
    stamp = journal.data["stamp"]
    now = _journal_settings(journal)  # the .env as it is now
    old = now
    env_steps = journal.steps("env")
    if env_steps and env_steps[0].get("backup"):
        old = settings_for(now.env_file, now.stack, now.wait_timeout, Path(env_steps[0]["backup"]).read_text())
    cfg = bk.config_from(old)
    recreate = journal.data.get("recreate") or []
    stop_users(c, now)
    for step in reversed(journal.steps("redis", pending=True)):
        _stack().run_compose(c, now, cl.CLUSTERS["data"], "stop", "--timeout", "30", *redis_services(now),
                             hide=True, warn=True)
        _put_back_volume(c, cfg, step, journal, UNDONE + stamp if undo else None)
        say(f"  redis: previous data back in {step['volume']}")
    for step in reversed(journal.steps("volume", pending=True)):
        _put_back_volume(c, cfg, step, journal, UNDONE + stamp if undo else None)
        say(f"  {step['volume']}: previous content back")
    for step in reversed(journal.steps("certs", pending=True)):
        _put_back_certs(step, stamp, undo)
        journal.mark(step, put_back=True)
        say(f"  certificates: previous folder back in {step['dir']}")
    for step in journal.steps("env", pending=True):
        copy = dotenv.backup(now.env_file) if undo else None  # it may have been edited since the restore
        dotenv.write_private(now.env_file, Path(step["backup"]).read_bytes())
        journal.mark(step, put_back=True, replaced_copy=str(copy) if copy else None)
        say(f"  config: previous .env back (from {Path(step['backup']).name})"
            + (f"; the restored one kept as {copy.name}" if copy else ""))
    up_clusters(c, old, ["data"], recreate)
    for step in journal.steps("roles", pending=True):
        roles = [tuple(r) for r in step["roles"]]
        # The roles have the restored passwords now: connect with the restored .env's first.
        set_role_passwords(c, cfg, roles, [now.get("DB_PASSWORD"), old.get("DB_PASSWORD")], old.env)
        journal.mark(step, put_back=True)
        say(f"  PostgreSQL roles have their previous passwords: {', '.join(r for r, _k in roles)}")
    for step in journal.steps("databases", pending=True):
        swaps = [tuple(s) for s in step["swaps"]]
        keep = f"_undone_{stamp}" if undo else f"_failed_{stamp}"
        run_sql(c, cfg, swap_back_sql(swaps, step["fresh"], keep), old.get("DB_PASSWORD"),
                "switching back to the previous databases")
        if not undo:
            for db in [*[db for db, _o in swaps], *step["fresh"]]:
                c.run(shlex.join(bk.drop_database_argv(cfg, db + keep)), env={"PGPASSWORD": old.get("DB_PASSWORD")},
                      hide=True, warn=True)
        journal.mark(step, put_back=True, kept_as=keep if undo else None)
        say("  databases: the previous ones are back" + (f" (the restored ones kept as <db>{keep})" if undo else ""))
    for step in journal.steps("loaded", pending=True):
        for db in step["databases"]:  # restored but never switched to
            c.run(shlex.join(bk.drop_database_argv(cfg, db)), env={"PGPASSWORD": old.get("DB_PASSWORD")},
                  hide=True, warn=True)
        journal.mark(step, put_back=True)
    up_clusters(c, old, list(STARTED_AGAIN), recreate)
    up_clusters(c, old, [n for n in ("web", "gateway") if n in recreate], recreate)
    refresh_monitoring(c, old)


def _forget_env_copy(journal: Journal, settings: Settings) -> None:
    """After a rollback the .env is the copy again, byte for byte: the copy goes."""
    for step in journal.steps("env"):
        copy = Path(step["backup"]) if step.get("backup") else None
        if copy and copy.is_file() and copy.read_bytes() == settings.env_file.read_bytes():
            copy.unlink()


def _journal_settings(journal: Journal) -> Settings:
    """The settings of the stack a journal belongs to, as its .env is now."""
    return settings_for(Path(journal.data["env_file"]), journal.data["stack"], journal.data.get("wait_timeout", 300))


def _put_back_volume(c, cfg: bk.BackupConfig, step: dict, journal: Journal, keep: str | None) -> None:
    if not step.get("done") and not c.run(shlex.join(bk.aside_argv(cfg, "check", step["volume"], step["aside"])),
                                          hide=True, warn=True).ok:
        journal.mark(step, put_back=True)  # the step stopped before it moved anything
        return
    bk.run_step(c, bk.aside_argv(cfg, "put-back", step["volume"], step["aside"], keep),
                f"putting back the previous content of {step['volume']}")
    journal.mark(step, put_back=True, kept_as=keep)


def _put_back_certs(step: dict, stamp: str, undo: bool) -> None:
    """The certificates folder as it was: the restored one removed (undo: kept as <dir>.undone-<t>),
    the previous one back. An aside that was never made means the folder was never replaced."""
    target, aside = Path(step["dir"]), Path(step["aside"]) if step.get("aside") else None
    if aside is not None and not aside.exists():
        return
    if target.exists():
        if undo:
            target.rename(target.with_name(f"{target.name}.undone-{stamp}"))
        else:
            shutil.rmtree(target)
    if aside is not None:
        aside.rename(target)


def _remove_fresh(c: Any, journal: Journal, say) -> None:
    """A restore onto a new server failed: take down what it started, remove what it created."""
    st = _stack()
    settings = _journal_settings(journal)
    if settings.env_file.exists():
        for cluster in reversed(list(cl.CLUSTERS.values())):
            st.down(c, settings, cluster)
    for step in reversed(journal.steps("certs", pending=True)):
        _put_back_certs(step, journal.data["stamp"], undo=False)
        journal.mark(step, put_back=True)
    for step in journal.steps("shared", pending=True):
        for volume in step["volumes"]:
            bk.run_step(c, ["docker", "volume", "rm", volume], f"removing volume {volume}")
        for network in step["networks"]:
            c.run(shlex.join(["docker", "network", "rm", network]), hide=True, warn=True)
        journal.mark(step, put_back=True)
    for step in journal.steps("env", pending=True):
        settings.env_file.unlink(missing_ok=True)
        journal.mark(step, put_back=True)
    say(f"  stack {settings.stack}: containers, networks and volumes the restore created removed, and its .env")
