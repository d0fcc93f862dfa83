"""Smoke: an upgrade whose migration was skipped under a held lock stops before anything moves;
zero-downtime upgrade v1 -> v2 of the stand-in under load, with a workflow run in flight on the old
worker that completes while it drains; a refused rollback past a migration, and a broken release
that rolls back by itself. Runs on the shared stack, after the route checks, and leaves it working
(on v2)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time

import pytest
import requests
from testkit import ROOT, Streamed, check, healthy, prod_status, row_of

sys.path.insert(0, str(ROOT))
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


def redis_cli(stack, *args: str) -> str:
    """redis-cli in the data cluster's Redis (its container has REDISCLI_AUTH), Dify's db 0."""
    out = subprocess.run(["docker", "exec", f"{stack.name}-data-redis-1", "redis-cli", *args],
                         capture_output=True, text=True, timeout=30)
    return (out.stdout + out.stderr).strip()


def workflow_run(stack, run_id: str) -> dict:
    return requests.get(stack.base + f"/v1/workflows/run/{run_id}", timeout=10).json()


def wait_run(stack, run_id: str, states: tuple[str, ...], seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    doc = {}
    while time.monotonic() < deadline:
        doc = workflow_run(stack, run_id)
        if doc.get("state") in states:
            break
        time.sleep(0.5)
    return doc


def container_of(hostname: str) -> str:
    """The name of the container whose hostname (its short id) ran a task."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"id={hostname}", "--format", "{{.Names}}"],
                         capture_output=True, text=True).stdout.strip()
    return out or "?"



def test_a_migration_skipped_under_a_held_lock_stops_the_upgrade(stack):
    # Dify's `flask upgrade-db` prints "Database migration skipped" and exits 0 while another holds
    # db_upgrade_lock: the v2 schema is then not there, and nothing may move to v2.
    before = app_containers(stack)
    held = redis_cli(stack, "SET", "db_upgrade_lock", "held-by-another-migration", "EX", "300")
    try:
        result = stack.invoke("prod.upgrade", "--api-image", V2["api"], "--web-image", V2["web"], "--no-backup",
                              check=False)
    finally:
        redis_cli(stack, "DEL", "db_upgrade_lock")
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("error:")]
    check("the lock was held as another migration would hold it", held == "OK", held)
    check("prod.upgrade refuses with one line naming the skipped migration and the lock",
          result.returncode != 0 and len(lines) == 1 and "Database migration skipped" in lines[0]
          and "db_upgrade_lock" in lines[0] and "not at its head" in lines[0], lines or result.stderr[-800:])
    check("nothing moved: the same v1 containers serve", app_containers(stack) == before
          and versions(stack) == ("1.13.3-standin.v1",) * 2, versions(stack))
    check("the refusal is in the history", history(stack)[-1]["result"] == "failed", history(stack)[-1].get("message"))


def upgrade_with_work_in_flight(stack, load, run_id: str, release: str, draining: str, *args: str,
                                timeout: int = 900, wait_draining: float = 600, at_draining=None) -> dict:
    """`invoke prod.upgrade ARGS` under `load` (started by the caller) with an SSE stream opened on
    the old api just before and the workflow run `run_id` in flight on the old worker: once the
    upgrade prints the `draining` line, the run is read (it must still be going: the old worker has
    had SIGTERM and takes nothing new), `at_draining()` is called, and the run is released (the
    Redis key standin:workflow:release:<release>). Returns what the checks read."""
    sse = SseStream(stack.base + "/v1/sse?count=60&interval=0.5", count=60, timeout=120)
    sse.start()
    time.sleep(1)
    begun = time.monotonic()
    upgrade = Streamed(stack, "prod.upgrade", *args, timeout=timeout)
    line = upgrade.wait_for_line(draining, wait_draining)
    in_flight = workflow_run(stack, run_id)
    seen = at_draining() if at_draining else None
    time.sleep(3)  # the old worker has had SIGTERM: it takes nothing new, and must keep the run going
    redis_cli(stack, "SET", f"standin:workflow:release:{release}", "1", "EX", "600")
    result = upgrade.finish()
    seconds = time.monotonic() - begun
    redis_cli(stack, "DEL", f"standin:workflow:release:{release}")
    time.sleep(3)  # traffic after the switch counts too
    outcome = load.stop()
    sse.join(timeout=120)
    return {"result": result, "seconds": seconds, "draining": line, "in_flight": in_flight, "at_draining": seen,
            "outcome": outcome, "sse": sse}


def test_upgrade_under_load_loses_nothing(stack):
    before = versions(stack)
    check("the stack starts on v1", before == ("1.13.3-standin.v1",) * 2, before)
    # A workflow run in flight on the v1 worker (Dify 1.13 runs them in workers): it must finish while
    # that worker drains. It waits for a signal (at most 300 s), given once the drain has begun.
    run = requests.post(stack.base + "/v1/workflows/run", timeout=10,
                        json={"inputs": {"q": "across the upgrade"}, "seconds": 300, "until": "upgrade"}).json()
    started = wait_run(stack, run["workflow_run_id"], ("STARTED", "SUCCESS", "FAILURE"), 60)
    old_worker = container_of(started.get("worker") or "-")
    check("a workflow run is in flight on the v1 worker", started.get("state") == "STARTED"
          and started.get("queue") == "workflow_based_app_execution" and old_worker.startswith(f"{stack.name}-worker-"),
          {k: started.get(k) for k in ("state", "queue", "worker")} | {"container": old_worker})
    load = Load(stack.base, LOAD_PATHS, threads=4, seconds=300).start()
    # A long stream opened on the old api must finish while that replica drains; so must the run.
    moved = upgrade_with_work_in_flight(
        stack, load, run["workflow_run_id"], "upgrade", rf"draining (and stopping )?{stack.name}-worker ",
        "--api-image", V2["api"], "--web-image", V2["web"], "--no-backup",
        at_draining=lambda: subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}", old_worker],
                                           capture_output=True, text=True).stdout.strip())
    result, upgrade_seconds, outcome, sse = moved["result"], moved["seconds"], moved["outcome"], moved["sse"]
    draining, in_flight, worker_state = moved["draining"], moved["in_flight"], moved["at_draining"]
    print(result.stderr[-3000:])
    check("the old worker was draining with the run still going", draining is not None
          and in_flight.get("state") == "STARTED" and worker_state == "running",
          {"line": draining, "run": in_flight.get("state"), "old worker": worker_state})
    done = wait_run(stack, run["workflow_run_id"], ("SUCCESS", "FAILURE"), 30)
    outputs = done.get("outputs") or {}
    check("the workflow run in flight completed on the old worker as it drained", done.get("state") == "SUCCESS"
          and outputs.get("released") is True and outputs.get("image_version") == "v1"
          and outputs.get("worker") == started.get("worker"),
          {k: done.get(k) for k in ("state", "error")} | {k: outputs.get(k) for k in ("released", "image_version", "elapsed")})
    new_worker = subprocess.run(["docker", "ps", "--filter", f"label=com.docker.compose.project={stack.name}-worker-green",
                                 "--filter", "label=com.docker.compose.service=worker", "--format", "{{.Names}}"],
                                capture_output=True, text=True).stdout.split()
    grace = subprocess.run(["docker", "inspect", "-f", "{{.Config.StopTimeout}}", *new_worker[:1]],
                           capture_output=True, text=True).stdout.strip()
    check("a worker is given the longest workflow run before it is killed (WORKFLOW_MAX_EXECUTION_TIME 1200 + 30 s)",
          grace == "1230", {"worker": new_worker[:1], "StopTimeout": grace})
    check("prod.upgrade exits 0", result.returncode == 0, f"rc {result.returncode} in {upgrade_seconds:.0f}s: "
          f"{(result.stdout + result.stderr).strip().splitlines()[-1:]}")
    check("no request failed during the upgrade", outcome.total > 100 and outcome.failed == 0, outcome.summary())
    check("an SSE stream in flight on the old api completed", sse.complete, sse.describe())
    after = versions(stack)
    check("api and web now report v2", after == ("1.13.3-standin.v2",) * 2, after)
    running = app_containers(stack)
    check("only v2 app containers are left", not [line for line in running if ":v1" in line], running)
    rows = prod_status(stack.invoke)
    app = {service: row_of(rows, service) for service in ("api", "web", "worker", "worker_beat")}
    check("prod.status --json shows the new release's api, web, worker and beat running, healthy, 1/1",
          all(healthy(row, replicas=1) for row in app.values()),
          {s: (r.get("state"), r.get("health"), r.get("replicas")) for s, r in app.items()})
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
    # (Its arguments still reach the entrypoint: the jobs difyops runs with it, such as `db current`, work.)
    dockerfile = ('FROM difyops-standin/dify-api:v2\n'
                  'ENTRYPOINT ["/bin/bash", "-c", "DIFY_PORT=5999 exec /bin/bash /entrypoint.sh \\"$@\\"", "broken"]\n')
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
