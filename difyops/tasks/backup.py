"""backup: online, encrypted backups of a deployment; verify, restore, prune, schedule."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import time
from pathlib import Path

from invoke import Collection

from .base import task
from rich.console import Console
from rich.table import Table

from .. import backup as bk
from .. import dotenv, envfile
from .. import restore as rs
from ..config import load_settings
from ..errors import fail

out = Console(highlight=False, soft_wrap=True)


def _table_console() -> Console:
    """Terminal width on a terminal; wide enough in logs not to cut set names."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


def _config(settings):
    try:
        return bk.config_from(settings)
    except bk.BackupError as exc:
        raise fail(str(exc))


@task(
    default=True,
    help={"copy": "copy the set off the host with restic (default: when DIFYOPS_BACKUP_RESTIC_REPOSITORY is set)"},
)
def create(c, copy=None):
    """Back up databases, Redis, volumes and configuration, online."""
    bk.create_and_record(c, load_settings(c), copy=copy, say=out.print)


@task(name="list", help={"all_stacks": "also list sets of other stacks found in the backups folder"})
def list_(c, all_stacks=False):
    """List the backup sets (unfinished ones marked)."""
    settings = load_settings(c)
    cfg = _config(settings)
    sets = bk.list_sets(cfg.folder, None if all_stacks else cfg.stack)
    table = Table(title=f"backups in {cfg.folder}")
    for column in ("set", "created (UTC)", "size", "parts", "state"):
        table.add_column(column)
    for s in sets:
        parts = "-"
        if s.complete and (s.path / bk.MANIFEST).is_file():
            try:
                parts = ", ".join(s.manifest().get("parts", {}))
            except ValueError:
                parts = "manifest unreadable"
        created = s.created.strftime("%Y-%m-%d %H:%M:%S") if s.created else "?"
        table.add_row(s.name, created, bk.human_bytes(bk.dir_size(s.path)), parts,
                      "complete" if s.complete else "[yellow]unfinished[/]")
    _table_console().print(table)
    out.print(f"{sum(s.complete for s in sets)} complete set(s)")


@task(help={"name": "the set to verify (name or folder; default: the newest of this stack)"})
def verify(c, name=None):
    """Check a set: checksums, decryption, scratch restore, counts."""
    settings = load_settings(c)
    try:
        backup, problems = bk.verify(c, settings, name, say=out.print)
    except bk.BackupError as exc:
        raise fail(str(exc))
    if problems:
        for line in problems:
            out.print(f"[red]problem:[/] {line}")
        raise fail(f"{backup.name} failed verification ({len(problems)} problem(s))")
    out.print(f"{backup.name}: verified")


@task(
    help={
        "name": "the set to restore (name or folder; default: the newest of this stack)",
        "other_stack": "accept a set made by another stack (moving to a new server)",
        "config": "also restore the set's settings: its .env (this server's folders and gateway binding kept), "
                  "certificates and the PostgreSQL roles' passwords; on a server with no .env, deploy from the set",
        "set": "with --config: KEY=VALUE to write into the restored .env instead of the set's (repeatable; on a "
               "new server also where the backups folder and the identity are)",
        "undo": "go back to the state before the last restore (while what it kept aside is still there)",
        "drop_aside": "remove what finished restores keep aside (previous databases, volume content); no undo after",
        "yes": "do not ask for confirmation",
    },
    iterable=["set"],
)
def restore(c, name=None, other_stack=False, config=False, set=None, undo=False, drop_aside=False, yes=False):
    """Restore a set, all or nothing; refuses a damaged one before changing anything."""
    settings = load_settings(c)
    overrides = envfile.assignments(set)
    if undo and drop_aside:
        raise fail("--undo and --drop-aside go one at a time: undo first if you want the previous state back")
    if undo or drop_aside:
        if name or other_stack or config or overrides:
            raise fail(f"--{'undo' if undo else 'drop-aside'} takes no set: it works on what restores recorded")
        return _undo(c, settings, yes) if undo else _drop_aside(c, settings, yes)
    target = _configured_stack(c)
    fresh = not settings.env_file.exists()
    if not yes:
        question = (f"Deploy a stack on this server from a backup set (no {settings.env_file.name} here)?"
                    if fresh and config else
                    f"Restore over stack {settings.stack}? api and worker stop meanwhile.")
        expected = "yes" if fresh else settings.stack
        answer = input(f"{question} Type {'yes' if fresh else 'the stack name'}: ")
        if answer.strip() != expected:
            raise fail("not confirmed; nothing was changed")
    started = time.monotonic()
    try:
        aside = rs.restore(c, settings, name, other_stack=other_stack, config=config, say=out.print,
                           target_stack=target, overrides=overrides)
    except rs.RestoreFailed as exc:
        raise fail(str(exc))
    except bk.BackupError as exc:
        raise fail(f"{exc}. Nothing was changed")
    out.print(f"restored in {time.monotonic() - started:.1f}s.")
    kept = [f"databases {', '.join(aside['databases'])}"] if aside["databases"] else []
    kept += [f"{vol}:{path}" for vol, path in aside["volumes"].items()]
    if aside["certs"]:
        kept.append(aside["certs"])
    if kept and not aside["fresh"]:
        out.print("Kept aside until you drop them: " + "; ".join(kept)
                  + (f" (and the previous .env, {aside['env_file']})" if aside["env_file"] else "") + ".")
        out.print("`invoke backup.restore --undo` goes back to the state before this restore while they are there; "
                  "`invoke backup.restore --drop-aside` removes them once you are satisfied.")


def _configured_stack(c):
    """The stack named in invoke configuration (difyops.stack), if any: a new server restores into it."""
    try:
        return (c.config.get("difyops") or {}).get("stack") or None
    except AttributeError:
        return None


def _undo(c, settings, yes):
    if not yes:
        answer = input(f"Put stack {settings.stack} back as it was before its last restore? Type the stack name: ")
        if answer.strip() != settings.stack:
            raise fail("not confirmed; nothing was changed")
    started = time.monotonic()
    try:
        journal = rs.undo(c, settings, say=out.print)
    except rs.RestoreFailed as exc:
        raise fail(str(exc))
    except bk.BackupError as exc:
        raise fail(f"{exc}. Nothing was changed")
    stamp = journal.data["stamp"]
    out.print(f"stack {settings.stack} is back as it was before the restore of {journal.data.get('set')} "
              f"({time.monotonic() - started:.1f}s).")
    if journal.data.get("state") == "undone":
        out.print(f"What that restore had brought is kept aside (databases <db>_undone_{stamp}, "
                  f"{rs.UNDONE}{stamp} inside the volumes): `invoke backup.restore --drop-aside` removes it.")


def _drop_aside(c, settings, yes):
    if not yes:
        answer = input(f"Remove what restores of stack {settings.stack} keep aside (no undo afterwards)? "
                       "Type the stack name: ")
        if answer.strip() != settings.stack:
            raise fail("not confirmed; nothing was removed")
    try:
        removed = rs.drop_aside(c, settings, say=out.print)
    except bk.BackupError as exc:
        raise fail(str(exc))
    out.print(f"removed {len(removed)} kept-aside item(s)" + (f": {', '.join(removed)}" if removed else "")
              + "; the previous .env copies (.env.bak.*) stay beside the .env")


@task(
    help={
        "keep_last": "keep the N newest sets (default: DIFYOPS_BACKUP_KEEP_LAST, 7)",
        "keep_daily": "keep the newest set of each of the last N days with a set (default: DIFYOPS_BACKUP_KEEP_DAILY, 7)",
        "keep_weekly": "keep the newest set of each of the last N weeks (default: DIFYOPS_BACKUP_KEEP_WEEKLY, 4)",
        "dry_run": "only print what would be removed",
    }
)
def prune(c, keep_last=None, keep_daily=None, keep_weekly=None, dry_run=False):
    """Remove the sets the retention policy does not keep."""
    settings = load_settings(c)
    cfg = _config(settings)
    policy = {"keep_last": cfg.keep_last, "keep_daily": cfg.keep_daily, "keep_weekly": cfg.keep_weekly}
    given = {k: v for k, v in (("keep_last", keep_last), ("keep_daily", keep_daily), ("keep_weekly", keep_weekly))
             if v is not None}
    if given:  # flags replace the whole policy: what is not given keeps nothing
        policy = {k: 0 for k in policy} | given
    for key, value in policy.items():
        if not str(value).isdigit():
            raise fail(f"--{key.replace('_', '-')}={value!r} is not a whole number")
    policy = {k: int(v) for k, v in policy.items()}
    if not any(policy.values()):
        raise fail("this policy keeps nothing: give at least one of --keep-last, --keep-daily, --keep-weekly above 0")
    sets = bk.list_sets(cfg.folder, cfg.stack)
    keep = bk.retention(sets, **policy)
    day_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    doomed = [s for s in sets if (s.complete and s.name not in keep)
              or (not s.complete and s.created and s.created < day_ago)]
    for s in doomed:
        if not dry_run:
            bk.remove_set(s.path)
        out.print(f"{'would remove' if dry_run else 'removed'} {s.name}")
    out.print(f"kept {len(keep)} set(s) ({', '.join(f'{k}={v}' for k, v in policy.items())}); "
              f"{'would remove' if dry_run else 'removed'} {len(doomed)}")


@task(help={"force": "replace an existing identity (the old one is kept beside it; sets made with it need it)"})
def keygen(c, force=False):
    """Generate the backups' age identity and set its recipient."""
    settings = load_settings(c)
    cfg = _config(settings)
    if not settings.env_file.is_file():
        raise fail(f"{settings.env_file} does not exist: run `invoke env.init` first")
    if cfg.identity.exists() and not force:
        raise fail(f"{cfg.identity} already exists: backups made with it need it; use --force to make a new one "
                   "(the old one is kept beside it)")
    result = c.run(shlex.join(bk.keygen_argv(cfg)), hide=True, warn=True, in_stream=False)
    if not result.ok:
        raise fail(f"age-keygen failed in {cfg.image}: run `invoke images.build-local --only backup`")
    identity_text = result.stdout
    public = next((line.split(":", 1)[1].strip() for line in identity_text.splitlines()
                   if line.lower().startswith("# public key:")), "")
    if "AGE-SECRET-KEY-" not in identity_text or not public.startswith("age1"):
        raise fail("age-keygen gave no key: check the backup image")
    cfg.identity.parent.mkdir(parents=True, exist_ok=True)
    dotenv.write_private(cfg.identity, identity_text, keep_backup=True)
    values = {"DIFYOPS_BACKUP_AGE_RECIPIENT": public}
    if not settings.get("DIFYOPS_BACKUP_RESTIC_PASSWORD"):
        values["DIFYOPS_BACKUP_RESTIC_PASSWORD"] = envfile.new_secret()
    copy = bk.set_env_values(settings.env_file, values)
    out.print(f"identity written to {cfg.identity} (mode 0600); recipient {public} set in {settings.env_file.name}"
              + (f" (previous file kept as {copy.name})" if copy else ""))
    out.print("keep a copy of the identity OFF this host (a password manager): without it no backup can be restored")


@task(help={"install": "write the entry to /etc/cron.d (default: print it only)",
            "cron_dir": "folder of the cron entry when installing"})
def schedule(c, install=False, cron_dir="/etc/cron.d"):
    """Print (or install) the cron entry for scheduled backups."""
    settings = load_settings(c)
    cfg = _config(settings)
    try:
        text = bk.cron_entry(cfg)
    except bk.BackupError as exc:
        raise fail(str(exc))
    when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(bk.next_run(cfg)))
    if not install:
        print(text, end="")
        out.print(f"# next run: {when}")
        return
    target = Path(cron_dir) / f"difyops-backup-{cfg.stack}"
    if not target.parent.is_dir():
        raise fail(f"{target.parent} does not exist: is cron installed? (apt-get install cron)")
    if target.exists() and target.read_text() != text:
        out.print(f"previous entry kept as {dotenv.backup(target)}")
    target.write_text(text)
    target.chmod(0o644)
    out.print(f"installed {target}; next run {when}")


@task(help={"name": "the set (default: the newest of this stack)"})
def show(c, name=None):
    """Print a set's manifest (versions, sizes, row counts)."""
    settings = load_settings(c)
    cfg = _config(settings)
    try:
        backup = bk.find_set(cfg.folder, name, cfg.stack)
    except bk.BackupError as exc:
        raise fail(str(exc))
    print(json.dumps(backup.manifest(), indent=2, sort_keys=True))


ns = Collection("backup")
for t in (create, list_, verify, restore, prune, keygen, schedule, show):
    ns.add_task(t)
