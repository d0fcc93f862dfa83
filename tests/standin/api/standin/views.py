# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# HTTP endpoints of the dify-api stand-in. The same blueprint is mounted under Dify's route families
# /console/api, /v1 and /api; /health, /files, /mcp, /triggers and /inner/api sit at the root, as in
# Dify, so a gateway's routing can be checked. Every JSON answer carries served_by=api and the hostname.
import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
import uuid

import psycopg2
from flask import Blueprint, Response, jsonify, request, send_file, stream_with_context

from standin import config, db, migrations, redis_client

log = logging.getLogger("standin.views")

PREFIXES = {"console_api": "/console/api", "service_api": "/v1", "web_api": "/api"}


# ------------------------------------------------------------------ helpers
def reply(payload=None, status=200, headers=None):
    body = dict(payload or {})
    body.setdefault("served_by", "api")
    body.setdefault("hostname", config.HOSTNAME)
    resp = jsonify(body)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def error(status, code, message, **extra):
    return reply({"code": code, "message": message, "status": status, **extra}, status)


def iso(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def request_info():
    h = request.headers
    return {
        "method": request.method,
        "path": request.path,
        "host": h.get("Host"),
        "remote_addr": request.remote_addr,
        "x_forwarded_for": h.get("X-Forwarded-For"),
        "x_forwarded_proto": h.get("X-Forwarded-Proto"),
        "x_forwarded_port": h.get("X-Forwarded-Port"),
        "x_forwarded_host": h.get("X-Forwarded-Host"),
    }


def clamp(value, lo, hi, cast, default):
    try:
        return max(lo, min(hi, cast(value)))
    except (TypeError, ValueError):
        return default


def _opener(proxy=None):
    # Direct calls ignore any http_proxy in the environment; the SSRF check uses the proxy explicitly.
    proxies = {"http": proxy, "https": proxy} if proxy else {}
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies))


def _call(url, method="GET", headers=None, body=None, timeout=10, proxy=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _opener(proxy).open(req, timeout=timeout) as resp:
            raw = resp.read(65536)
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(65536), exc.code
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode("utf-8", "replace")
    return status, parsed


def db_check():
    try:
        with db.pool.cursor() as cur:
            cur.execute("SELECT current_database() AS db, version() AS version")
            row = cur.fetchone()
        return {"ok": True, "database": row["db"], "server": row["version"].split(",")[0]}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).strip()}"}


def redis_check():
    try:
        return {"ok": bool(redis_client.get().ping())}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def schema_check():
    try:
        conn = psycopg2.connect(**config.db_params())
        try:
            return migrations.status(conn)
        finally:
            conn.close()
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {str(exc).strip()}", "head": migrations.head()}


# ------------------------------------------------------------------ blueprint for /console/api, /v1, /api
bp = Blueprint("standin", __name__)


@bp.get("/ping")
def ping():
    root, problem = config.storage_root()
    return reply({
        "pong": True,
        "version": config.reported_version(),
        "image_version": config.image_version(),
        "mode": config.MODE,
        "pid": os.getpid(),
        "route_family": request.blueprint,
        "db": db_check(),
        "redis": redis_check(),
        "schema": schema_check(),
        "storage": {"type": config.STORAGE_TYPE, "root": root, "problem": problem,
                    "writable": bool(root) and os.access(root, os.W_OK)},
        "secret_key_fingerprint": config.secret_fingerprint(),
        "request": request_info(),
    })


@bp.post("/messages")
def create_message():
    doc = request.get_json(silent=True) or {}
    body = doc.get("body")
    if not isinstance(body, str):
        return error(400, "invalid_param", 'JSON body {"body": "<text>"} is required')
    with db.pool.cursor() as cur:
        if config.image_version_number() >= 2:
            cur.execute("INSERT INTO messages (body, tag) VALUES (%s, %s) RETURNING id, created_at",
                        (body, doc.get("tag")))
        else:
            cur.execute("INSERT INTO messages (body) VALUES (%s) RETURNING id, created_at", (body,))
        row = cur.fetchone()
    return reply({"id": row["id"], "created_at": iso(row["created_at"])}, 201)


@bp.get("/messages/<int:message_id>")
def get_message(message_id):
    cols = "id, body, created_at" + (", tag" if config.image_version_number() >= 2 else "")
    with db.pool.cursor() as cur:
        cur.execute(f"SELECT {cols} FROM messages WHERE id = %s", (message_id,))
        row = cur.fetchone()
    if row is None:
        return error(404, "not_found", f"message {message_id} not found")
    row = dict(row)
    row["created_at"] = iso(row["created_at"])
    return reply(row)


@bp.post("/tasks")
def create_task():
    from standin.tasks import compute_sha256

    doc = request.get_json(silent=True) or {}
    text = doc.get("input", "")
    if not isinstance(text, str):
        return error(400, "invalid_param", '"input" must be a string')
    queue = doc.get("queue") or config.DEFAULT_TASK_QUEUE
    rounds = clamp(doc.get("rounds", 1), 1, 1_000_000, int, 1)
    sleep = clamp(doc.get("sleep", 0), 0.0, 3600.0, float, 0.0)
    task_id = str(uuid.uuid4())
    with db.pool.cursor() as cur:  # the row exists before the worker can see the message
        cur.execute("INSERT INTO task_results (task_id, state, queue) VALUES (%s, 'PENDING', %s)",
                    (task_id, queue))
    compute_sha256.apply_async(args=[text, rounds, sleep], queue=queue, task_id=task_id)
    return reply({"task_id": task_id, "queue": queue, "state": "PENDING"}, 202)


@bp.get("/tasks/<task_id>")
def get_task(task_id):
    with db.pool.cursor() as cur:
        cur.execute("SELECT task_id, state, queue, result, error, worker, created_at, started_at, "
                    "finished_at FROM task_results WHERE task_id = %s", (task_id,))
        row = cur.fetchone()
    if row is None:
        return error(404, "not_found", f"task {task_id} not found")
    row = {k: iso(v) for k, v in dict(row).items()}
    return reply(row)


def _enqueue(task, args, queue):
    """Write the row (PENDING), then publish: a queue no worker consumes leaves it PENDING."""
    task_id = str(uuid.uuid4())
    with db.pool.cursor() as cur:
        cur.execute("INSERT INTO task_results (task_id, state, queue) VALUES (%s, 'PENDING', %s)",
                    (task_id, queue))
    task.apply_async(args=args, queue=queue, task_id=task_id)
    return task_id


@bp.post("/workflows/run")
def run_workflow():
    """Dify's workflow run (service API /v1/workflows/run). Since 1.13 a streaming run executes in a
    Celery worker, published on workflow_based_app_execution; the stand-in answers 202 with the run
    id at once (Dify streams the run's events back through Redis), and GET .../workflows/run/<id>
    reads the outcome. "seconds" is how long the run's nodes take; "until" (test hook) ends it
    earlier, once the Redis key standin:workflow:release:<until> is set."""
    from standin.tasks import workflow_run

    doc = request.get_json(silent=True) or {}
    mode = doc.get("response_mode", "streaming")
    if mode != "streaming":
        return error(400, "invalid_param", 'the stand-in runs workflows in "streaming" mode only (in a worker)')
    inputs = doc.get("inputs") or {}
    if not isinstance(inputs, dict):
        return error(400, "invalid_param", '"inputs" must be an object')
    seconds = clamp(doc.get("seconds", 0), 0.0, 7200.0, float, 0.0)
    until = doc.get("until")  # test hook: the run ends early once standin:workflow:release:<until> is set
    if until is not None and not (isinstance(until, str) and until.isidentifier()):
        return error(400, "invalid_param", '"until" must be a name (letters, digits, _)')
    run_id = _enqueue(workflow_run, [inputs, seconds, until], config.WORKFLOW_QUEUE)
    return reply({"workflow_run_id": run_id, "task_id": run_id, "queue": config.WORKFLOW_QUEUE,
                  "status": "running"}, 202)


@bp.get("/workflows/run/<run_id>")
def get_workflow_run(run_id):
    with db.pool.cursor() as cur:
        cur.execute("SELECT task_id, state, queue, result, error, worker, created_at, started_at, finished_at "
                    "FROM task_results WHERE task_id = %s", (run_id,))
        row = cur.fetchone()
    if row is None:
        return error(404, "not_found", f"workflow run {run_id} not found")
    status = {"PENDING": "waiting", "STARTED": "running", "SUCCESS": "succeeded", "FAILURE": "failed"}
    row = {k: iso(v) for k, v in dict(row).items()}
    row["status"] = status.get(row["state"], row["state"])
    row["outputs"] = json.loads(row["result"]) if row.get("result") else None
    return reply(row)


@bp.post("/datasets/<dataset_id>/summaries")
def generate_summary(dataset_id):
    """A summary index of a document (stand-in route): Dify publishes generate_summary_index_task on
    the dataset_summary queue; the outcome is read with GET .../tasks/<id>."""
    from standin.tasks import generate_summary_index

    doc = request.get_json(silent=True) or {}
    text = doc.get("text", "")
    if not isinstance(text, str) or not text.strip():
        return error(400, "invalid_param", '"text" must be a non-empty string')
    task_id = _enqueue(generate_summary_index, [dataset_id, text], config.SUMMARY_QUEUE)
    return reply({"task_id": task_id, "queue": config.SUMMARY_QUEUE, "state": "PENDING"}, 202)


@bp.post("/files/upload")
def upload_file():
    return _upload()


@bp.get("/files/<file_id>")
def download_file(file_id):
    return _download(file_id)


@bp.get("/sse")
def sse():
    count = clamp(request.args.get("count", 10), 1, 10000, int, 10)
    interval = clamp(request.args.get("interval", 0.2), 0.0, 60.0, float, 0.2)
    pad = clamp(request.args.get("pad", 0), 0, 65536, int, 0)
    started = time.monotonic()
    stream_id = str(uuid.uuid4())

    def generate():
        for i in range(count):
            delay = started + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # gevent-patched under gunicorn: yields to other requests
            event = {"event": "message", "index": i, "count": count, "stream_id": stream_id,
                     "sent_monotonic": time.monotonic(), "sent_wall": time.time(),
                     "served_by": "api", "hostname": config.HOSTNAME}
            if pad:
                event["pad"] = "x" * pad
            yield f"data: {json.dumps(event)}\n\n"
        end = {"event": "message_end", "count": count, "stream_id": stream_id,
               "elapsed": time.monotonic() - started, "served_by": "api", "hostname": config.HOSTNAME}
        yield f"data: {json.dumps(end)}\n\n"

    # Like Dify (compact_generate_response), no X-Accel-Buffering header unless asked for.
    resp = Response(stream_with_context(generate()), status=200, mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    if request.args.get("x_accel_buffering") in ("no", "yes"):
        resp.headers["X-Accel-Buffering"] = request.args["x_accel_buffering"]
    return resp


@bp.get("/sandbox")
def call_sandbox():
    url = config.CODE_EXECUTION_ENDPOINT.rstrip("/") + "/v1/sandbox/run"
    code = request.args.get("code", 'print("hello from the stand-in")')
    try:
        status, body = _call(url, "POST", {"X-Api-Key": config.CODE_EXECUTION_API_KEY},
                             {"language": "python3", "code": code, "preload": "", "enable_network": False})
    except Exception as exc:  # noqa: BLE001
        return error(502, "sandbox_unreachable", f"{url}: {type(exc).__name__}: {exc}")
    return reply({"sandbox_url": url, "sandbox_status": status, "sandbox": body},
                 200 if status == 200 else 502)


@bp.get("/plugin")
def call_plugin_daemon():
    url = config.PLUGIN_DAEMON_URL.rstrip("/") + "/plugin/standin-tenant/management/list"
    try:
        status, body = _call(url, "GET", {"X-Api-Key": config.PLUGIN_DAEMON_KEY})
    except Exception as exc:  # noqa: BLE001
        return error(502, "plugin_daemon_unreachable", f"{url}: {type(exc).__name__}: {exc}")
    return reply({"plugin_daemon_url": url, "plugin_daemon_status": status, "plugin_daemon": body},
                 200 if status == 200 else 502)


@bp.get("/ssrf")
def call_through_ssrf_proxy():
    """Fetch ?url= through SSRF_PROXY_HTTP(S)_URL, as Dify does for outbound HTTP from workflows."""
    url = request.args.get("url", "")
    if not url.startswith(("http://", "https://")):
        return error(400, "invalid_param", "?url=http(s)://... is required")
    proxy = config.SSRF_PROXY_HTTPS_URL if url.startswith("https://") else config.SSRF_PROXY_HTTP_URL
    if not proxy:
        return error(400, "no_proxy", "SSRF_PROXY_HTTP_URL / SSRF_PROXY_HTTPS_URL is not set")
    try:
        timeout = clamp(request.args.get("timeout", 10), 1, 60, float, 10)
        status, body = _call(url, proxy=proxy, timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        return reply({"url": url, "proxy": proxy, "ok": False, "error": f"{type(exc).__name__}: {exc}"}, 502)
    if isinstance(body, str):
        body = body[:2000]
    return reply({"url": url, "proxy": proxy, "ok": True, "upstream_status": status, "upstream": body})


@bp.get("/beat")
def beat_status():
    from standin.tasks import BEAT_COUNT_KEY, BEAT_KEY

    r = redis_client.get()
    raw, count = r.get(BEAT_KEY), r.get(BEAT_COUNT_KEY)
    last = json.loads(raw) if raw else None
    return reply({"last": last, "count": int(count or 0),
                  "age_seconds": (time.time() - last["ts"]) if last else None})


@bp.get("/slow")
def slow():
    seconds = clamp(request.args.get("seconds", 1), 0.0, 600.0, float, 1.0)
    started = time.monotonic()
    time.sleep(seconds)
    return reply({"slept": seconds, "elapsed": time.monotonic() - started, "pid": os.getpid()})


# ------------------------------------------------------------------ files (prefixed and root routes)
def _upload():
    root, problem = config.storage_root()
    if problem:
        return error(501, "storage_not_supported", problem)
    fs = request.files.get("file")
    if fs is None:
        return error(400, "no_file_uploaded", 'multipart field "file" is required')
    limit = config.UPLOAD_FILE_SIZE_LIMIT_MB * 1024 * 1024
    file_id = str(uuid.uuid4())
    key = f"upload_files/{file_id}"
    path = os.path.join(root, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            while True:
                chunk = fs.stream.read(1024 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise OverflowError
                digest.update(chunk)
                out.write(chunk)
        os.replace(tmp, path)
    except OverflowError:
        os.unlink(tmp)
        return error(413, "file_too_large", f"File size exceeded. {size} > {limit} (UPLOAD_FILE_SIZE_LIMIT)")
    name = fs.filename or file_id
    with db.pool.cursor() as cur:
        cur.execute("INSERT INTO upload_files (id, name, size, sha256, key, mime_type, created_by) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (file_id, name, size, digest.hexdigest(), key, fs.mimetype or None, config.HOSTNAME))
    return reply({"id": file_id, "name": name, "size": size, "sha256": digest.hexdigest(), "key": key}, 201)


def _download(file_id):
    root, problem = config.storage_root()
    if problem:
        return error(501, "storage_not_supported", problem)
    with db.pool.cursor() as cur:
        cur.execute("SELECT id, name, size, sha256, key, mime_type FROM upload_files WHERE id = %s",
                    (file_id,))
        row = cur.fetchone()
    if row is None:
        return error(404, "file_not_found", f"file {file_id} not found")
    path = os.path.join(root, row["key"])
    if not os.path.isfile(path):
        return error(404, "file_missing_in_storage",
                     f"file {file_id} is recorded but {row['key']} is missing")
    resp = send_file(path, mimetype=row["mime_type"] or "application/octet-stream",
                     download_name=row["name"], conditional=False, etag=False)
    resp.headers["X-Standin-Served-By"] = "api"
    resp.headers["X-Standin-Hostname"] = config.HOSTNAME
    resp.headers["X-Standin-Sha256"] = row["sha256"]
    return resp


# ------------------------------------------------------------------ root routes
root_bp = Blueprint("standin_root", __name__)


@root_bp.get("/health")
def health():
    # Dify: {"pid", "status": "ok", "version"}; the stand-in adds served_by and hostname.
    return reply({"pid": os.getpid(), "status": "ok", "version": config.reported_version()})


@root_bp.get("/files/ping")
def files_ping():
    return reply({"pong": True, "route_family": "files", "version": config.reported_version(),
                  "request": request_info()})


@root_bp.post("/files/upload")
def files_upload_root():
    return _upload()


@root_bp.get("/files/<file_id>")
@root_bp.get("/files/<file_id>/file-preview")
@root_bp.get("/files/<file_id>/image-preview")
def files_download_root(file_id):
    return _download(file_id)


@root_bp.route("/mcp/ping", methods=["GET", "POST"])
@root_bp.route("/triggers/ping", methods=["GET", "POST"])
def family_ping():
    return reply({"pong": True, "route_family": request.path.strip("/").split("/")[0],
                  "version": config.reported_version(), "request": request_info()})


@root_bp.route("/mcp/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@root_bp.route("/triggers/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def family_echo(rest):
    return reply({"route_family": request.path.strip("/").split("/")[0], "rest": rest,
                  "version": config.reported_version(), "request": request_info(),
                  "body_bytes": len(request.get_data(cache=False) or b"")})


@root_bp.get("/inner/api/ping")
def inner_api_ping():
    """What the plugin daemon calls back with DIFY_INNER_API_KEY (= INNER_API_KEY_FOR_PLUGIN here)."""
    expected = config.INNER_API_KEY_FOR_PLUGIN
    if not expected or request.headers.get("X-Inner-Api-Key") != expected:
        return error(401, "unauthorized", "X-Inner-Api-Key does not match INNER_API_KEY_FOR_PLUGIN")
    return reply({"pong": True, "route_family": "inner_api", "version": config.reported_version()})


# ------------------------------------------------------------------ collaboration (/socket.io/)
@root_bp.route("/socket.io/", methods=["GET", "POST"])
def socket_io():
    """Socket.IO's path. As Dify's api (the api at 1.13.3, api_websocket from 1.14), a WebSocket
    upgrade works only under gevent-websocket's worker (SERVER_WORKER_CLASS=geventwebsocket.gunicorn.
    workers.GeventWebSocketWorker, Dify's docs: "other values break WebSocket support"), which does
    the RFC 6455 handshake and hands the socket over as wsgi.websocket. The stand-in speaks no
    Engine.IO: every message it receives comes back as it was. Without an upgrade (polling) the
    answer is plain JSON."""
    ws = request.environ.get("wsgi.websocket")
    if ws is not None:
        log.info("socket.io: websocket opened (%s)", request.headers.get("X-Forwarded-For") or request.remote_addr)
        while True:
            message = ws.receive()
            if message is None:  # closed by the client
                break
            ws.send(message)
        return Response(status=200)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        worker = os.environ.get("SERVER_WORKER_CLASS", "gevent")
        return error(400, "websocket_unavailable",
                     f"a WebSocket upgrade needs SERVER_WORKER_CLASS=geventwebsocket.gunicorn.workers."
                     f"GeventWebSocketWorker (this process runs {worker})")
    return reply({"socket_io": "polling", "transport": request.args.get("transport"),
                  "worker_class": os.environ.get("SERVER_WORKER_CLASS", "gevent"),
                  "version": config.reported_version(), "request": request_info()})


# Werkzeug routes a WebSocket handshake (Upgrade: websocket) only to a rule made for one, and answers
# 400 for any other: the same view for both, as Socket.IO serves polling and WebSocket on one path.
root_bp.add_url_rule("/socket.io/", endpoint="socket_io_websocket", view_func=socket_io, websocket=True)
