# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# The stand-in's Celery app and tasks. compute_sha256 does real work and records its state and result
# in PostgreSQL (task_results); beat_heartbeat is what MODE=beat schedules (a Redis key);
# workflow_run stands for Dify's workflow_based_app_execution_task (a workflow or chatflow run, on
# queue workflow_based_app_execution since Dify 1.13) and generate_summary_index for Dify's
# generate_summary_index_task (queue dataset_summary): both record what they did in task_results.
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


RELEASE_KEY = "standin:workflow:release:{}"


@celery.task(name="standin.workflow_run", bind=True)
def workflow_run(self, inputs, seconds=0.0, until=None):
    """A workflow run: its nodes take `seconds` in all, or (test hook) until the Redis key
    standin:workflow:release:<until> exists, whichever comes first; a run that would outlast
    WORKFLOW_MAX_EXECUTION_TIME is stopped and fails, as Dify's engine stops it. The outputs record
    the worker and the image that ran it."""
    task_id = self.request.id
    queue = (self.request.delivery_info or {}).get("routing_key")
    limit = config.workflow_max_seconds()
    seconds = max(0.0, float(seconds))
    _record(task_id, "STARTED", queue=queue)
    started = time.monotonic()
    released = False
    while True:  # gevent-patched sleep in the worker: other runs keep going
        elapsed = time.monotonic() - started
        if elapsed >= limit:
            error = f"workflow execution timed out after {limit}s (WORKFLOW_MAX_EXECUTION_TIME)"
            _record(task_id, "FAILURE", queue=queue, error=error)
            return {"status": "failed", "error": error}
        if elapsed >= seconds:
            break
        if until and redis_client.get().exists(RELEASE_KEY.format(until)):
            released = True
            break
        time.sleep(min(0.5, seconds - elapsed, limit - elapsed))
    outputs = {"echo": inputs, "elapsed": round(time.monotonic() - started, 3), "released": released,
               "image_version": config.image_version(), "worker": config.HOSTNAME}
    _record(task_id, "SUCCESS", queue=queue, result=json.dumps(outputs, sort_keys=True))
    log.info("workflow run %s succeeded on queue %s after %.1fs", task_id, queue, outputs["elapsed"])
    return {"status": "succeeded", "outputs": outputs}


@celery.task(name="standin.generate_summary_index", bind=True)
def generate_summary_index(self, dataset_id, text):
    """A summary index: a short digest of the text, recorded as the task's result."""
    task_id = self.request.id
    queue = (self.request.delivery_info or {}).get("routing_key")
    _record(task_id, "STARTED", queue=queue)
    words = text.split()
    summary = {"dataset_id": dataset_id, "words": len(words), "summary": " ".join(words[:12]),
               "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "worker": config.HOSTNAME}
    _record(task_id, "SUCCESS", queue=queue, result=json.dumps(summary, sort_keys=True))
    return summary
