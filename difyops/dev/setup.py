"""What several dev tasks do first: the checkout ready, the migrations."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from .. import envfile
from ..devconfig import DevSettings
from ..errors import Refused, fail
from ..report import Say, quiet
from .checkout import find_source, node_problems, python_problems
from .commands import migrate_argv
from .middleware import middleware_down_problem


def fail_on(problems: list[str], what: str) -> None:
    """Nothing when there is no problem; else the first as the error line, the others listed first."""
    if len(problems) == 1:
        raise fail(problems[0])
    if problems:
        raise Refused(f"{problems[0]} (and {len(problems) - 1} more above); {what}", problems[1:])


def ready_checkout(c: Any, ds: DevSettings, need_python: bool = True, need_node: bool = False,
                   need_middleware: bool = True) -> Path:
    """The checkout, with its tools and (when asked) the middleware ready, or one error line."""
    checkout = find_source(c, ds, clone=False)
    problems = []
    if need_python:
        problems += python_problems(c, checkout)
    if need_node:
        problems += node_problems(c, checkout)
    fail_on(problems, "nothing was started")
    if need_middleware:
        problem = middleware_down_problem(c, ds)
        if problem:
            raise fail(problem)
    return checkout


def migrate_db(c: Any, ds: DevSettings, checkout: Path, say: Say = quiet) -> None:
    """Dify's migrations against the development middleware (`flask db upgrade` with api/.env)."""
    problem = middleware_down_problem(c, ds)
    if problem:
        raise fail(problem)
    path = checkout / "api" / ".env"
    if not path.exists():
        raise fail(f"{path} is missing: run `invoke dev.init` first")
    env = envfile.read(path)
    say("[bold]api[/]: database migrations")
    with c.cd(str(checkout / "api")):
        result = c.run(shlex.join(migrate_argv()), env={**env, "FLASK_APP": env.get("FLASK_APP", "app.py")},
                       warn=True, pty=False)
    if not result.ok:
        raise fail("the database migration failed (output above)")
