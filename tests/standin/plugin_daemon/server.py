# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# dify-plugin-daemon stand-in: the parts of langgenius/dify-plugin-daemon's contract a deployment touches.
# At start it connects to PostgreSQL (DB_HOST, DB_PORT, DB_USERNAME, DB_PASSWORD) and creates DB_DATABASE
# (default dify_plugin) when missing, as the real daemon does, then records its boot in a table there and
# in its storage (/app/storage, PLUGIN_STORAGE_LOCAL_ROOT).
# Before anything else it checks its configuration as 0.5.3 does (daemon_config.py) and refuses to
# start on what the real daemon refuses (exit 2 for a value envconfig cannot parse, exit 1 for
# "invalid configuration", e.g. "plugin remote installing host is empty"). With remote installing on
# (0.5.3's default) it listens on PLUGIN_REMOTE_INSTALLING_HOST:PORT (the plugin debugging port).
# The 0.6 line (the image's DAEMON_LINE file: difyops-standin/dify-plugin-daemon:v3, as 0.6.3) checks
# 0.6.3's rules, and does not migrate: since 0.6.0 only `/app/commandline migrate` (commandline.py)
# creates the database and its tables, and the image's CMD runs it first. Started without it, this
# server refuses to start (stricter than the real one, which fails at its first query). Its plugin
# processes are built with an SDK that exits 255 when their parent is PID 1 (0.6.3's
# docker/local.dockerfile, which therefore starts the daemon under tini).
#   GET  /health/check                          200 JSON (no key)
#   ANY  /plugin/<tenant>/...                   X-Api-Key must equal SERVER_KEY (401 otherwise)
#   ANY  /e/<path>                              JSON echo of the path and the Dify-Hook-Url header
#   GET  /standin/inner-api-check               calls DIFY_INNER_API_URL/inner/api/ping
#                                               with X-Inner-Api-Key: DIFY_INNER_API_KEY
#   GET  /standin/plugin-env                    starts a plugin process as 0.5.3 does (the daemon's
#                                               whole environment, cmd.Env = cmd.Environ()) and returns
#                                               what it saw: variable names and value digests
import os  # noqa: E402,I001  (already imported by the interpreter: safe before gevent)
import sys  # noqa: E402

import daemon_config  # noqa: E402  (no third-party import: safe before gevent)

LINE = daemon_config.image_line()
if LINE == daemon_config.LINE_0_6 and not daemon_config._time_zone_ok(os.environ.get("SERVER_TZ") or "UTC"):
    # 0.6.3's cmd/server/main.go loads the zone before its recover is in place: a Go panic, exit 2.
    print("[ERROR] load location error", file=sys.stderr, flush=True)
    sys.exit(2)
_REFUSAL = daemon_config.check()
if _REFUSAL is not None:
    # As 0.5.3: one error line, then the process ends (Go panic: 2; recovered panic: 1).
    print(f"[ERROR] {_REFUSAL.message}", file=sys.stderr, flush=True)
    sys.exit(_REFUSAL.code)

from gevent import monkey  # noqa: E402  (after the configuration check, as the daemon checks first)

monkey.patch_all()

import psycogreen.gevent  # noqa: E402

psycogreen.gevent.patch_psycopg()

import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402  (gevent-patched)
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import gevent  # noqa: E402
import psycopg2  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from gevent.server import StreamServer  # noqa: E402
from psycopg2 import errors as pg_errors  # noqa: E402
from psycopg2 import sql  # noqa: E402

UPSTREAM = {daemon_config.LINE_0_5: "0.5.3-local", daemon_config.LINE_0_6: "0.6.3-local"}[LINE]
VERSION = (os.environ.get("STANDIN_REPORTED_VERSION")
           or f"{UPSTREAM}-standin.{os.environ.get('STANDIN_VERSION', 'v1')}")
MIGRATIONS_TABLE = "standin_daemon_migrations"
HOSTNAME = socket.gethostname()


def env(name, default=""):
    value = os.environ.get(name)
    return default if value is None or value == "" else value


SERVER_PORT = int(env("SERVER_PORT", "5002"))
SERVER_KEY = env("SERVER_KEY", "")  # empty: every /plugin call is refused, so a missing key shows
DB = dict(host=env("DB_HOST", "localhost"), port=int(env("DB_PORT", "5432")),
          user=env("DB_USERNAME", "postgres"), password=os.environ.get("DB_PASSWORD", ""),
          connect_timeout=5, application_name="dify-plugin-daemon-standin",
          sslmode=env("DB_SSL_MODE", "disable"))
DB_DATABASE = env("DB_DATABASE", "dify_plugin")
MAINTENANCE_DB = env("STANDIN_DB_MAINTENANCE_DATABASE", "postgres")
STORAGE_ROOT = env("PLUGIN_STORAGE_LOCAL_ROOT", "/app/storage")
DIFY_INNER_API_URL = env("DIFY_INNER_API_URL", "http://api:5001")
DIFY_INNER_API_KEY = env("DIFY_INNER_API_KEY", "")
CONFIG = daemon_config.load()
HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN_TIMEOUT = 10
ECHOED = ("PLUGIN_STORAGE_TYPE", "PLUGIN_WORKING_PATH", "PLUGIN_REMOTE_INSTALLING_HOST",
          "PLUGIN_REMOTE_INSTALLING_PORT",
          "PLUGIN_DEBUGGING_HOST", "PLUGIN_DEBUGGING_PORT", "MAX_PLUGIN_PACKAGE_SIZE", "PPROF_ENABLED",
          "FORCE_VERIFYING_SIGNATURE", "PIP_MIRROR_URL", "MARKETPLACE_ENABLED", "REDIS_HOST", "REDIS_PORT")

logging.basicConfig(stream=sys.stdout, level=env("LOG_LEVEL", "INFO").upper(),
                    format="%(asctime)s %(levelname)s [plugin_daemon] %(message)s")
log = logging.getLogger("standin.plugin_daemon")
app = Flask("dify-plugin-daemon-standin")
app.json.sort_keys = False
STATE = {"boot_id": None, "started_at": time.time()}


def reply(payload, status=200):
    body = {"served_by": "plugin_daemon", "hostname": HOSTNAME, **payload}
    resp = jsonify(body)
    resp.status_code = status
    return resp


def connect(database, attempts):
    last = None
    for i in range(attempts):
        try:
            conn = psycopg2.connect(dbname=database, **DB)
            conn.autocommit = True
            return conn
        except psycopg2.OperationalError as exc:
            last = exc
            log.warning("database %s:%s/%s not reachable (attempt %d/%d): %s",
                        DB["host"], DB["port"], database,
                        i + 1, attempts, str(exc).strip())
            time.sleep(1)
    raise SystemExit(f"plugin daemon stand-in: database {DB['host']}:{DB['port']}/{database} "
                     f"not reachable: {last}")


def create_database(attempts):
    """What the daemon's database layer does when it cannot connect: create DB_DATABASE, then make
    its tables (0.5.3: at every start; 0.6: `commandline migrate` only)."""
    conn = connect(MAINTENANCE_DB, attempts)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_DATABASE,))
            if cur.fetchone() is None:
                log.info("creating database %s", DB_DATABASE)
                try:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_DATABASE)))
                except pg_errors.DuplicateDatabase:
                    log.info("database %s was created concurrently", DB_DATABASE)
            else:
                log.info("database %s exists", DB_DATABASE)
    finally:
        conn.close()
    conn = connect(DB_DATABASE, attempts)
    try:
        with conn.cursor() as cur:
            cur.execute("""CREATE TABLE IF NOT EXISTS standin_daemon_boots (
                               id serial PRIMARY KEY, hostname text, version text,
                               started_at timestamptz NOT NULL DEFAULT now())""")
            cur.execute(f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
                               id serial PRIMARY KEY, version text, migrated_at timestamptz NOT NULL DEFAULT now())""")
            # One row per version migrated to: starting again (0.5.3 migrates at every start) adds none.
            cur.execute(f"INSERT INTO {MIGRATIONS_TABLE} (version) SELECT %s WHERE NOT EXISTS "
                        f"(SELECT 1 FROM {MIGRATIONS_TABLE} WHERE version = %s)", (VERSION, VERSION))
    finally:
        conn.close()


def init_database():
    attempts = int(env("STANDIN_DB_CONNECT_RETRIES", "30"))
    if LINE == daemon_config.LINE_0_5:
        create_database(attempts)
    conn = connect(DB_DATABASE, attempts)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s), to_regclass('standin_daemon_boots')", (MIGRATIONS_TABLE,))
            if None in cur.fetchone():
                log.error("database %s is not migrated (no %s): /app/main does not migrate since 0.6.0; "
                          "run /app/commandline migrate first (the image's CMD does)", DB_DATABASE, MIGRATIONS_TABLE)
                raise SystemExit(1)
            cur.execute("INSERT INTO standin_daemon_boots (hostname, version) VALUES (%s, %s) RETURNING id",
                        (HOSTNAME, VERSION))
            STATE["boot_id"] = cur.fetchone()[0]
    finally:
        conn.close()


def init_storage():
    os.makedirs(os.path.join(STORAGE_ROOT, "standin"), exist_ok=True)
    with open(os.path.join(STORAGE_ROOT, "standin", "boots.log"), "a") as fh:
        fh.write(json.dumps({"ts": time.time(), "hostname": HOSTNAME, "boot_id": STATE["boot_id"]}) + "\n")


def db_ok():
    try:
        conn = psycopg2.connect(dbname=DB_DATABASE, **{**DB, "connect_timeout": 2})
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM standin_daemon_boots")
                return {"ok": True, "database": DB_DATABASE, "boots": cur.fetchone()[0]}
        finally:
            conn.close()
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "database": DB_DATABASE, "error": f"{type(exc).__name__}: {str(exc).strip()}"}


@app.get("/health/check")
def health_check():
    return reply({"code": 0, "message": "success", "status": "ok", "version": VERSION,
                  "data": {"version": VERSION, "boot_id": STATE["boot_id"]}, "db": db_ok()})


@app.route("/plugin/<tenant_id>/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def plugin_api(tenant_id, rest):
    if not SERVER_KEY or request.headers.get("X-Api-Key") != SERVER_KEY:
        return reply({"code": -401, "message": "unauthorized: X-Api-Key does not match SERVER_KEY",
                      "data": None},
                      401)
    if rest == "management/list":
        return reply({"code": 0, "message": "success", "data": {"list": [], "total": 0},
                      "tenant_id": tenant_id, "version": VERSION})
    return reply({"code": 0, "message": "success", "data": None, "tenant_id": tenant_id, "rest": rest,
                  "method": request.method, "version": VERSION})


@app.route("/e/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def endpoint_hook(rest):
    return reply({"route_family": "e", "path": request.path, "rest": rest, "method": request.method,
                  "query": request.query_string.decode("latin-1"),
                  "dify_hook_url": request.headers.get("Dify-Hook-Url"),
                  "x_forwarded_for": request.headers.get("X-Forwarded-For"),
                  "x_forwarded_proto": request.headers.get("X-Forwarded-Proto"),
                  "body_bytes": len(request.get_data(cache=False) or b""), "version": VERSION})


@app.get("/standin/inner-api-check")
def inner_api_check():
    url = DIFY_INNER_API_URL.rstrip("/") + "/inner/api/ping"
    req = urllib.request.Request(url, headers={"X-Inner-Api-Key": DIFY_INNER_API_KEY})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            status, raw = resp.status, resp.read(65536)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(65536)
    except Exception as exc:  # noqa: BLE001
        return reply({"url": url, "ok": False, "error": f"{type(exc).__name__}: {exc}"}, 502)
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return reply({"url": url, "ok": status == 200, "api_status": status, "api": body},
                 200 if status == 200 else 502)


def plugin_environment():
    """0.5.3 local runtime (internal/core/local_runtime/subprocess.go): `python -m <entrypoint>` in the
    plugin's working folder, cmd.Env = cmd.Environ() (the daemon's whole environment), plus
    HTTPS_PROXY / HTTP_PROXY / NO_PROXY when set, INSTALL_METHOD=local and PATH."""
    env = dict(os.environ)
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
        if CONFIG[name]:
            env[name] = CONFIG[name]
    env["INSTALL_METHOD"] = "local"
    env["PATH"] = os.environ.get("PATH", "")
    return env


@app.get("/standin/plugin-env")
def plugin_env():
    workdir = os.path.join(CONFIG["PLUGIN_WORKING_PATH"], "standin-plugin")
    os.makedirs(workdir, exist_ok=True)
    shutil.copyfile(os.path.join(HERE, "standin_plugin.py"), os.path.join(workdir, "standin_plugin.py"))
    marker = os.path.join(workdir, "SDK_EXITS_UNDER_PID_1")
    if LINE == daemon_config.LINE_0_6:
        open(marker, "w").close()
    elif os.path.exists(marker):
        os.remove(marker)
    proc = subprocess.Popen([sys.executable, "-m", "standin_plugin"], cwd=workdir, env=plugin_environment(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with gevent.Timeout(PLUGIN_TIMEOUT, False):
            line = proc.stdout.readline()
        report = json.loads(line) if line else None
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=PLUGIN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not report:
        return reply({"ok": False, "error": "the plugin process printed nothing", "exit_code": proc.returncode,
                      "stderr": proc.stderr.read(2000).decode("utf-8", "replace")}, 502)
    return reply({"ok": True, "exit_code": proc.returncode, "plugin": report})


def serve_debugging():
    """0.5.3's remote (debug) installing server: a TCP server on PLUGIN_REMOTE_INSTALLING_HOST:PORT
    (internal/core/debugging_runtime/server.go). The stand-in greets and closes; it runs no plugin."""
    if not CONFIG["PLUGIN_REMOTE_INSTALLING_ENABLED"]:
        return None

    def greet(sock, _address):
        try:
            sock.sendall(b"dify-plugin-daemon stand-in (TEST DOUBLE): plugin debugging port\n")
        finally:
            sock.close()

    server = StreamServer((CONFIG["PLUGIN_REMOTE_INSTALLING_HOST"], CONFIG["PLUGIN_REMOTE_INSTALLING_PORT"]), greet)
    server.start()
    log.info("plugin debugging (remote installing) on %s:%d", CONFIG["PLUGIN_REMOTE_INSTALLING_HOST"],
             CONFIG["PLUGIN_REMOTE_INSTALLING_PORT"])
    return server


@app.get("/standin/info")
def standin_info():
    return reply({"version": VERSION, "line": LINE, "pid": os.getpid(), "database": DB_DATABASE, "storage_root": STORAGE_ROOT,
                  "boot_id": STATE["boot_id"], "settings": {k: os.environ.get(k, "") for k in ECHOED}})


@app.errorhandler(404)
def not_found(_exc):
    return reply({"code": -404, "message": "not found", "path": request.path}, 404)


def main():
    # As PID 1 the process would ignore SIGTERM while still connecting: exit cleanly instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("dify-plugin-daemon stand-in (TEST DOUBLE) %s starting", VERSION)
    init_database()
    init_storage()
    debugging = serve_debugging()
    server = WSGIServer((CONFIG["SERVER_HOST"], SERVER_PORT), app, log=None)

    def stop():
        log.info("stopping (signal)")
        if debugging is not None:
            debugging.stop(timeout=1)
        server.stop(timeout=5)

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    log.info("listening on :%d (database %s, storage %s, boot %s)", SERVER_PORT, DB_DATABASE, STORAGE_ROOT,
             STATE["boot_id"])
    server.serve_forever()


if __name__ == "__main__":
    main()
