"""nox sessions. `nox -s tests` needs no Docker; `smoke` builds images and runs the stack."""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
from testkit.leftovers import Watch  # noqa: E402  (standard library only)

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


def _install(session: nox.Session) -> None:
    session.install("-e", ".[test]")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over everything, and a type check of difyops/ (mypy); no Docker."""
    session.install("-e", ".", "ruff==0.17.6", "mypy==2.4.1", "types-PyYAML", "types-requests", "types-psutil",
                    "types-croniter")
    session.run("ruff", "check", "--no-cache", ".")
    session.run("mypy", "difyops")


class Stages:
    """A Docker session's stage timings, logged at its end whatever happened."""

    def __init__(self, session: nox.Session):
        self.session, self.started, self.done = session, time.monotonic(), []

    @contextmanager
    def stage(self, name: str):
        mark = time.monotonic()
        try:
            yield
        finally:
            self.done.append((name, time.monotonic() - mark))

    def run(self, name: str, *args: str, **kwargs) -> None:
        with self.stage(name):
            self.session.run(*args, **kwargs)

    def log(self) -> None:
        self.session.log("stage timings:")
        for name, seconds in self.done + [("whole session", time.monotonic() - self.started)]:
            self.session.log(f"  {name:<52} {seconds:7.1f}s")


def _pytest_leaving_nothing(session: nox.Session, stages: Stages, name: str, *args: str, env=None) -> None:
    """pytest, then the leftover check: the session fails if any container, network or volume of its
    own is still there (tests/testkit/leftovers.py; what is left is listed, then removed)."""
    watch = Watch(Path(session.create_tmp()) / "leftovers").start()
    left = {}
    try:
        with stages.stage(name):
            session.run("pytest", *args, "-p", "no:cacheprovider", "-s", "-v", *session.posargs,
                        env={**watch.env(), **(env or {})})
    finally:
        left, summary = watch.finish()
        if left:
            session.warn(f"leftover check FAILED: the session left {left} (removed now)")
        else:
            session.log(f"leftover check passed: no container, network or volume of the session is left "
                        f"({summary})")
        stages.log()
    if left:
        session.error(f"the session left its own containers, networks or volumes behind: {left}")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit tests: command building, .env generation and checks, tasks through MockContext."""
    _install(session)
    # Validates examples/ci against the vendored GitHub workflow and GitLab CI schemas (offline).
    session.install("check-jsonschema==0.39.0")
    session.run("pytest", "tests/unit", "tests/testkit", *session.posargs)


@nox.session(python=PYTHON, tags=["docker"])
def smoke(session: nox.Session) -> None:
    """Build local images, deploy every cluster with the Dify stand-in, check it through nginx."""
    _install(session)
    stages = Stages(session)
    stages.run("build local images", "invoke", "images.build-local")
    stages.run("build stand-in images", "bash", "tests/standin/build.sh", "all", external=True)
    _pytest_leaving_nothing(session, stages, "smoke tests (deploy, checks, teardown)", "tests/smoke",
                            env={"DIFYOPS_SMOKE_TIMINGS": os.path.join(session.create_tmp(), "timings.txt")})


@nox.session(python=PYTHON, tags=["docker"])
def bench(session: nox.Session) -> None:
    """Benchmarks against same-run baselines; writes bench-results/results.md."""
    _install(session)
    session.run("invoke", "images.build-local")
    session.run("invoke", "images.build-local", "--only", "postgres15")  # benchmarks/adopt.py's official install
    session.run("bash", "tests/standin/build.sh", "all", external=True)
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON, tags=["docker"])
def dev(session: nox.Session) -> None:
    """Development environment: dev.init, hot reload, worker, web, status and stop, for real."""
    session.install("-e", ".[test,dev]")
    missing = [tool for tool in ("node", "pnpm") if not shutil.which(tool)]
    if missing:
        session.error(f"{', '.join(missing)} missing: run scripts/host-setup.sh (installs pnpm) first")
    stages = Stages(session)
    stages.run("build images", "invoke", "images.build-local", "--only", "postgres,redis,squid,adminer",
               "--only", "dify-sandbox,dify-plugin-daemon")
    _pytest_leaving_nothing(session, stages, "dev tests", "tests/dev")


@nox.session(python=PYTHON, tags=["docker"])
def ha(session: nox.Session) -> None:
    """HA data layer: Patroni/etcd/HAProxy and Redis Sentinel, with leader and primary failovers."""
    _install(session)
    stages = Stages(session)
    with stages.stage("build images"):
        session.run("invoke", "images.build-local", "--only",
                    "postgres,redis,squid,patroni,etcd,haproxy,prometheus,redis-exporter")
        session.run("bash", "tests/standin/build.sh", "v1", external=True)
    _pytest_leaving_nothing(session, stages, "ha tests (deploy, failovers, teardown)", "tests/ha")


@nox.session(python=PYTHON, tags=["docker"])
def swarm(session: nox.Session) -> None:
    """A real 3-node Swarm (docker-in-docker): deploy, upgrade under load, lose a node; image bundles."""
    _install(session)
    stages = Stages(session)
    with stages.stage("build images"):
        session.run("invoke", "images.build-local", "--only", "postgres,redis,nginx,squid")
        session.run("bash", "tests/standin/build.sh", "all", external=True)
    _pytest_leaving_nothing(session, stages, "swarm tests (nodes, deploy, upgrade, node loss)",
                            "tests/smoke/test_06_image_bundle.py", "tests/swarm")


@nox.session(python=PYTHON, tags=["docker"], default=False)
def adopt(session: nox.Session) -> None:
    """Adopt an official-layout install (PostgreSQL 15, the stand-in): plan, refusals, run, compare, rollback."""
    _install(session)
    stages = Stages(session)
    # PostgreSQL 15 builds on the Debian 12 base (made here on first use, like the Debian 13 one).
    with stages.stage("build images"):
        session.run("invoke", "images.build-local", "--only", "postgres,postgres15,redis,nginx,squid,backup")
        session.run("bash", "tests/standin/build.sh", "v1", external=True)
    _pytest_leaving_nothing(session, stages, "adopt tests (install, plan, run, compare, rollback)",
                            "tests/adopt")
