"""Smoke: zero-downtime upgrade v1 -> v2 of the stand-in under load, a refused rollback past a
migration, and a broken release that rolls back by itself. Runs on the shared stack, after the
route checks, and leaves it working (on v2)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from smokelib import check

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.loadgen import Load, SseStream  # noqa: E402

V2 = {"api": "difyops-standin/dify-api:v2", "web": "difyops-standin/dify-web:v2"}
LOAD_PATHS = ["/v1/ping", "/", "/console/api/ping", "/api/ping"]


def versions(stack) -> tuple[str, str]:
    api = requests.get(stack.base + "/v1/ping", timeout=10).json().get("version", "?")
    web = requests.get(stack.base + "/_standin/info", timeout=10).json().get("version", "?")
    return api, web


def app_containers(stack) -> list[str]:
    out = subprocess.run(["docker", "ps", "--filter", f"name=^{stack.name}-(api|web|worker)",
                          "--format", "{{.ID}} {{.Names}} {{.Image}}"], capture_output=True, text=True, check=True)
    return sorted(out.stdout.split("\n"))


def history(stack) -> list[dict]:
    out = stack.invoke("prod.history", "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_upgrade_under_load_loses_nothing(stack):
    before = versions(stack)
    check("the stack starts on v1", before == ("1.13.3-standin.v1",) * 2, before)
    load = Load(stack.base, LOAD_PATHS, threads=4, seconds=300).start()
    # A long stream opened on the old api: it must finish while that replica drains.
    sse = SseStream(stack.base + "/v1/sse?count=60&interval=0.5", count=60, timeout=120)
    sse.start()
    time.sleep(1)
    started = time.monotonic()
    result = stack.invoke("prod.upgrade", "--api-image", V2["api"], "--web-image", V2["web"], "--no-backup",
                          check=False)
    upgrade_seconds = time.monotonic() - started
    time.sleep(3)  # traffic after the switch counts too
    outcome = load.stop()
    sse.join(timeout=120)
    print(result.stderr[-3000:])
    check("prod.upgrade exits 0", result.returncode == 0, f"rc {result.returncode} in {upgrade_seconds:.0f}s: "
          f"{(result.stdout + result.stderr).strip().splitlines()[-1:]}")
    check("no request failed during the upgrade", outcome.total > 100 and outcome.failed == 0, outcome.summary())
    check("an SSE stream in flight on the old api completed", sse.complete, sse.describe())
    after = versions(stack)
    check("api and web now report v2", after == ("1.13.3-standin.v2",) * 2, after)
    running = app_containers(stack)
    check("only v2 app containers are left", not [line for line in running if ":v1" in line], running)
    status = stack.invoke("prod.status").stdout
    rows = [ln for ln in status.splitlines() if " api " in ln or " web " in ln or " worker " in ln]
    check("prod.status shows the new release healthy", len(rows) >= 3 and all("healthy" in r and "1/1" in r
          for r in rows), rows)
    env = stack.env_file.read_text()
    check(".env records the new images", f"DIFY_API_IMAGE={V2['api']}" in env and f"DIFY_WEB_IMAGE={V2['web']}" in env,
          [ln for ln in env.splitlines() if ln.startswith(("DIFY_API_IMAGE", "DIFY_WEB_IMAGE"))])
    last = history(stack)[-1]
    check("the upgrade is in the deploy history", last["action"] == "upgrade" and last["result"] == "ok"
          and last["to"]["DIFY_API_IMAGE"] == V2["api"], {k: last.get(k) for k in ("action", "result", "to")})
    schema = requests.get(stack.base + "/v1/ping", timeout=10).json().get("schema", {})
    check("the v2 migration ran before traffic moved", "0004" in json.dumps(schema), schema)


def test_rollback_past_a_migration_is_refused(stack):
    before = app_containers(stack)
    result = stack.invoke("prod.rollback", check=False)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("error:")]
    check("prod.rollback refuses with one line naming backup.restore", result.returncode != 0 and len(lines) == 1
          and "backup.restore" in lines[0], lines or result.stderr[-500:])
    check("nothing changed: the same containers serve", app_containers(stack) == before, app_containers(stack))
    check("v2 is still serving", versions(stack) == ("1.13.3-standin.v2",) * 2, versions(stack))
    check("the refusal is in the history", history(stack)[-1]["result"] == "refused", history(stack)[-1]["result"])


@pytest.fixture
def broken_image():
    tag = f"difyops-test/broken-api:{secrets.token_hex(3)}"
    # The api listens on another port than its healthcheck asks: never healthy.
    dockerfile = ('FROM difyops-standin/dify-api:v2\n'
                  'ENTRYPOINT ["/bin/bash", "-c", "DIFY_PORT=5999 exec /bin/bash /entrypoint.sh"]\n')
    subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, check=True,
                   capture_output=True)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_broken_release_rolls_back_by_itself(stack, broken_image):
    before = app_containers(stack)
    load = Load(stack.base, LOAD_PATHS, threads=3, seconds=300).start()
    result = stack.invoke("prod.upgrade", "--api-image", broken_image, "--timeout", "30", "--no-backup", check=False)
    time.sleep(2)
    outcome = load.stop()
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("error:")]
    if result.returncode == 0:  # what happened, whole, before the check fails
        print(result.stdout, result.stderr, subprocess.run(
            ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={stack.name}-api-blue",
             "--filter", f"label=com.docker.compose.project={stack.name}-api-green", "--format",
             "{{.Names}} {{.Image}} {{.Status}}"], capture_output=True, text=True).stdout, sep="\n")
    check("a release that never gets healthy exits non-zero with one line", result.returncode != 0
          and len(lines) == 1 and "rolled back" in lines[0], lines or result.stderr[-500:])
    check("the old release is still serving", versions(stack) == ("1.13.3-standin.v2",) * 2, versions(stack))
    check("the new replicas are gone, the old ones untouched", app_containers(stack) == before, app_containers(stack))
    check("no request failed while the broken release came and went", outcome.failed == 0, outcome.summary())
    check("the automatic rollback is in the history", history(stack)[-1]["result"] == "rolled-back",
          history(stack)[-1].get("message"))
    env = stack.env_file.read_text()
    check(".env still names the serving release", f"DIFY_API_IMAGE={V2['api']}" in env,
          [ln for ln in env.splitlines() if ln.startswith("DIFY_API_IMAGE")])
