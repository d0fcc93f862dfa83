"""web: Dify's web front end from source (as Dify's web scripts)."""

from __future__ import annotations

import shlex

from invoke import Collection

from .base import task
from invoke.exceptions import Exit

from .. import dev
from ..devconfig import load_dev
from . import dev as devtasks


@task(default=True, help={"src": "the Dify checkout (default: DIFY_SRC or what dev.init used)",
                          "port": "port on 127.0.0.1 (default: DEV_WEB_PORT, 3000)",
                          "detach": "run in the background and return once / answers"})
def start(c, src=None, port=None, detach=False):
    """Run `pnpm dev` (same as dev.start-web)."""
    devtasks.start_web(c, src=src, port=port, detach=detach)


def _pnpm(c, src, *args, pty=False):
    ds = load_dev(c, src)
    checkout = dev.ready_checkout(c, ds, need_python=False, need_node=True, need_middleware=False)
    with c.cd(str(checkout / "web")):
        result = c.run(shlex.join(["pnpm", *args]), warn=True, pty=pty)
    if not result.ok:
        raise Exit(code=result.exited or 1)


@task(help={"src": "the Dify checkout (default: DIFY_SRC or what dev.init used)"})
def build(c, src=None):
    """Build the production bundle (pnpm build)."""
    _pnpm(c, src, "build")


@task(help={"src": "the Dify checkout", "port": "port on 127.0.0.1 (default: DEV_WEB_PORT, 3000)"})
def prod(c, src=None, port=None):
    """Serve the production build (pnpm start) on 127.0.0.1."""
    ds = load_dev(c, src)
    port = int(port or ds.port("DEV_WEB_PORT", 3000))
    dev.port_free_or_fail(port, "DEV_WEB_PORT", ds)
    _pnpm(c, src, "start", "--port", str(port), "--hostname", dev.HOST, pty=True)


@task(help={"src": "the Dify checkout", "fix": "let the linter fix what it can"})
def lint(c, src=None, fix=False):
    """Lint the web code (pnpm lint)."""
    _pnpm(c, src, "lint", *(["--fix"] if fix else []))


@task(help={"src": "the Dify checkout", "args": "arguments for the test runner"})
def test(c, src=None, args=""):
    """Run the web tests (pnpm test)."""
    _pnpm(c, src, "test", *shlex.split(args))


ns = Collection("web")
for t in (start, build, prod, lint, test):
    ns.add_task(t)
