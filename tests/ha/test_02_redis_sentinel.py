"""Redis HA: three sentinels watch the primary and name it by its port on redis-front (HAProxy,
one port per node); the primary is lost for good twice, first killed (SIGKILL), then, once the
old one is back as a replica, its host gone (off every network, then SIGKILL). Each time, under
Celery tasks submitted from the loss on and the stand-in's api reading through Redis (Dify's own
sentinel settings, no socket timeouts of their own): the sentinels promote the replica, the api
reads again with no request waiting past the cut bound, every session of the api, worker and beat
containers to the lost node is closed within the cut bound, beat's heartbeat runs again, and every
task completes within the failover bound, none lost. The old primary, started again, comes back
as a replica."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

from halib import API_READER, ClientLoad, lose_node, restore_node, sh
from testkit import check

from difyops.ha import FAILOVER_BOUND_SECONDS, REDIS_FRONT, REDIS_FRONT_PORTS, SENTINELS, SESSION_CUT_SECONDS

SENTINEL = "redis-sentinel-1"
# Dify's Redis clients: the api's pool, the worker's (broker, results, data), beat's.
CLIENTS = (("api", "api"), ("worker", "worker"), ("worker", "worker_beat"))
NODE_AT_PORT = {str(port): node for node, port in REDIS_FRONT_PORTS.items()}
# Tasks submitted from the loss on. After its broker connection is re-established, a gevent worker
# takes one task at a time for good (Celery's prefetch-count reduction counts the pool's running
# greenlets as its size: docs/ha.md), one every 2 to 4 s: the last of these is done 10 to 16 s
# after the first (measured).
AFTER_TASKS = 6


def sentinel(stack, *args: str, which: str = SENTINEL) -> list[str]:
    return sh(["docker", "exec", stack.container("data", which), "redis-cli", "-p", "26379", *args],
              timeout=15).stdout.split()


def master(stack, which: str = SENTINEL) -> list[str]:
    """The primary's address as the sentinels give it to Dify: [host, port]."""
    return sentinel(stack, "sentinel", "get-master-addr-by-name", stack.env["REDIS_SENTINEL_SERVICE_NAME"],
                    which=which)[:2]


def master_fields(stack) -> dict[str, str]:
    out = sentinel(stack, "sentinel", "master", stack.env["REDIS_SENTINEL_SERVICE_NAME"])
    return dict(zip(out[::2], out[1::2], strict=False))  # name, value pairs


def fmt(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s"


def master_node(stack) -> str | None:
    """The node (service) behind the address the sentinels name."""
    addr = master(stack)
    if len(addr) != 2:
        return None
    return NODE_AT_PORT.get(addr[1]) if addr[0] == REDIS_FRONT else (addr[0] if addr[0] in REDIS_FRONT_PORTS else None)


def submit(stack, n: int, label: str) -> list[str]:
    ids = []
    for i in range(n):
        def post(i: int = i):
            code, doc = stack.api("POST", "/v1/tasks", {"input": f"{label}-{i}"})
            return doc.get("task_id") if code == 202 else None
        ids.append(stack.wait_for(f"task {label}-{i} accepted", post, 60, 1))
    return ids


def wait_done(stack, ids: list[str], deadline: float) -> dict[str, dict]:
    """Each task's row (state, finished_at) once all succeeded or at the deadline (wall clock)."""
    rows: dict[str, dict] = {}
    while True:
        for task_id in ids:
            if rows.get(task_id, {}).get("state") != "SUCCESS":
                code, doc = stack.api("GET", f"/v1/tasks/{task_id}")
                rows[task_id] = doc if code == 200 else {"state": f"http {code}"}
        if all(r.get("state") == "SUCCESS" for r in rows.values()) or time.time() > deadline:
            return rows
        time.sleep(1)


def finished_after(row: dict, moment: float) -> float | None:
    at = row.get("finished_at")
    return datetime.fromisoformat(at).timestamp() - moment if at else None


def beat_after(stack, moment: float) -> float | None:
    """Seconds from moment to the last beat heartbeat a worker ran, if that is after moment."""
    code, doc = stack.api("GET", "/console/api/beat")
    last = (doc.get("last") or {}).get("ts") if code == 200 else None
    return last - moment if last and last > moment else None


def replica_of(stack, node: str) -> list[str] | None:
    """[master_host, master_port] of a node that is a replica with its link up, else None."""
    out = sh(["docker", "exec", stack.container("data", node), "redis-cli", "info", "replication"], timeout=15).stdout
    fields = dict(line.split(":", 1) for line in out.replace("\r", "").splitlines() if ":" in line)
    if fields.get("role") == "slave" and fields.get("master_link_status") == "up":
        return [fields.get("master_host"), fields.get("master_port")]
    return None


def addresses(container: str) -> set[str]:
    out = sh(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container],
             check=True).stdout
    return set(out.split())


def endpoint(stack, node: str) -> tuple[set[str], int]:
    """Where Dify's clients reach a node: its port on redis-front (or, in a layout without the
    front, the node's own addresses and port: how the test reads the code before it)."""
    front = stack.container("data", REDIS_FRONT)
    if stack.running(front):
        return addresses(front), REDIS_FRONT_PORTS[node]
    return addresses(stack.container("data", node)), 6379


def established(stack, service: tuple[str, str], addresses: set[str], port: int) -> int:
    """How many TCP connections of a Dify container to <address>:<port> are ESTABLISHED (its
    /proc/net/tcp; a connection its peer closed is CLOSE_WAIT: told, not waiting)."""
    out = sh(["docker", "exec", stack.container(*service), "cat", "/proc/net/tcp"], timeout=10).stdout
    count = 0
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "01":
            continue
        address, _, hex_port = fields[2].partition(":")
        ip = ".".join(str(b) for b in bytes.fromhex(address)[::-1])
        count += int(hex_port, 16) == port and ip in addresses
    return count


class SessionWatch(threading.Thread):
    """Dify's client sessions to the lost node (its port on redis-front), sampled every 0.5 s for
    `seconds` from the loss on: when was one last seen still open?"""

    def __init__(self, stack, node: str, seconds: float):
        super().__init__(daemon=True)
        self.stack, self.seconds = stack, seconds
        self.addresses, self.port = endpoint(stack, node)  # before the loss: a node gone has none
        self.before = self.sample()
        self.since: float | None = None
        self.last_open: float | None = None  # seconds after the loss
        self.samples = 0

    def sample(self) -> dict[str, int]:
        return {svc: established(self.stack, (cluster, svc), self.addresses, self.port) for cluster, svc in CLIENTS}

    def watch_from(self, moment: float) -> "SessionWatch":
        self.since = moment
        self.start()
        return self

    def run(self) -> None:
        while time.time() < self.since + self.seconds:
            at = time.time()
            if sum(self.sample().values()):
                self.last_open = at - self.since
            self.samples += 1
            time.sleep(0.5)


def test_sentinels_agree_on_the_primary_and_see_the_replica(ha_stack):
    env = ha_stack.env
    check("Dify's settings use Sentinel", env.get("REDIS_USE_SENTINEL") == "true"
          and env.get("CELERY_USE_SENTINEL") == "true" and env.get("CELERY_BROKER_URL", "").startswith("sentinel://")
          and env.get("CELERY_BROKER_URL", "").count(";") == 2,
          {k: env.get(k) for k in ("REDIS_USE_SENTINEL", "REDIS_SENTINELS", "REDIS_SENTINEL_SERVICE_NAME",
                                   "CELERY_USE_SENTINEL", "CELERY_SENTINEL_MASTER_NAME")})
    masters = {s: master(ha_stack, which=s) for s in SENTINELS}
    check("three sentinels name the same primary: redis, as its port on redis-front",
          all(m == [REDIS_FRONT, str(REDIS_FRONT_PORTS["redis"])] for m in masters.values()), masters)
    fields = master_fields(ha_stack)
    replicas = sentinel(ha_stack, "sentinel", "replicas", env["REDIS_SENTINEL_SERVICE_NAME"])
    check("the sentinels know one replica (redis-replica, on redis-front) and two other sentinels",
          fields.get("num-slaves") == "1" and fields.get("num-other-sentinels") == "2"
          and f"{REDIS_FRONT}:{REDIS_FRONT_PORTS['redis-replica']}" in replicas,
          {**{k: fields.get(k) for k in ("num-slaves", "num-other-sentinels", "quorum")},
           "replicas": [r for r in replicas if REDIS_FRONT in r][:2]})
    check("redis-replica replicates through redis-front", replica_of(ha_stack, "redis-replica")
          == [REDIS_FRONT, str(REDIS_FRONT_PORTS["redis"])], replica_of(ha_stack, "redis-replica"))


def _bring_back_the_lost_primary(ha_stack) -> None:
    """Before another loss: the node lost last runs again and replicates from the primary."""
    lost = getattr(ha_stack, "redis_failover", None)
    if not lost:
        return
    if not ha_stack.running(lost["container"]):
        if lost["networks"]:
            restore_node(lost["container"], lost["networks"])
        else:
            sh(["docker", "start", lost["container"]], check=True)
    ha_stack.wait_for(f"{lost['old']} to replicate from {lost['new']}", lambda: replica_of(ha_stack, lost["old"]), 90, 1)
    ha_stack.wait_for("the sentinels to count it as a replica again",
                      lambda: master_fields(ha_stack).get("num-slaves") == "1", 60, 1)


def _primary_lost_under_load(ha_stack, how: str) -> None:
    before = submit(ha_stack, 3, f"before-{how}")
    rows = wait_done(ha_stack, before, time.time() + 60)
    check(f"before the loss ({how}): Celery tasks complete through the sentinel-discovered broker",
          all(r.get("state") == "SUCCESS" for r in rows.values()), {k: r.get("state") for k, r in rows.items()})
    old = master_node(ha_stack)
    assert old, f"the sentinels name no node on {REDIS_FRONT}: {master(ha_stack)}"
    container = ha_stack.container("data", old)
    reader = ClientLoad.api(ha_stack, "redisload", API_READER, ROUTE="/console/api/beat",
                            MAX_ATTEMPTS="5000", MAX_SECONDS="300").start()
    networks: dict = {}
    new = promoted = None
    try:
        ha_stack.wait_for("the api reading through Redis", lambda: len(reader.acked()) >= 5, 60, 0.5)
        time.sleep(3)  # the worker idle on its broker connection, waiting for a BRPOP answer
        sessions = SessionWatch(ha_stack, old, SESSION_CUT_SECONDS + 5)
        if how == "host gone":
            lost_at, networks = lose_node(ha_stack, container)
        else:
            sh(["docker", "kill", container], check=True)
            lost_at = time.time()  # dead from here on
        sessions.watch_from(lost_at)
        # From the loss on, beside: each is accepted once the api's Celery producer reaches a primary.
        after: list[str] = []
        submitter = threading.Thread(target=lambda: after.extend(submit(ha_stack, AFTER_TASKS, f"after-{how}")),
                                     daemon=True)
        submitter.start()
        new = ha_stack.wait_for("the sentinels to promote another primary",
                                lambda: (n := master_node(ha_stack)) not in (None, old) and n, 60, 0.5)
        promoted = time.time() - lost_at
        submitter.join(AFTER_TASKS * 60)
        assert len(after) == AFTER_TASKS, f"only {len(after)} of {AFTER_TASKS} tasks were accepted"
        # Bounded: past the failover bound the check below fails with what it saw.
        rows = wait_done(ha_stack, after, lost_at + FAILOVER_BOUND_SECONDS + 15)
        beat = beat_after(ha_stack, lost_at)
        while beat is None and time.time() < lost_at + FAILOVER_BOUND_SECONDS + 15:
            time.sleep(1)
            beat = beat_after(ha_stack, lost_at)
        longest, _ = reader.longest_after(lost_at)
        back = reader.back_after(lost_at)
        sessions.join(SESSION_CUT_SECONDS + 30)
    finally:
        reader.stop()
        ha_stack.redis_failover = {"old": old, "container": container, "new": new, "networks": networks}
    seconds = {task_id: finished_after(row, lost_at) for task_id, row in rows.items()}
    done = [s for s in seconds.values() if s is not None]
    print(f"SECONDS redis primary {how}: promoted {new} after {promoted:.1f}s; api reads through Redis back after "
          f"{fmt(back)}, longest api request past the loss {longest:.1f}s; beat heartbeat {fmt(beat)} after it; "
          f"tasks submitted from the loss on done after {', '.join(f'{s:.1f}' for s in sorted(done))}s "
          f"(all within {fmt(max(done, default=None))}; failover bound {FAILOVER_BOUND_SECONDS}s)")
    print(f"SECONDS redis primary {how}: Dify's client sessions to {old} (port {sessions.port}): "
          f"{sum(sessions.before.values())} open before the loss {sessions.before}; the last one still open "
          f"{fmt(sessions.last_open)} after it ({sessions.samples} samples over {sessions.seconds:.0f}s; "
          f"session bound {SESSION_CUT_SECONDS}s)")
    print(f"COUNTS redis failover ({how}): primary {old} -> {new}; tasks before: {len(before)} completed; "
          f"tasks submitted from the loss on: {len(after)}, {len(done)} completed")
    check(f"primary {how}: the sentinels promoted {new} after {old} was lost", new not in (None, old), f"{old} -> {new}")
    check(f"primary {how}: the api reads through Redis again within {FAILOVER_BOUND_SECONDS}s, no request "
          f"waiting past {SESSION_CUT_SECONDS}s", back is not None and back <= FAILOVER_BOUND_SECONDS
          and longest <= SESSION_CUT_SECONDS, {"back after": back and round(back, 1), "longest": round(longest, 1)})
    check(f"primary {how}: every client session of the api, worker and beat to {old} is closed within "
          f"{SESSION_CUT_SECONDS}s", sum(sessions.before.values()) > 0 and sessions.samples >= 10
          and (sessions.last_open or 0) <= SESSION_CUT_SECONDS,
          {"open before": sessions.before, "last open after": sessions.last_open and round(sessions.last_open, 1),
           "samples": sessions.samples})
    if beat is None or beat > FAILOVER_BOUND_SECONDS or len(done) < len(after):
        # What beat and the worker said meanwhile, and where they are now: the stand-in prints its
        # Python stacks on SIGUSR2 (beat's threads, the worker's greenlets): a hang in a Redis client
        # shows there, not in the log.
        for service in ("worker_beat", "worker"):
            name = ha_stack.container("worker", service)
            sh(["docker", "kill", "--signal", "USR2", name])
            time.sleep(2)
            logs = sh(["docker", "logs", "--since", str(int(lost_at) - 1), name])
            said, _, stacks = (logs.stdout + logs.stderr).partition("*****")
            # Its log lines and the last line of each traceback, not the tracebacks' frames.
            lines = [line[:600] for line in said.splitlines()
                     if line.startswith(("{", "[")) or (line[:1].isalpha() and not line.startswith("Traceback"))]
            print(f"{service}'s log from the loss on:\n" + "\n".join(lines[-150:])
                  + f"\n{service}'s main stack:\n*****{stacks[:6000]}")
    check(f"primary {how}: beat's heartbeat runs again within {FAILOVER_BOUND_SECONDS}s",
          beat is not None and beat <= FAILOVER_BOUND_SECONDS, beat and round(beat, 1))
    check(f"primary {how}: every Celery task submitted from the loss on completes within "
          f"{FAILOVER_BOUND_SECONDS}s, none lost", len(done) == len(after)
          and all(s <= FAILOVER_BOUND_SECONDS for s in done),
          {task_id[:8]: (rows[task_id].get("state"), s and round(s, 1)) for task_id, s in seconds.items()})


def test_primary_killed_for_good_api_celery_and_beat_recover(ha_stack):
    _primary_lost_under_load(ha_stack, "killed")


def _restart_the_workers(ha_stack) -> None:
    """What docs/ha.md tells an operator to do once a Redis failover is over: restart the workers.
    Until then each keeps the prefetch count of 1 Celery gave it at the reconnect, and a second loss
    with a task in flight can leave that one slot taken for good (docs/ha.md, "after a failover")."""
    name = ha_stack.container("worker", "worker")
    sh(["docker", "restart", "-t", "60", name], check=True, timeout=120)
    ha_stack.wait_for("the restarted worker to be healthy", lambda: sh(
        ["docker", "inspect", "-f", "{{.State.Health.Status}}", name]).stdout.strip() == "healthy", 180, 1)


def test_primary_host_gone_for_good_api_celery_and_beat_recover(ha_stack):
    _bring_back_the_lost_primary(ha_stack)
    _restart_the_workers(ha_stack)
    _primary_lost_under_load(ha_stack, "host gone")


def test_old_primary_comes_back_as_a_replica(ha_stack):
    lost = ha_stack.redis_failover
    if lost["networks"]:
        restore_node(lost["container"], lost["networks"])
    else:
        sh(["docker", "start", lost["container"]], check=True)
    expected = [REDIS_FRONT, str(REDIS_FRONT_PORTS[lost["new"]])]
    role = ha_stack.wait_for(f"{lost['old']} to come back as a replica",
                             lambda: replica_of(ha_stack, lost["old"]), 90, 2)
    check(f"the old primary {lost['old']} comes back as a replica of {lost['new']} (through {REDIS_FRONT})",
          role == expected, json.dumps(role))
