"""nox sessions. `nox -s tests` needs no Docker; `smoke` builds images and runs the stack."""

from __future__ import annotations

import os
import time

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


def _install(session: nox.Session) -> None:
    session.install("-e", ".[test]")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit tests: command building, .env generation and checks, tasks through MockContext."""
    _install(session)
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session(python=PYTHON, tags=["docker"])
def smoke(session: nox.Session) -> None:
    """Build local images, deploy every cluster with the Dify stand-in, check it through nginx."""
    _install(session)
    stages = []
    started = time.monotonic()
    session.run("invoke", "images.build-local")
    stages.append(("build local images", time.monotonic() - started))
    mark = time.monotonic()
    session.run("bash", "tests/standin/build.sh", "all")
    stages.append(("build stand-in images", time.monotonic() - mark))
    mark = time.monotonic()
    try:
        session.run("pytest", "tests/smoke", "-p", "no:cacheprovider", "-s", "-v", *session.posargs,
                    env={"DIFYOPS_SMOKE_TIMINGS": os.path.join(session.create_tmp(), "timings.txt")})
    finally:
        stages.append(("smoke tests (deploy, checks, teardown)", time.monotonic() - mark))
        session.log("stage timings:")
        for name, seconds in stages:
            session.log(f"  {name:<45} {seconds:7.1f}s")
