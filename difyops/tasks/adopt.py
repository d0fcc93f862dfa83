"""adopt: take over an install of Dify's official docker/ bundle (plan, run, rollback)."""

from __future__ import annotations

import time

from invoke import Collection

from .base import task
from rich.console import Console

from .. import adopt as ad
from .. import adopt_run as ar
from .. import backup as bk
from .. import pgmove, releases
from ..config import load_settings
from ..errors import fail, refuse

out = Console(highlight=False, soft_wrap=True)

FROM_HELP = "the official install's folder: Dify's docker/ (with docker-compose.yaml and .env)"


def _image(settings) -> str:
    try:
        return bk.config_from(settings).image
    except bk.BackupError as exc:
        raise fail(str(exc))


def _plan(c, settings, folder):
    if not folder:
        raise fail("--from is required: the folder of the official install (Dify's docker/)")
    try:
        return ad.make_plan(c, settings, folder, _image(settings), releases.state_dir(settings) / "adopt-staging")
    except ad.AdoptError as exc:
        raise fail(str(exc))


@task(help={"from_": FROM_HELP})
def plan(c, from_=None):
    """Show what adopting an official install would move, change and cost; changes nothing."""
    settings = load_settings(c)
    the_plan = _plan(c, settings, from_)
    stamp = ar.stamp_now()
    problems = list(the_plan.problems)
    if not problems:
        problems = ar.target_problems(c, settings, the_plan, ar.mapped_env_text(settings, the_plan, stamp))
        the_plan.problems = problems
    for line in ad.plan_lines(the_plan, settings):
        out.print(line)
    if problems:
        raise fail(problems[0] if len(problems) == 1 else f"adopt.run would refuse ({len(problems)} problems, listed above)")


@task(
    help={
        "from_": FROM_HELP,
        "stop": "stop the official stack when it is running (after asking, unless --yes)",
        "yes": "do not ask before stopping the official stack",
        "force": "adopt into a stack that already holds data (backup.create first; the current data is kept aside)",
    },
)
def run(c, from_=None, stop=False, yes=False, force=False):
    """Move an official install's data and settings into this stack, verified; the old install stays, stopped."""
    settings = load_settings(c)
    the_plan = _plan(c, settings, from_)
    image = _image(settings)
    stamp = ar.stamp_now()
    mapped = ar.mapped_env_text(settings, the_plan, stamp)
    out.print(f"[bold]pre-flight[/]: {the_plan.install.dir} (Dify {the_plan.install.version}, project "
              f"{the_plan.install.project}) into stack {settings.stack}; nothing is changed yet")
    refuse(ar.preflight(c, settings, the_plan, mapped, image, stop, force), "nothing was changed")
    for flag in the_plan.flags:  # the new stack generates its own for every one of these but SECRET_KEY
        out.print(f"note: {flag}")
    if not yes:
        answer = input(ar.confirm_text(the_plan, settings))
        if answer.strip().lower() not in ("y", "yes"):
            raise fail("not confirmed; nothing was changed")
    if force and the_plan.target_holds:
        out.print(f"--force: backing up stack {settings.stack} first (backup.create)")
        try:
            set_dir = bk.create(c, settings, say=out.print)
        except bk.BackupError as exc:
            raise fail(f"{exc}; --force takes a backup first, so nothing was changed")
        out.print(f"backup {set_dir.name} written")
    started = time.monotonic()
    try:
        state = ar.adopt(c, settings, the_plan, image, mapped, stamp, say=out.print)
    except (ar.RunError, pgmove.MoveError, ad.AdoptError) as exc:
        raise fail(str(exc))
    dbs = state.get("databases") or {}
    db_bytes = sum(d["bytes"] for d in dbs.values())
    db_seconds = sum(d["seconds"] for d in dbs.values())
    files = state.get("files") or {}
    file_bytes = sum(f["bytes"] for f in files.values())
    file_seconds = sum(f["seconds"] for f in files.values())
    out.print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in (state.get("timings") or {}).items()))
    out.print(f"moved: databases {ad.human(db_bytes)} in {db_seconds:.1f}s ({ar.mbps(db_bytes, db_seconds):.1f} MB/s), "
              f"files {ad.human(file_bytes)} in {file_seconds:.1f}s ({ar.mbps(file_bytes, file_seconds):.1f} MB/s), "
              f"redis {state.get('redis', {}).get('keys', 0)} keys")
    out.print(f"adopted {the_plan.install.dir} into stack {settings.stack} in {time.monotonic() - started:.1f}s; "
              f"record {state.get('record')}; `invoke adopt.rollback` starts the official install again")


@task(help={"from_": FROM_HELP + " (default: the one the last adopt.run recorded)"})
def rollback(c, from_=None):
    """Stop this stack (its data kept) and start the adopted official install again, as it was."""
    settings = load_settings(c)
    try:
        ar.rollback(c, settings, from_, say=out.print)
    except (ar.RunError, ad.AdoptError) as exc:
        raise fail(str(exc))


ns = Collection("adopt")
ns.add_task(plan, default=True)
ns.add_task(run)
ns.add_task(rollback)
