"""What the development middleware leaves behind: `dev.stop` keeps the named data volumes (a row
written before the stop is there after the next start) and removes the containers' anonymous
volumes; `dev.reset` leaves nothing. The squid image here declares VOLUME paths that
compose/dev/middleware.yml does not map, as images may (the local images map every one), so
anonymous volumes exist to be removed. Ordered: each test builds on the one before."""

from __future__ import annotations

import secrets
import subprocess
import time

import pytest
from devenv import LOCAL_IMAGES, make_env
from testkit import check, record

UNMAPPED = ("/var/log/squid", "/var/spool/squid")
STATE: dict = {}


@pytest.fixture(scope="module")
def volenv(tmp_path_factory):
    env = make_env(tmp_path_factory.mktemp("devvol"), name="devv")
    image = f"difyops-test/devvol-squid:{secrets.token_hex(3)}"
    dockerfile = f"FROM {LOCAL_IMAGES['SSRF_PROXY_IMAGE']}\nVOLUME {' '.join(UNMAPPED)}\n"
    built = subprocess.run(["docker", "build", "-q", "-t", image, "-"], input=dockerfile, capture_output=True,
                           text=True, timeout=180)
    assert built.returncode == 0, built.stderr[-2000:]
    env.extra_env["DEVVOL_IMAGE"] = image
    try:
        yield env
    finally:
        started = time.monotonic()
        env.cleanup()
        # the anonymous volumes seen here, should a failed test have left them (they are this test's)
        leftover = [v.split("=", 1)[1] for v in STATE.get("seen", ())]
        if leftover:
            subprocess.run(["docker", "volume", "rm", *leftover], capture_output=True, timeout=120)
        subprocess.run(["docker", "image", "rm", image], capture_output=True, timeout=120)
        print(f"TIMING cleanup: {time.monotonic() - started:.1f}s")


def start(env) -> None:
    started = time.monotonic()
    env.invoke("middleware.start", *env.set_args(), "--set", f"SSRF_PROXY_IMAGE={env.extra_env['DEVVOL_IMAGE']}",
               timeout=600)
    record("middleware.start (until healthy)", time.monotonic() - started)


def existing(volumes) -> list[str]:
    names = [v.split("=", 1)[-1] for v in volumes]
    out = subprocess.run(["docker", "volume", "inspect", "--format", "{{.Name}}", *names], capture_output=True,
                         text=True) if names else None
    return out.stdout.split() if out else []


def test_running_middleware_has_named_and_anonymous_volumes(volenv):
    start(volenv)
    named, anonymous = volenv.volumes(), volenv.anonymous_volumes()
    expected = sorted(f"{volenv.project}_{v}" for v in ("pgdata", "plugin_storage", "redisdata"))
    check("named data volumes: pgdata, plugin_storage, redisdata", named == expected, named)
    check("the unmapped VOLUME paths got anonymous volumes", sorted(a.split("=")[0] for a in anonymous) == sorted(UNMAPPED),
          anonymous)
    volenv.invoke("dev.db", "--command", "create table difyops_kept (note text); "
                  "insert into difyops_kept values ('written before dev.stop')")
    volenv.invoke("dev.redis", "--command", "SET difyops_kept before-stop")
    STATE.update(named=named, anonymous=anonymous, seen=list(anonymous))


def test_stop_removes_anonymous_volumes_and_keeps_named(volenv):
    started = time.monotonic()
    volenv.invoke("dev.stop", timeout=300)
    record("dev.stop", time.monotonic() - started)
    check("dev.stop: no container left", not volenv.containers(), volenv.containers())
    left = existing(STATE["anonymous"])
    check("dev.stop: no anonymous volume left", not left, left or f"{len(STATE['anonymous'])} removed")
    named = volenv.volumes()
    check("dev.stop: named data volumes kept", named == STATE["named"], named)


def test_data_survives_stop_and_start(volenv):
    start(volenv)
    rows = volenv.invoke("dev.db", "--command", "select note from difyops_kept").stdout
    check("PostgreSQL row written before the stop is there after the start", "written before dev.stop" in rows,
          " ".join(rows.split()))
    value = volenv.invoke("dev.redis", "--command", "GET difyops_kept").stdout.strip()
    check("Redis key written before the stop is there after the start", value == "before-stop", value)
    anonymous = volenv.anonymous_volumes()
    check("the new containers got new anonymous volumes", len(anonymous) == len(UNMAPPED)
          and not set(anonymous) & set(STATE["anonymous"]), anonymous)
    STATE["anonymous"] = anonymous
    STATE["seen"] += anonymous


def test_reset_leaves_nothing(volenv):
    started = time.monotonic()
    volenv.invoke("dev.reset", "--yes", "--no-start", timeout=300)
    record("dev.reset --no-start", time.monotonic() - started)
    networks = subprocess.run(["docker", "network", "ls", "-q", "--filter",
                               f"label=com.docker.compose.project={volenv.project}"], capture_output=True, text=True)
    left = {"containers": volenv.containers(), "named volumes": volenv.volumes(),
            "anonymous volumes": existing(STATE["anonymous"]), "networks": networks.stdout.split()}
    check("dev.reset: no container, volume or network of the project left", not any(left.values()),
          {k: v for k, v in left.items() if v} or "none")
