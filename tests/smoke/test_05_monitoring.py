"""Smoke: the monitoring cluster against the deployed stack. Every scrape target is up, every
Grafana dashboard query runs against the live Prometheus, and stopping the api makes DifyApiDown
reach a test webhook receiver (a container on the monitoring network), then resolve when the api
is back. Grafana itself cannot run here (no image): its files are checked statically in
tests/unit. The monitoring cluster is torn down by this module, before the stack's teardown."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
import yaml
from testkit import ROOT, STANDIN_IMAGES, check, free_port, invoke, record

from difyops import envfile, images, release_sets

# The local builds (difyops/images.py's catalogue) of every image the monitoring cluster runs by default.
MONITORING_IMAGES = {spec.variable: spec.local.tag for spec in images.local_images()
                     if spec.variable in (ROOT / "compose/monitoring.yml").read_text()}
# job -> number of targets expected up (optional jobs: Grafana, cAdvisor, TLS probes have none here)
EXPECTED_TARGETS = {"prometheus": 1, "alertmanager": 1, "node": 1, "postgres": 1, "redis": 1, "nginx": 1,
                    "blackbox": 1, "blackbox_http": 3, "blackbox_streaming": 1}
RECEIVER_IMAGE = STANDIN_IMAGES["DIFY_API_IMAGE"]  # any image with python3 serves; the stand-in has it
# DifyApiDown: `for: 1m`; bound = scrape (15s) + evaluation (15s) + group_wait (10s) + slack.
FIRE_BOUND = 60 + 90
# Resolving: a good probe (15s), an evaluation (15s), the critical route's group_interval (1m), slack.
RESOLVE_BOUND = 150
# One queue of one's own (MONITORING_EXTRA_QUEUES), which no worker consumes, the test fills
# itself in the broker's database: its length must come out as celery_queue_length beside Dify's.
PROBE_QUEUE = "difyops_smoke_probe_queue"


def sh(*args: str, check_rc: bool = False, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=check_rc)


class Monitoring:
    def __init__(self, stack, tmp: Path):
        self.stack = stack
        self.network = f"{stack.name}-monitoring"
        self.receiver = f"{stack.name}-monitoring-hook"
        self.prometheus_port = free_port()
        self.alertmanager_port = free_port()
        textfile = tmp / "textfile"
        textfile.mkdir()
        extra = {**MONITORING_IMAGES,
                 "PROMETHEUS_PORT": str(self.prometheus_port),
                 "ALERTMANAGER_PORT": str(self.alertmanager_port),
                 "NODE_EXPORTER_TEXTFILE_DIR": str(textfile),
                 "ALERTMANAGER_WEBHOOK_URL": f"http://{self.receiver}:9000/hook",
                 "MONITORING_EXTRA_QUEUES": PROBE_QUEUE}
        # A copy of the stack's .env with the monitoring settings: the stack's own file stays as is.
        lines = [ln for ln in stack.env_file.read_text().splitlines() if ln.split("=", 1)[0] not in extra]
        self.env_file = tmp / ".env"
        self.env_file.write_text("\n".join(lines + [f"{k}={v}" for k, v in extra.items()]) + "\n")
        self.env_file.chmod(0o600)

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def invoke(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return invoke(*args, env_file=self.env_file, check=False, timeout=timeout)

    def query(self, expr: str) -> dict:
        r = requests.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        return r.json()

    def received(self) -> list[dict]:
        out = sh("docker", "exec", self.receiver, "cat", "/tmp/received.jsonl")
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def notifications(self, alertname: str, status: str) -> list[dict]:
        return [a for n in self.received() for a in n.get("alerts", [])
                if a["labels"].get("alertname") == alertname and a["status"] == status]

    def wait_for(self, what, bound: float, every: float = 2.0):
        deadline = time.monotonic() + bound
        while True:
            seen = what()
            if seen or time.monotonic() > deadline:
                return seen
            time.sleep(every)

    def api_containers(self) -> list[str]:
        out = sh("docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.stack.name}-api",
                 "--filter", "label=com.docker.compose.service=api")
        return out.stdout.split()

    def cleanup(self) -> None:
        sh("docker", "rm", "-fv", self.receiver)
        result = self.invoke("monitoring.stop", "--volumes")
        if result.returncode != 0:
            print(result.stdout[-2000:], result.stderr[-2000:])
        sh("docker", "network", "rm", self.network)


@pytest.fixture(scope="module")
def monitoring(stack, tmp_path_factory):
    mon = Monitoring(stack, tmp_path_factory.mktemp("monitoring"))
    started = time.monotonic()
    try:
        # The network first, so the receiver is there before Alertmanager sends anything.
        sh("docker", "network", "create", "--driver", "bridge", "--label", f"io.difyops.stack={stack.name}",
           mon.network, check_rc=True)
        sh("docker", "run", "-d", "--name", mon.receiver, "--network", mon.network,
           "--label", f"io.difyops.stack={stack.name}", "--user", "65534:65534",
           "-v", f"{ROOT}/tests/smoke/webhook_receiver.py:/receiver.py:ro",
           "--entrypoint", "python3", RECEIVER_IMAGE, "/receiver.py", check_rc=True)
        result = mon.invoke("monitoring.start")
        check("invoke monitoring.start brings the cluster up healthy", result.returncode == 0,
              (result.stdout.strip().splitlines() or result.stderr.strip().splitlines() or ["no output"])[-1])
        record("monitoring: start", time.monotonic() - started)
        yield mon
    finally:
        mon.cleanup()
        record("monitoring: whole module (start, checks, induced failure, teardown)", time.monotonic() - started)


def test_every_scrape_target_is_up(monitoring):
    started = time.monotonic()

    def all_up():
        try:
            targets = requests.get(f"{monitoring.prometheus}/api/v1/targets", timeout=10).json()["data"]
        except (requests.RequestException, ValueError, KeyError):
            return None
        active = targets["activeTargets"]
        counts = {}
        for t in active:
            if t["health"] == "up":
                counts[t["labels"]["job"]] = counts.get(t["labels"]["job"], 0) + 1
        return active if counts == EXPECTED_TARGETS and len(active) == sum(EXPECTED_TARGETS.values()) else None

    active = monitoring.wait_for(all_up, bound=120)
    if not active:
        targets = requests.get(f"{monitoring.prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        active_seen = [(t["labels"]["job"], t["labels"]["instance"], t["health"], t["lastError"]) for t in targets]
    else:
        active_seen = f"{len(active)} targets up in {time.monotonic() - started:.0f}s"
    check("every scrape target is up", bool(active), active_seen)
    record("monitoring: every target up", time.monotonic() - started)


@pytest.mark.parametrize("expr, meaning", [
    ("nginx_up", "the nginx exporter reads the gateway's stub_status"),
    ("pg_up", "the postgres exporter connects to PostgreSQL"),
    ("redis_up", "the redis exporter connects to Redis"),
    ('min(probe_success{job="blackbox_http"})', "every public path answers through the gateway"),
    ('min(probe_success{job="blackbox_streaming"})', "the api routes say X-Accel-Buffering: no"),
    ('count(node_filesystem_avail_bytes{fstype!~"|tmpfs|ramfs|squashfs|nsfs|overlay"} > 0)',
     "node_exporter sees the host's filesystems"),
])
def test_exporters_reach_what_they_watch(monitoring, expr, meaning):
    result = monitoring.wait_for(
        lambda: (r := monitoring.query(expr)).get("data", {}).get("result") and r, bound=45)
    value = float(result["data"]["result"][0]["value"][1]) if result else None
    check(meaning, value is not None and value >= 1, f"{expr} = {value}")


def test_celery_queue_lengths_are_exported(monitoring):
    # A queue exists in the broker only while it holds tasks, and the workers empty Dify's at once:
    # every queue of the release must still have a series (0), and a list of three under a queue
    # of one's own (no worker consumes it), filled after the empty ones, must read 3.
    redis = f"{monitoring.stack.name}-data-redis-1"
    queues = release_sets.for_env(envfile.read(monitoring.env_file)).queues
    pushed = sh("docker", "exec", redis, "redis-cli", "-n", "1", "RPUSH", PROBE_QUEUE, "a", "b", "c").stdout.strip()
    try:
        query = f'celery_queue_length{{job="redis",queue="{PROBE_QUEUE}"}}'

        def length() -> float | None:
            found = monitoring.query(query).get("data", {}).get("result") or []
            return float(found[0]["value"][1]) if found else None

        # The queue's series is there from the first scrape (0); wait for a scrape after the push.
        monitoring.wait_for(lambda: length() == 3, bound=60)
        value = length()
    finally:
        sh("docker", "exec", redis, "redis-cli", "-n", "1", "DEL", PROBE_QUEUE)
    series = monitoring.query('celery_queue_length{job="redis"}').get("data", {}).get("result", [])
    seen = {s["metric"].get("queue") for s in series}
    missing = sorted(set(queues) - seen)
    check("every queue of the release is watched, empty ones as 0, and a filled queue after them reads its length",
          pushed == "3" and value == 3 and not missing and len(seen) == len(queues) + 1,
          f"{PROBE_QUEUE}: pushed {pushed}, celery_queue_length = {value}; {len(seen)} queues watched "
          f"for {len(queues)} of the release + 1; missing: {missing or 'none'}")


def test_rules_are_loaded_and_healthy(monitoring):
    groups = requests.get(f"{monitoring.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    expected = sum(1 for p in (ROOT / "monitoring/prometheus/rules").glob("*.yml")
                   for g in yaml.safe_load(p.read_text())["groups"] for _ in g["rules"])
    bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") == "err"]
    check("Prometheus loaded every rule and none fails", len(rules) == expected and not bad,
          f"{len(rules)}/{expected} rules, failing: {bad or 'none'}")


def test_every_dashboard_query_runs(monitoring):
    failures, count = [], 0
    for path in sorted((ROOT / "monitoring/grafana/dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                count += 1
                answer = monitoring.query(target["expr"])
                if answer.get("status") != "success":
                    failures.append((path.name, panel["title"], answer.get("error")))
    check("every Grafana dashboard query parses and runs on the live Prometheus", count > 0 and not failures,
          f"{count} queries, failing: {failures or 'none'}")


def test_status_task_shows_targets_and_alerts(monitoring):
    result = monitoring.invoke("monitoring.status")
    last = (result.stdout.strip().splitlines() or ["no output"])[-1]
    total = sum(EXPECTED_TARGETS.values())
    check("invoke monitoring.status prints the targets and the firing alerts",
          result.returncode == 0 and last.startswith(f"{total}/{total} targets up"), last)


def test_watchdog_reaches_the_receiver(monitoring):
    seen = monitoring.wait_for(lambda: monitoring.notifications("Watchdog", "firing"), bound=90)
    check("Watchdog reaches the webhook receiver (the pipeline works end to end)", bool(seen),
          f"{len(seen)} Watchdog notification(s)")


def test_stopping_the_api_fires_then_resolves_dify_api_down(monitoring):
    ids = monitoring.api_containers()
    check("the api cluster has containers to stop", bool(ids), ids)
    try:
        stopped = sh("docker", "stop", *ids, timeout=180)
        t0 = time.monotonic()
        check("the api replicas are stopped", stopped.returncode == 0, stopped.stderr.strip() or ids)
        fired = monitoring.wait_for(lambda: monitoring.notifications("DifyApiDown", "firing"), bound=FIRE_BOUND)
        fire_s = time.monotonic() - t0
        instances = sorted({a["labels"].get("instance") for a in fired})
        check(f"DifyApiDown reaches the receiver within its for (1m) + {FIRE_BOUND - 60}s",
              bool(fired) and all(a["labels"].get("severity") == "critical" for a in fired),
              f"after {fire_s:.0f}s: {instances}")
        record("monitoring: api stopped -> DifyApiDown at the receiver", fire_s)
    finally:
        started = sh("docker", "start", *ids, timeout=180)
    t1 = time.monotonic()
    check("the api replicas start again", started.returncode == 0, started.stderr.strip() or "started")
    resolved = monitoring.wait_for(lambda: monitoring.notifications("DifyApiDown", "resolved"), bound=RESOLVE_BOUND)
    resolve_s = time.monotonic() - t1
    check(f"DifyApiDown resolves at the receiver within {RESOLVE_BOUND}s of the api's return", bool(resolved),
          f"after {resolve_s:.0f}s")
    record("monitoring: api started -> DifyApiDown resolved at the receiver", resolve_s)
    healthy = monitoring.wait_for(
        lambda: all(sh("docker", "inspect", "-f", "{{.State.Health.Status}}", i).stdout.strip() == "healthy"
                    for i in ids), bound=120)
    check("the api is healthy again for the tests after this one", healthy, ids)


def test_probe_urls_are_what_users_reach(monitoring):
    # The blackbox targets are the gateway's own public paths: the same answers users get.
    for path in ("/", "/console/api/ping", "/v1/ping"):
        r = requests.get(monitoring.stack.base + path, timeout=10)
        check(f"{path} answers through the gateway on 127.0.0.1", r.status_code == 200,
              f"{r.status_code} {urllib.parse.urljoin(monitoring.stack.base, path)}")
