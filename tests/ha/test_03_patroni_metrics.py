"""Monitoring of the HA data layer: Prometheus, started from compose/monitoring.yml against the HA
stack, finds each running Patroni member by name on the backend network (job `patroni`), scrapes
its REST API's /metrics, and exactly one member reports itself primary: the one Patroni calls
leader. It finds each sentinel the same way (job `redis_sentinel`, asked through the data
cluster's redis-sentinel-exporter), and every sentinel reports the primary it names as ok, at its
address on redis-front (RedisFailoverTooSlow reads this). Only the Prometheus service is started;
it is removed at the end of the module, before the stack's teardown."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.parse

import pytest
from halib import NODES, ROOT, sh
from testkit import check, record

from difyops import config
from difyops import monitoring as mon

PROMETHEUS_IMAGE = "difyops-local/prometheus:2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, ha_stack):
        # A copy of the stack's .env with the local image and free ports (the stack's file stays as is).
        extra = {"PROMETHEUS_IMAGE": PROMETHEUS_IMAGE, "PROMETHEUS_PORT": str(_free_port()),
                 "ALERTMANAGER_PORT": str(_free_port())}
        lines = [ln for ln in ha_stack.env_file.read_text().splitlines() if ln.split("=", 1)[0] not in extra]
        self.env_file = ha_stack.env_file.parent / "monitoring.env"
        self.env_file.write_text("\n".join(lines + [f"{k}={v}" for k, v in extra.items()]) + "\n")
        self.env_file.chmod(0o600)
        self.settings = config.load_settings(None, self.env_file)
        self.env = dict(os.environ, **mon.compose_env(self.settings))

    def start(self) -> tuple[int, str]:
        sh(mon.network_create_argv(self.settings))
        result = sh(mon.up_argv(self.settings, timeout=120) + ["prometheus"], timeout=180, env=self.env, cwd=ROOT)
        return result.returncode, (result.stderr.strip().splitlines() or ["no output"])[-1]

    def get(self, path: str):
        result = sh(mon.prometheus_get_argv(self.settings, path), timeout=30, env=self.env, cwd=ROOT)
        return json.loads(result.stdout)["data"] if result.returncode == 0 else None

    def stop(self) -> None:
        sh(mon.down_argv(self.settings, volumes=True), timeout=120, env=self.env, cwd=ROOT)
        sh(mon.network_rm_argv(self.settings))


@pytest.fixture(scope="module")
def prometheus(ha_stack):
    prom = Prometheus(ha_stack)
    started = time.monotonic()
    try:
        rc, last = prom.start()
        check("Prometheus of compose/monitoring.yml starts healthy beside the HA stack", rc == 0, last)
        record("monitoring: Prometheus start (HA stack)", time.monotonic() - started)
        yield prom
    finally:
        prom.stop()


def _poll(predicate, bound: float, every: float = 3.0):
    """predicate() -> (ok, seen), called until ok or bound seconds pass; returns the last answer."""
    deadline = time.monotonic() + bound
    while True:
        ok, seen = predicate()
        if ok or time.monotonic() > deadline:
            return ok, seen
        time.sleep(every)


def test_prometheus_scrapes_every_patroni_member(prometheus):
    started = time.monotonic()
    expected = {f"{node}:8008" for node in NODES}

    def patroni_targets():
        data = prometheus.get("/api/v1/targets?state=active") or {"activeTargets": []}
        seen = {t["labels"]["instance"]: (t["health"], t["lastError"]) for t in data["activeTargets"]
                if t["labels"]["job"] == "patroni"}
        return set(seen) == expected and all(health == "up" for health, _ in seen.values()), seen

    ok, seen = _poll(patroni_targets, 90)
    check("job patroni: one target per running member, named by member, every one up", ok, seen)
    record("monitoring: Patroni targets up", time.monotonic() - started)


def test_patroni_metrics_name_the_leader(ha_stack, prometheus):
    query = "/api/v1/query?query=" + urllib.parse.quote('patroni_primary{job="patroni"}')

    def primaries():
        data = prometheus.get(query) or {"result": []}
        values = {r["metric"]["instance"]: r["value"][1] for r in data["result"]}
        leader = ha_stack.leader()
        wanted = {f"{node}:8008": "1" if node == leader else "0" for node in NODES}
        return leader is not None and values == wanted, {"leader": leader, "patroni_primary": values}

    ok, seen = _poll(primaries, 60)
    check("patroni_primary is 1 on Patroni's leader and 0 on the other member", ok, seen)


def test_prometheus_asks_every_sentinel_about_the_primary(ha_stack, prometheus):
    from difyops.ha import REDIS_FRONT, SENTINELS

    started = time.monotonic()
    name = ha_stack.env.get("REDIS_SENTINEL_SERVICE_NAME") or "dify-redis"
    query = "/api/v1/query?query=" + urllib.parse.quote('redis_sentinel_master_status{job="redis_sentinel"}')

    def statuses():
        addr = sh(["docker", "exec", ha_stack.container("data", SENTINELS[0]), "redis-cli", "-p", "26379",
                   "sentinel", "get-master-addr-by-name", name], timeout=15).stdout.split()
        data = prometheus.get(query) or {"result": []}
        seen = {r["metric"]["instance"]: (r["metric"].get("master_name"), r["metric"].get("master_address"),
                                          r["metric"].get("master_status"), r["value"][1]) for r in data["result"]}
        wanted = {f"{s}:26379": (name, ":".join(addr), "ok", "1") for s in SENTINELS}
        return addr[:1] == [REDIS_FRONT] and seen == wanted, {"sentinels name": addr, "redis_sentinel_master_status": seen}

    ok, seen = _poll(statuses, 90)
    check("job redis_sentinel: every sentinel reports the primary it names (on redis-front) as ok", ok, seen)
    record("monitoring: sentinel status scraped", time.monotonic() - started)
