"""Failover benchmark: time from the PostgreSQL leader's loss (`docker kill`) to the first write
acknowledged through the read-write endpoint (db_postgres:5432, HAProxy), with our Patroni timing
(ttl 20, loop_wait 2, retry_timeout 5: PATRONI_TTL / PATRONI_LOOP_WAIT / PATRONI_RETRY_TIMEOUT)
against Patroni's defaults (ttl 30, loop_wait 10, retry_timeout 10) in the same run.

Each configuration gets its own HA data cluster (only the data cluster: Patroni x2, etcd, HAProxy,
Redis + sentinels) under a unique stack name, deployed one after the other so they never share the
CPU, and removed at the end. Writes come from a container on the stack's internal network.
Also reported: the Redis primary's loss to the sentinels' promotion (our settings only).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import Measure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "ha"))

from halib import HaStack, sh  # noqa: E402

ROUNDS = 2  # kills per configuration (the killed node is started again between rounds)
OURS = {"PATRONI_TTL": "20", "PATRONI_LOOP_WAIT": "2", "PATRONI_RETRY_TIMEOUT": "5"}
DEFAULTS = {"PATRONI_TTL": "30", "PATRONI_LOOP_WAIT": "10", "PATRONI_RETRY_TIMEOUT": "10"}


def _rounds(settings: dict[str, str], label: str) -> tuple[list[float], int]:
    """Seconds to the first write after each kill, and acknowledged writes lost (all rounds)."""
    stack = HaStack.create(prefix="bfo", extra=settings)
    seconds, lost = [], 0
    try:
        stack.invoke("prod.deploy", "--clusters", "data", "--timeout", "300")
        for n in range(ROUNDS):
            from halib import measure_failover

            table = f"bench_failover_{n}"
            result = measure_failover(stack, table, warmup_acks=20, after_acks=5, timeout=240)
            present = {int(x) for x in stack.psql(f"SELECT id FROM {table}").stdout.split()}
            lost += len(result["acked"] - present)
            seconds.append(result["seconds_to_first_write"])
            print(f"{label} round {n + 1}: {result['old_leader']} killed, first write after "
                  f"{result['seconds_to_first_write']:.1f}s on {result['new_leader']}", flush=True)
            old = stack.container("data", result["old_leader"])
            sh(["docker", "start", old], check=True)
            # With synchronous_mode only the synchronous standby may be promoted: the next kill
            # waits until the rejoined member is that again, not merely streaming.
            sync = stack.env.get("PATRONI_SYNCHRONOUS_MODE", "true").lower() == "true"
            def rejoined(leader: str = result["old_leader"], sync: bool = sync) -> bool:
                return any(m["name"] == leader and m.get("state") == "streaming"
                           and (not sync or m.get("role") == "sync_standby")
                           for m in stack.cluster_state()["members"])

            stack.wait_for(f"{result['old_leader']} streaming again" + (" as the sync standby" if sync else ""),
                           rejoined, 240, 2)
        return seconds, lost
    finally:
        stack.teardown()


def _redis_promotion() -> float:
    stack = HaStack.create(prefix="bfr")
    try:
        stack.invoke("prod.deploy", "--clusters", "data", "--timeout", "300")
        sentinel = stack.container("data", "redis-sentinel-1")
        name = stack.env["REDIS_SENTINEL_SERVICE_NAME"]

        def master():
            out = sh(["docker", "exec", sentinel, "redis-cli", "-p", "26379", "sentinel",
                      "get-master-addr-by-name", name], timeout=15).stdout.split()
            return out[0] if out else None

        old = master()
        killed = time.monotonic()
        sh(["docker", "kill", stack.container("data", "redis")], check=True)
        stack.wait_for("a new Redis primary", lambda: master() not in (None, old), 120, 0.2)
        return time.monotonic() - killed
    finally:
        stack.teardown()


def run() -> list[Measure]:
    ours, ours_lost = _rounds(OURS, "tuned")
    base, base_lost = _rounds(DEFAULTS, "patroni defaults")
    redis_seconds = _redis_promotion()
    note = (f"median of {ROUNDS} kills each; acknowledged writes lost: tuned {ours_lost}, defaults {base_lost} "
            f"(synchronous_mode on); tuned runs {', '.join(f'{s:.1f}' for s in ours)} s, "
            f"defaults {', '.join(f'{s:.1f}' for s in base)} s")
    return [
        Measure("failover", "PostgreSQL leader killed -> first acknowledged write", statistics.median(ours),
                statistics.median(base), "s", "ttl 20 / loop_wait 2 / retry_timeout 5",
                "Patroni defaults ttl 30 / loop_wait 10 / retry_timeout 10", note),
        Measure("failover", "Redis primary killed -> sentinels name a new primary", redis_seconds, None, "s",
                "down-after 5000 ms, quorum 2", "", "3 sentinels, 1 replica"),
    ]
