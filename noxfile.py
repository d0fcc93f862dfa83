"""nox sessions. `nox -s tests` needs no Docker; `smoke` builds images and runs the stack."""

from __future__ import annotations

import os
import shutil
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
    # Validates examples/ci against the vendored GitHub workflow and GitLab CI schemas (offline).
    session.install("check-jsonschema==0.39.0")
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
    session.run("bash", "tests/standin/build.sh", "all", external=True)
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


@nox.session(python=PYTHON, tags=["docker"])
def bench(session: nox.Session) -> None:
    """Benchmarks against same-run baselines; writes bench-results/results.md."""
    _install(session)
    session.run("invoke", "images.build-local")
    session.run("bash", "tests/standin/build.sh", "all", external=True)
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON, tags=["docker"])
def dev(session: nox.Session) -> None:
    """Development environment: dev.init, hot reload, worker, web, status and stop, for real."""
    session.install("-e", ".[test,dev]")
    missing = [tool for tool in ("node", "pnpm") if not shutil.which(tool)]
    if missing:
        session.error(f"{', '.join(missing)} missing: run scripts/host-setup.sh (installs pnpm) first")
    started = time.monotonic()
    session.run("invoke", "images.build-local", "--only", "postgres,redis,squid,adminer",
                "--only", "dify-sandbox,dify-plugin-daemon")
    session.log(f"images: {time.monotonic() - started:.1f}s")
    session.run("pytest", "tests/dev", "-p", "no:cacheprovider", "-s", "-v", *session.posargs)


@nox.session(python=PYTHON, tags=["docker"])
def ha(session: nox.Session) -> None:
    """HA data layer: Patroni/etcd/HAProxy and Redis Sentinel, with leader and primary failovers."""
    _install(session)
    stages = []
    started = time.monotonic()
    session.run("invoke", "images.build-local", "--only", "postgres,redis,squid,patroni,etcd,haproxy,prometheus")
    session.run("bash", "tests/standin/build.sh", "v1", external=True)
    stages.append(("build images", time.monotonic() - started))
    mark = time.monotonic()
    try:
        session.run("pytest", "tests/ha", "-p", "no:cacheprovider", "-s", "-v", *session.posargs)
    finally:
        stages.append(("ha tests (deploy, failovers, teardown)", time.monotonic() - mark))
        session.log("stage timings:")
        for name, seconds in stages:
            session.log(f"  {name:<45} {seconds:7.1f}s")


@nox.session(python=PYTHON, tags=["docker"])
def swarm(session: nox.Session) -> None:
    """A real 3-node Swarm (docker-in-docker): deploy, upgrade under load, lose a node; image bundles."""
    _install(session)
    started = time.monotonic()
    session.run("invoke", "images.build-local", "--only", "postgres,redis,nginx,squid")
    session.run("bash", "tests/standin/build.sh", "all", external=True)
    try:
        session.run("pytest", "tests/smoke/test_06_image_bundle.py", "tests/swarm", "-p", "no:cacheprovider",
                    "-s", "-v", *session.posargs)
    finally:
        session.log(f"swarm session: {time.monotonic() - started:.1f}s")
