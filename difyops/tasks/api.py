"""api: Dify's api from source (as Dify's dev/start-api and api scripts)."""

from __future__ import annotations

import shlex

from invoke import Collection

from .base import task
from invoke.exceptions import Exit

from .. import dev, envfile
from ..devconfig import load_dev
from . import dev as devtasks
from .dev import err


@task(default=True, help={"src": "the Dify checkout (default: DIFY_SRC or what dev.init used)",
                          "port": "port on 127.0.0.1 (default: DEV_API_PORT, 5001)",
                          "detach": "run in the background and return once /health answers"})
def start(c, src=None, port=None, detach=False):
    """Run the api with flask --debug (same as dev.start-api)."""
    devtasks.start_api(c, src=src, port=port, detach=detach)


@task(help={"src": "the Dify checkout", "queues": "comma-separated Celery queues (default: Dify's list)",
            "no_reload": "do not restart on code changes", "detach": "run in the background"})
def worker(c, src=None, queues=None, no_reload=False, detach=False):
    """Run the Celery worker (same as dev.start-worker)."""
    devtasks.start_worker(c, src=src, queues=queues, no_reload=no_reload, detach=detach)


@task(help={"src": "the Dify checkout (default: DIFY_SRC or what dev.init used)"})
def migrate(c, src=None):
    """Apply the database migrations (uv run flask db upgrade)."""
    ds = load_dev(c, src)
    dev.migrate_db(c, ds, dev.find_source(c, ds, clone=False), say=err.print)


def _in_api(c, src, argv, pty=True):
    ds = load_dev(c, src)
    checkout = dev.ready_checkout(c, ds, need_middleware=False)
    env = envfile.read(checkout / "api" / ".env") if (checkout / "api" / ".env").exists() else {}
    with c.cd(str(checkout / "api")):
        result = c.run(shlex.join(argv), env=env, warn=True, pty=pty)
    if not result.ok:
        raise Exit(code=result.exited or 1)


@task(help={"src": "the Dify checkout (default: DIFY_SRC or what dev.init used)"})
def shell(c, src=None):
    """Open `flask shell` in the api's environment."""
    _in_api(c, src, ["uv", "run", "flask", "shell"])


@task(help={"src": "the Dify checkout", "args": "arguments for pytest (default: tests/unit_tests)"})
def test(c, src=None, args="tests/unit_tests"):
    """Run the api's tests with pytest (uv run pytest)."""
    _in_api(c, src, ["uv", "run", "pytest", *shlex.split(args)], pty=False)


ns = Collection("api")
for t in (start, worker, migrate, shell, test):
    ns.add_task(t)
