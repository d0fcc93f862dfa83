"""Redis HA: three sentinels watch the primary; when it is killed they promote the replica, and the
stand-in's Celery tasks (Dify's own sentinel settings: REDIS_USE_SENTINEL, CELERY_BROKER_URL in
sentinel:// form) keep completing."""

from __future__ import annotations

import time

from halib import sh
from smokelib import check

SENTINEL = "redis-sentinel-1"


def master(stack) -> str | None:
    env = stack.env
    out = sh(["docker", "exec", stack.container("data", SENTINEL), "redis-cli", "-p", "26379",
              "sentinel", "get-master-addr-by-name", env["REDIS_SENTINEL_SERVICE_NAME"]], timeout=15).stdout.split()
    return out[0] if out else None


def submit(stack, n: int, label: str) -> list[str]:
    ids = []
    for i in range(n):
        def post():
            code, doc = stack.api("POST", "/v1/tasks", {"input": f"{label}-{i}"})
            return doc.get("task_id") if code == 202 else None
        ids.append(stack.wait_for(f"task {label}-{i} accepted", post, 60, 1))
    return ids


def wait_done(stack, ids: list[str], timeout: float = 120) -> dict[str, str]:
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task_id in ids:
            if states.get(task_id) != "SUCCESS":
                code, doc = stack.api("GET", f"/v1/tasks/{task_id}")
                states[task_id] = doc.get("state", f"http {code}")
        if all(s == "SUCCESS" for s in states.values()):
            break
        time.sleep(1)
    return states


def test_sentinels_agree_on_the_primary_and_see_the_replica(ha_stack):
    env = ha_stack.env
    check("Dify's settings use Sentinel", env.get("REDIS_USE_SENTINEL") == "true"
          and env.get("CELERY_USE_SENTINEL") == "true" and env.get("CELERY_BROKER_URL", "").startswith("sentinel://")
          and env.get("CELERY_BROKER_URL", "").count(";") == 2,
          {k: env.get(k) for k in ("REDIS_USE_SENTINEL", "REDIS_SENTINELS", "REDIS_SENTINEL_SERVICE_NAME",
                                   "CELERY_USE_SENTINEL", "CELERY_SENTINEL_MASTER_NAME")})
    masters = {s: sh(["docker", "exec", ha_stack.container("data", s), "redis-cli", "-p", "26379", "sentinel",
                      "get-master-addr-by-name", env["REDIS_SENTINEL_SERVICE_NAME"]], timeout=15).stdout.split()[:1]
               for s in ("redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3")}
    check("three sentinels name the same primary, by its Docker DNS name", all(m == ["redis"] for m in masters.values()),
          masters)
    info = sh(["docker", "exec", ha_stack.container("data", SENTINEL), "redis-cli", "-p", "26379", "sentinel",
               "master", env["REDIS_SENTINEL_SERVICE_NAME"]], timeout=15).stdout.split()
    fields = dict(zip(info[::2], info[1::2]))
    check("the sentinels know one replica and two other sentinels",
          fields.get("num-slaves") == "1" and fields.get("num-other-sentinels") == "2",
          {k: fields.get(k) for k in ("num-slaves", "num-other-sentinels", "quorum")})


def test_celery_tasks_keep_completing_after_the_primary_is_killed(ha_stack):
    before = submit(ha_stack, 5, "before")
    states = wait_done(ha_stack, before)
    check("Celery tasks complete through the sentinel-discovered broker",
          all(s == "SUCCESS" for s in states.values()), states)
    old = master(ha_stack)
    container = ha_stack.container("data", "redis" if old == "redis" else "redis-replica")
    sh(["docker", "kill", container], check=True)
    killed_at = time.monotonic()
    new = ha_stack.wait_for("the sentinels to promote another primary",
                            lambda: (m := master(ha_stack)) not in (None, old) and m, 90, 1)
    promoted_after = time.monotonic() - killed_at
    after = submit(ha_stack, 10, "after")
    states = wait_done(ha_stack, after, 180)
    done = sum(1 for s in states.values() if s == "SUCCESS")
    print(f"COUNTS redis failover: primary {old} -> {new} (promoted {promoted_after:.1f}s after the kill); "
          f"tasks before: {len(before)} completed; tasks after: {len(after)} submitted, {done} completed")
    check(f"the sentinels promoted {new} after {old} was killed", new != old, f"{old} -> {new}")
    check("Celery tasks submitted after the promotion all complete", done == len(after), states)
    # Bring the old primary back: the sentinels turn it into a replica of the new one.
    sh(["docker", "start", container], check=True)

    def demoted():
        role = sh(["docker", "exec", container, "redis-cli", "role"], timeout=15).stdout.split()
        return role[:2] if role[:1] == ["slave"] else None

    role = ha_stack.wait_for(f"{old} to come back as a replica", demoted, 90, 2)
    check(f"the old primary {old} comes back as a replica of {new}", role[1] == new, role)
