"""backup.restore --undo and --drop-aside."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

from .. import backup as bk
from .. import releases
from ..config import Settings
from ..report import Say, quiet
from .journal import Journal, _now, journals, last_journal
from .putback import _journal_settings, put_back
from .steps import _exit_text
from .values import RestoreFailed


def undo_problems(c: Any, journal: Journal) -> list[str]:
    """What stops an undo (empty: it can run); checked before anything changes."""
    state = journal.data.get("state")
    name = journal.data.get("set")
    if journal.data.get("fresh"):
        return [f"the last restore ({name}) deployed this stack on a new server: there is nothing before it to go "
                "back to (`invoke prod.down all --volumes` removes the stack)"]
    if state not in ("done", "rollback-failed", "running"):  # running: the restore was killed half-way
        return [f"the last restore ({name}, {journal.data['stamp']}) is {state}: nothing to undo"]
    problems = []
    now = _journal_settings(journal)
    cfg = bk.config_from(now)
    for step in journal.steps(pending=True):
        if step["kind"] in ("volume", "redis") and step.get("done"):
            if not c.run(shlex.join(bk.aside_argv(cfg, "check", step["volume"], step["aside"])), hide=True,
                         warn=True).ok:
                problems.append(f"{step['aside']} is no longer in volume {step['volume']}")
        elif step["kind"] == "env" and step.get("backup") and not Path(step["backup"]).is_file():
            problems.append(f"the previous .env {step['backup']} is gone")
        elif step["kind"] == "certs" and step.get("aside") and not Path(step["aside"]).exists():
            problems.append(f"the previous certificates folder {step['aside']} is gone")
    dbs = [old for step in journal.steps("databases", pending=True) for _db, old in step["swaps"]]
    if dbs:
        out = c.run(shlex.join(bk.psql_argv(cfg, "SELECT datname FROM pg_database")),
                    env={"PGPASSWORD": now.get("DB_PASSWORD")}, hide=True, warn=True, in_stream=False)
        present = set((out.stdout or "").split()) if out.ok else set()
        problems += [f"database {db} is no longer there" for db in dbs if db not in present]
    return problems


def undo(c: Any, settings: Settings, say: Say = quiet) -> Journal:
    journal = last_journal(settings)
    problems = undo_problems(c, journal)
    if problems:
        raise bk.BackupError(f"cannot undo the restore of {journal.data.get('set')}: {problems[0]}"
                             + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    if journal.data.get("state") == "done":
        journal.data["mode"] = "undo"
        journal.save()
    try:
        put_back(c, journal, say)
    except (Exception, KeyboardInterrupt) as exc:
        raise RestoreFailed(f"undoing the restore of {journal.data.get('set')} stopped: {_exit_text(exc)}; fix "
                            "that and run `invoke backup.restore --undo` again: it continues where it stopped") from None
    journal.set_state("undone" if journal.data.get("mode") == "undo" else "rolled-back", undone=_now())
    releases.record(settings, "restore-undo", "ok", set=journal.data.get("set"), stamp=journal.data["stamp"])
    return journal


def drop_aside(c: Any, settings: Settings, say: Say = quiet) -> list[str]:
    """Remove what finished restores (and undos) keep aside; returns what was removed. The .env
    copies stay (small, private: remove them by hand)."""
    removed = []
    for journal in journals(settings):
        if journal.data.get("state") in ("done", "undone"):
            removed += _drop_journal(c, settings, journal)
            say(f"  restore of {journal.data.get('set')} ({journal.data['stamp']}): what it kept aside is removed")
    return removed


def _drop_journal(c: Any, settings: Settings, journal: Journal) -> list[str]:
    cfg = bk.config_from(settings)
    password = settings.get("DB_PASSWORD")
    undone = journal.data.get("state") == "undone"
    stamp = journal.data["stamp"]
    removed = []
    for step in journal.steps():
        if step["kind"] == "databases":
            restored = [db for db, _o in step["swaps"]] + list(step["fresh"])
            names = [f"{db}_undone_{stamp}" for db in restored] if undone else [old for _db, old in step["swaps"]]
            for db in names:
                bk.run_step(c, bk.drop_database_argv(cfg, db), f"dropping database {db}", {"PGPASSWORD": password})
                removed.append(f"database {db}")
        elif step["kind"] in ("volume", "redis"):
            name = step.get("kept_as") if undone else step["aside"]
            if name:
                bk.run_step(c, bk.aside_argv(cfg, "drop", step["volume"], name), f"removing {name} from {step['volume']}")
                removed.append(f"{step['volume']}:{name}")
        elif step["kind"] == "certs":
            target = Path(step["dir"])
            folder = target.with_name(f"{target.name}.undone-{stamp}") if undone else (
                Path(step["aside"]) if step.get("aside") else None)
            if folder and folder.exists():
                shutil.rmtree(folder)
                removed.append(str(folder))
    journal.set_state("dropped", dropped=_now())
    return removed


def aside_summary(journal: Journal) -> dict:
    """What a finished restore keeps aside, for the closing lines."""
    out: dict[str, Any] = {"databases": [], "volumes": {}, "env_file": None, "certs": None,
                           "journal": str(journal.path), "fresh": bool(journal.data.get("fresh"))}
    for step in journal.steps():
        if step["kind"] == "databases":
            out["databases"] += [old for _db, old in step["swaps"]]
        elif step["kind"] in ("volume", "redis"):
            out["volumes"][step["volume"]] = step["aside"]
        elif step["kind"] == "env":
            out["env_file"] = step.get("backup")
        elif step["kind"] == "certs":
            out["certs"] = step.get("aside")
    return out
