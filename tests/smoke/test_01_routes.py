"""Smoke: the full topology, deployed with the Dify stand-in, answers through nginx on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time

import requests
from smokelib import check

TIMEOUT = 10


def get(stack, path, **kw):
    return requests.get(stack.base + path, timeout=kw.pop("timeout", TIMEOUT), **kw)


def test_every_container_healthy(stack):
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"name=^{stack.name}-", "--format", "{{.Names}} {{.Status}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()
    unhealthy = [line for line in out if "(healthy)" not in line]
    check("every container is healthy", len(out) >= 10 and not unhealthy,
          f"{len(out)} containers, not healthy: {unhealthy or 'none'}")


def test_status_table_matches(stack):
    result = stack.invoke("prod.status")
    rows = [ln for ln in result.stdout.splitlines() if "healthy" in ln]
    check("prod.status lists every service healthy", len(rows) == 10, f"{len(rows)} healthy rows")


def test_web_root(stack):
    r = get(stack, "/")
    check("/ serves the web page", r.status_code == 200 and "Dify stand-in web" in r.text,
          f"{r.status_code} {r.text[:60]!r}")
    r = get(stack, "/explore/apps")
    check("/explore goes to web", r.status_code == 200 and "Dify stand-in web" in r.text, r.status_code)


def test_api_routes(stack):
    for path in ("/console/api/ping", "/v1/ping", "/api/ping", "/mcp/ping", "/triggers/ping"):
        r = get(stack, path)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        check(f"{path} reaches the api", r.status_code == 200 and body.get("served_by") == "api",
              f"{r.status_code} {body}")


def test_plugin_daemon_route(stack):
    r = requests.post(stack.base + "/e/hook-123/run", json={}, timeout=TIMEOUT)
    body = r.json()
    check("/e/ reaches the plugin daemon with Dify-Hook-Url", r.status_code == 200
          and body.get("served_by") == "plugin_daemon" and "/e/hook-123/run" in str(body.get("dify_hook_url")),
          body)


def test_write_and_read_back(stack):
    r = requests.post(stack.base + "/console/api/messages", json={"body": "hello from smoke"}, timeout=TIMEOUT)
    msg_id = r.json().get("id")
    back = get(stack, f"/console/api/messages/{msg_id}").json()
    check("a row written through the gateway reads back", back.get("body") == "hello from smoke", back)


def test_support_cluster_reachable_from_api(stack):
    sandbox = get(stack, "/console/api/sandbox").json()
    check("api reaches the sandbox (ssrf network) with its key", sandbox.get("sandbox_status") == 200,
          {k: sandbox.get(k) for k in ("sandbox_url", "sandbox_status")})
    plugin = get(stack, "/console/api/plugin").json()
    check("api reaches the plugin daemon with its key", plugin.get("plugin_daemon_status") == 200,
          {k: plugin.get(k) for k in ("plugin_daemon_url", "plugin_daemon_status")})


def test_celery_task_completes(stack):
    r = requests.post(stack.base + "/v1/tasks", json={"input": "smoke"}, timeout=TIMEOUT)
    task_id = r.json()["task_id"]
    deadline = time.monotonic() + 60
    state = {}
    while time.monotonic() < deadline:
        state = get(stack, f"/v1/tasks/{task_id}").json()
        if state.get("state") in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.5)
    expected = hashlib.sha256(b"smoke").hexdigest()
    check("a Celery task runs through Redis and records its result", state.get("state") == "SUCCESS"
          and state.get("result") == expected, {k: state.get(k) for k in ("state", "queue", "result")})


def test_sse_arrives_event_by_event(stack):
    count, interval = 10, 0.3
    arrivals = []
    started = time.monotonic()
    with requests.get(stack.base + f"/v1/sse?count={count}&interval={interval}", stream=True,
                      timeout=30) as r:
        accel = r.headers.get("X-Accel-Buffering")
        for line in r.iter_lines(chunk_size=1):
            if line.startswith(b"data:") and json.loads(line[5:]).get("event") == "message":
                arrivals.append(time.monotonic() - started)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # Buffered, the events would land together at the end: gaps near zero.
    steady = len(arrivals) == count and min(gaps) > interval * 0.5
    check("SSE events arrive one by one, not in a burst", steady and accel == "no",
          f"{len(arrivals)} events, gaps {min(gaps):.2f}..{max(gaps):.2f}s, X-Accel-Buffering={accel}")


def test_upload_lands_in_storage_and_comes_back(stack):
    # Above nginx's 1 MB default and within UPLOAD_FILE_SIZE_LIMIT (30 MB in the smoke .env):
    # the gateway's body limit must follow Dify's upload limit.
    data = os.urandom(20 * 1024 * 1024)
    r = requests.post(stack.base + "/console/api/files/upload", files={"file": ("smoke.bin", data)},
                      timeout=60)
    check("a 20 MB upload passes the gateway (no 413)", r.status_code in (200, 201), r.status_code)
    info = r.json()
    back = get(stack, f"/files/{info['id']}", timeout=60)
    same = hashlib.sha256(back.content).hexdigest() == hashlib.sha256(data).hexdigest()
    check("the upload comes back byte for byte", back.status_code == 200 and same,
          f"{back.status_code}, {len(back.content)} bytes")
    # The file is in the shared storage volume: the worker (another cluster) sees it.
    key = info.get("key")
    seen = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{stack.name}-storage:/s:ro", "--entrypoint", "sh",
         "difyops-standin/dify-api:v1", "-c", f"stat -c %s /s/{key}"],
        capture_output=True, text=True,
    )
    check("the upload is in the storage volume", seen.stdout.strip() == str(len(data)),
          f"{key}: {seen.stdout.strip() or seen.stderr.strip()[-200:]}")


def test_migrations_ran_once(stack):
    out = subprocess.run(
        ["docker", "exec", f"{stack.name}-data-db_postgres-1",
         "psql", "-U", "postgres", "-d", "dify", "-Atc", "select count(*) from stand_in_migrations"],
        capture_output=True, text=True,
    )
    check("migrations ran as a one-shot job", out.returncode == 0 and int(out.stdout.strip() or 0) >= 1,
          out.stdout.strip() or out.stderr.strip()[-200:])


def test_logs_filter_by_level(stack):
    everything = stack.invoke("prod.logs", "api", "--tail", "500", "--level", "info").stdout.splitlines()
    warnings = stack.invoke("prod.logs", "api", "--tail", "500", "--level", "warning").stdout.splitlines()
    info_lines = [ln for ln in warnings if '"severity": "INFO"' in ln]
    check("prod.logs --level filters the api's JSON logs", len(everything) > len(warnings) and not info_lines,
          f"{len(everything)} lines at info and above, {len(warnings)} at warning and above")
