# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# The stand-in's Celery app and tasks. compute_sha256 does real work and records its state and result
# in PostgreSQL (task_results); beat_heartbeat is what MODE=beat schedules (a Redis key).
import hashlib
import json
import logging
import time

from standin import config, db, redis_client
from standin.celery_app import make_celery

log = logging.getLogger("standin.tasks")

celery = make_celery(with_beat_schedule=True)

MAX_ROUNDS = 1_000_000
MAX_SLEEP = 3600.0
BEAT_KEY = "standin:beat:heartbeat"
BEAT_COUNT_KEY = "standin:beat:count"


def _record(task_id, state, queue=None, result=None, error=None):
    cols = {"STARTED": "started_at", "SUCCESS": "finished_at", "FAILURE": "finished_at"}
    stamp = cols.get(state)
    with db.pool.cursor() as cur:
        cur.execute(
            "INSERT INTO task_results (task_id, state, queue, result, error, worker"
            + (f", {stamp}" if stamp else "") + ") VALUES (%s, %s, %s, %s, %s, %s"
            + (", now()" if stamp else "") + ") "
            "ON CONFLICT (task_id) DO UPDATE SET state = EXCLUDED.state, "
            "queue = COALESCE(task_results.queue, EXCLUDED.queue), "
            "result = EXCLUDED.result, error = EXCLUDED.error, worker = EXCLUDED.worker"
            + (f", {stamp} = now()" if stamp else ""),
            (task_id, state, queue, result, error, config.HOSTNAME))


@celery.task(name="standin.compute_sha256", bind=True)
def compute_sha256(self, text, rounds=1, sleep=0.0):
    task_id = self.request.id
    queue = (self.request.delivery_info or {}).get("routing_key")
    rounds = max(1, min(int(rounds), MAX_ROUNDS))
    sleep = max(0.0, min(float(sleep), MAX_SLEEP))
    _record(task_id, "STARTED", queue=queue)
    try:
        if sleep:
            time.sleep(sleep)  # gevent-patched in the worker: other tasks keep running
        digest = text.encode("utf-8")
        for _ in range(rounds):
            digest = hashlib.sha256(digest).hexdigest().encode()
        result = digest.decode()
        _record(task_id, "SUCCESS", queue=queue, result=result)
        log.info("task %s done on queue %s: sha256=%s", task_id, queue, result)
        return {"sha256": result, "worker": config.HOSTNAME}
    except Exception as exc:
        log.exception("task %s failed", task_id)
        try:
            _record(task_id, "FAILURE", queue=queue, error=f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("could not record the failure of task %s", task_id)
        raise


@celery.task(name="standin.beat_heartbeat")
def beat_heartbeat():
    doc = {"ts": time.time(), "worker": config.HOSTNAME, "version": config.reported_version()}
    r = redis_client.get()
    r.set(BEAT_KEY, json.dumps(doc))
    count = r.incr(BEAT_COUNT_KEY)
    return {"count": count, **doc}
