"""Smoke: an upgrade across Dify releases under load, on a stack of its own. The stack is deployed as
Dify 1.13.3 with the v1 stand-in (a TEST DOUBLE), then `prod.upgrade --version 1.16.1` moves it to
the v3 stand-in, which models 1.16.1: its new services (api_websocket, agent_backend, local_sandbox,
agent_ssrf_proxy) started and healthy before traffic moves, the plugin daemon 0.5.3 -> 0.6 (which
migrates its own database in its image's command) and the sandbox moved with the api on the same
storage, the migration verified, the gateway's /socket.io/ switched to the websocket api. Under load,
with an SSE stream on the old api and a workflow run on the old worker in flight, nothing fails; the
phases print their timings; then a rollback past the migration is refused."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import requests
from smokestack import Stack, make_env
from test_80_upgrade import LOAD_PATHS, container_of, upgrade_with_work_in_flight, wait_run
from testkit import ROOT, check, free_port, record, remove_owned, unique_name, websocket_echo

sys.path.insert(0, str(ROOT))
from benchmarks.loadgen import Load  # noqa: E402
from difyops import envfile, release_sets  # noqa: E402
from difyops import rollout_release as rr  # noqa: E402

TARGET = release_sets.load("1.16.1")
V3 = {"DIFY_API_IMAGE": "difyops-standin/dify-api:v3", "DIFY_WEB_IMAGE": "difyops-standin/dify-web:v3",
      "DIFY_SANDBOX_IMAGE": "difyops-standin/dify-sandbox:v3",
      "DIFY_PLUGIN_DAEMON_IMAGE": "difyops-standin/dify-plugin-daemon:v3",
      "DIFY_AGENT_BACKEND_IMAGE": "difyops-standin/dify-agent-backend:v3",
      "DIFY_AGENT_LOCAL_SANDBOX_IMAGE": "difyops-standin/dify-agent-local-sandbox:v3"}
# Every service of 1.16.1, by the compose project it runs in after the upgrade (the app clusters in
# their new colour).
AFTER = {"api-green": ("api", "api_websocket"), "worker-green": ("worker", "worker_beat"), "web-green": ("web",),
         "support": ("sandbox", "ssrf_proxy", "plugin_daemon", "agent_backend", "local_sandbox", "agent_ssrf_proxy")}
NOT_DIFY = ("ssrf_proxy", "agent_ssrf_proxy")  # squid: the local build, not a stand-in


def containers(project: str, service: str) -> list[dict]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                          "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}"],
                         capture_output=True, text=True, timeout=60).stdout.split()
    found = []
    for name in out:
        state = subprocess.run(["docker", "inspect", "--format", "{{json .State}} {{.Config.Image}}", name],
                               capture_output=True, text=True, timeout=60).stdout.strip()
        doc, _, image = state.rpartition(" ")
        health = (json.loads(doc or "{}").get("Health") or {}).get("Status", "none")
        found.append({"name": name, "status": json.loads(doc or "{}").get("Status"), "health": health, "image": image})
    return found


def versions(stack) -> tuple[str, str]:
    api = requests.get(stack.base + "/v1/ping", timeout=10).json().get("version", "?")
    web = requests.get(stack.base + "/_standin/info", timeout=10).json().get("version", "?")
    return api, web


def daemon_boots(stack) -> list[dict]:
    """The plugin daemon's boots as its storage volume recorded them (one JSON line per start)."""
    out = subprocess.run(["docker", "exec", f"{stack.name}-support-plugin_daemon-1", "cat",
                          "/app/storage/standin/boots.log"], capture_output=True, text=True, timeout=60).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def old_stack(tmp_path_factory):
    name = unique_name("smokeru")
    port = free_port()
    st = Stack(name, make_env(tmp_path_factory.mktemp("release-upgrade"), name, port, {"DIFY_VERSION": "1.13.3"}), port)
    started = time.monotonic()
    try:
        st.invoke("prod.deploy", timeout=900)
        record("release upgrade: deploy 1.13.3 (v1)", time.monotonic() - started)
        yield st
    finally:
        if not st.torn_down:
            st.teardown()
        remove_owned(name)


@pytest.fixture(scope="module")
def upgraded(old_stack):
    """prod.upgrade --version 1.16.1 under load, with a stream and a workflow run in flight."""
    st = old_stack
    before = {"versions": versions(st), "boots": daemon_boots(st)}
    run = requests.post(st.base + "/v1/workflows/run", timeout=10,
                        json={"inputs": {"q": "across releases"}, "seconds": 300, "until": "release"}).json()
    started = wait_run(st, run["workflow_run_id"], ("STARTED", "SUCCESS", "FAILURE"), 60)
    started["container"] = container_of(started.get("worker") or "-")  # gone once the old worker drained
    load = Load(st.base, LOAD_PATHS, threads=4, seconds=420).start()
    images = [arg for key, ref in V3.items() for arg in ("--image", f"{key}={ref}")]
    moved = upgrade_with_work_in_flight(st, load, run["workflow_run_id"], "release", rf"draining {st.name}-worker ",
                                        "--version", TARGET.release, *images, "--no-backup", wait_draining=800)
    result, seconds, outcome, sse = moved["result"], moved["seconds"], moved["outcome"], moved["sse"]
    draining, in_flight = moved["draining"], moved["in_flight"]
    print(result.stderr[-6000:])
    record("release upgrade 1.13.3 -> 1.16.1 under load", seconds)
    return {"before": before, "run": run, "started": started, "draining": draining, "in_flight": in_flight,
            "result": result, "outcome": outcome, "sse": sse}


PHASE_LINE = re.compile(r"^\[upgrade\] phase (\d+)/(\d+) (.+?) \.\.\. (\d+\.\d)s$")


def test_the_stack_starts_as_1_13_3(old_stack, upgraded):
    before = upgraded["before"]
    check("the stack starts on the 1.13.3 stand-in (v1), its plugin daemon booted once on its storage",
          before["versions"] == ("1.13.3-standin.v1",) * 2 and len(before["boots"]) >= 1, before)
    started = upgraded["started"]
    check("a workflow run is in flight on the v1 worker", started.get("state") == "STARTED"
          and started["container"].startswith(f"{old_stack.name}-worker-"),
          {k: started.get(k) for k in ("state", "queue", "worker", "container")})


def test_the_upgrade_prints_its_phases_with_timings(upgraded):
    result = upgraded["result"]
    phases = {m.group(3): float(m.group(4)) for m in map(PHASE_LINE.match, result.stderr.splitlines()) if m}
    for name, secs in phases.items():
        record(f"release upgrade phase {name}", secs)
    check("prod.upgrade --version 1.16.1 exits 0", result.returncode == 0,
          f"rc {result.returncode}: {(result.stdout + result.stderr).strip().splitlines()[-1:]}")
    check("every phase printed its number, name and seconds, in order", list(phases) == list(rr.PHASES), phases)


def test_nothing_failed_under_load_and_the_stream_and_run_completed(old_stack, upgraded):
    outcome, sse = upgraded["outcome"], upgraded["sse"]
    check("no request failed during the release upgrade", outcome.total > 100 and outcome.failed == 0, outcome.summary())
    check("an SSE stream in flight on the old api completed", sse.complete, sse.describe())
    check("the old worker was draining with the run still going", upgraded["draining"] is not None
          and upgraded["in_flight"].get("state") == "STARTED", {"line": upgraded["draining"],
                                                                "run": upgraded["in_flight"].get("state")})
    done = wait_run(old_stack, upgraded["run"]["workflow_run_id"], ("SUCCESS", "FAILURE"), 30)
    outputs = done.get("outputs") or {}
    check("the workflow run in flight completed on the old (1.13.3) worker as it drained",
          done.get("state") == "SUCCESS" and outputs.get("released") is True and outputs.get("image_version") == "v1",
          {k: done.get(k) for k in ("state", "error")} | {k: outputs.get(k) for k in ("released", "image_version")})


def test_every_service_of_1_16_1_is_healthy_after(old_stack, upgraded):
    seen = {}
    for project, services in AFTER.items():
        for service in services:
            seen[service] = containers(f"{old_stack.name}-{project}", service)
    def good(service, found):
        return bool(found) and all(c["status"] == "running" and c["health"] == "healthy"
                                   and (service in NOT_DIFY or c["image"].endswith(":v3")) for c in found)
    check("every service of Dify 1.16.1 runs (its v3 stand-in image) and is healthy",
          all(good(s, f) for s, f in seen.items()), {s: [(c["health"], c["image"]) for c in f] for s, f in seen.items()})
    left = subprocess.run(["docker", "ps", "-a", "--filter", f"name=^{old_stack.name}-", "--format", "{{.Names}} {{.Image}}"],
                          capture_output=True, text=True, timeout=60).stdout.split("\n")
    check("no container of the 1.13.3 release is left", not [ln for ln in left if ":v1" in ln], left)
    check("api and web report the 1.16.1 stand-in", versions(old_stack) == ("1.16.1-standin.v3",) * 2,
          versions(old_stack))
    schema = requests.get(old_stack.base + "/v1/ping", timeout=10).json().get("schema", {})
    check("the 1.16.1 migration ran before traffic moved", "0005" in json.dumps(schema), schema)


def test_the_plugin_daemon_moved_on_its_storage_and_migrated_itself(old_stack, upgraded):
    boots = daemon_boots(old_stack)
    before = upgraded["before"]["boots"]
    check("the 0.6 daemon booted on the same storage volume (its 0.5.3 boots are still there, and its own after)",
          len(boots) > len(before) and boots[:len(before)] == before
          and boots[-1].get("hostname") not in {b.get("hostname") for b in before},
          {"before": before[-1:], "after": boots[-1:], "boots": (len(before), len(boots))})
    logs = subprocess.run(["docker", "logs", f"{old_stack.name}-support-plugin_daemon-1"], capture_output=True,
                          text=True, timeout=60)
    check("its image's own `commandline migrate` ran before /app/main",
          "database migration completed successfully" in logs.stdout + logs.stderr, (logs.stdout + logs.stderr)[-600:])


def test_socket_io_reaches_the_websocket_api_after_the_gateway_switch(old_stack, upgraded):
    # Before the switch the gateway sent /socket.io/ to the api, whose plain gevent worker answers an
    # upgrade with 400 (no 101): a 101 comes only from the websocket api's GeventWebSocketWorker.
    status, sent, got = websocket_echo(old_stack.port)
    logs = {service: subprocess.run(["docker", "logs", f"{old_stack.name}-api-green-{service}-1"], capture_output=True,
                                    text=True, timeout=60) for service in ("api", "api_websocket")}
    seen = {service: "GET /socket.io/" in out.stdout + out.stderr for service, out in logs.items()}
    check("/socket.io/ through the gateway upgrades (101) at the websocket api, not at the api",
          status.startswith("101") and seen == {"api": False, "api_websocket": True},
          {"status": status, "logged by": seen, "sent": sent.decode(), "echoed": got.decode(errors="replace")})


def test_the_switched_routes_outlive_a_gateway_restart(old_stack, upgraded):
    # The switch edited the running gateway; its container still carries 1.13.3's variables. A
    # restart (docker restart, the host rebooting) renders the templates again: /socket.io/ must
    # still reach the websocket api, not the api again.
    gateway = f"{old_stack.name}-gateway-nginx-1"
    restarted = subprocess.run(["docker", "restart", gateway], capture_output=True, text=True, timeout=120)
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:  # bounded: the gateway answers again within a minute
        try:
            status, sent, got = websocket_echo(old_stack.port)
            break
        except OSError:
            time.sleep(1)
    rendered = subprocess.run(["docker", "exec", gateway, "grep", "-h", "^set \\$dify_", rr.GATEWAY_ROUTES_FILE],
                              capture_output=True, text=True, timeout=30).stdout.split("\n")
    check("after `docker restart` of the gateway, /socket.io/ still upgrades (101) at the websocket api",
          restarted.returncode == 0 and status.startswith("101") and "set $dify_socket_io api_websocket:5001;" in rendered,
          {"restart": restarted.returncode, "status": status, "routes": [ln for ln in rendered if ln]})


def test_env_names_the_release_and_its_new_secrets(old_stack, upgraded):
    values = envfile.values_of(old_stack.env_file.read_text())
    check(".env says DIFY_VERSION=1.16.1 and the v3 images", values.get("DIFY_VERSION") == "1.16.1"
          and all(values.get(k) == v for k, v in V3.items()), {k: values.get(k) for k in ("DIFY_VERSION", *V3)})
    problems = {name: secret.problem(values.get(name)) for name, secret in TARGET.secrets.items()}
    check("every secret of 1.16.1 is in .env in its form", not any(problems.values()), problems)
    copies = sorted(old_stack.env_file.parent.glob(".env.bak.*"))
    check("a copy of the 1.13.3 .env was kept beside it, and the upgrade said where",
          bool(copies) and envfile.values_of(copies[0].read_text()).get("DIFY_VERSION") == "1.13.3"
          and str(copies[0]) in upgraded["result"].stderr, [str(p) for p in copies])


def test_rollback_past_the_release_migration_is_refused(old_stack, upgraded):
    before = subprocess.run(["docker", "ps", "--filter", f"name=^{old_stack.name}-", "--format", "{{.ID}} {{.Image}}"],
                            capture_output=True, text=True, timeout=60).stdout
    result = old_stack.invoke("prod.rollback", check=False)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("error:")]
    check("prod.rollback to 1.13.3 refuses with one line naming backup.restore", result.returncode != 0
          and len(lines) == 1 and "backup.restore" in lines[0], lines or result.stderr[-600:])
    after = subprocess.run(["docker", "ps", "--filter", f"name=^{old_stack.name}-", "--format", "{{.ID}} {{.Image}}"],
                           capture_output=True, text=True, timeout=60).stdout
    check("nothing changed: the same containers serve", sorted(after.split("\n")) == sorted(before.split("\n")), after)
    check("1.16.1 is still serving", versions(old_stack) == ("1.16.1-standin.v3",) * 2, versions(old_stack))
