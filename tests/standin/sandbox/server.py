# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# dify-sandbox stand-in: the HTTP contract of langgenius/dify-sandbox, without running any code.
#   GET  /health                       200 "ok"
#   POST /v1/sandbox/run               X-Api-Key must equal API_KEY (401 otherwise);
#                                      {"code":0,"message":"success","data":{"error":"","stdout":...}}
#   GET  /v1/sandbox/dependencies      X-Api-Key checked; {"code":0,"data":{"dependencies":[]}}
#   GET  /standin/fetch?url=           X-Api-Key checked; what sandboxed code that fetches the URL would
#                                      get: 0.2.14 runs code with an empty environment except
#                                      HTTP_PROXY / HTTPS_PROXY (when ENABLE_NETWORK), so the request
#                                      goes through the SSRF proxy (internal/core/runner/python/python.go)
# The submitted code is NOT executed: stdout is a fixed line naming the language, the code's size and
# sha256, so a caller can tell its request arrived intact. Reads SANDBOX_PORT (8194), API_KEY
# (dify-sandbox), and echoes GIN_MODE, WORKER_TIMEOUT, ENABLE_NETWORK, HTTP_PROXY, HTTPS_PROXY.
from gevent import monkey

monkey.patch_all()

import hashlib  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import gevent  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

# v3 stands in for 0.2.15 (Dify 1.15 and 1.16): the same variables and routes as 0.2.14 (git diff
# 0.2.14 0.2.15 touches neither internal/static/config.go nor conf/config.yaml).
VERSION = (os.environ.get("STANDIN_REPORTED_VERSION")
           or ("0.2.15" if os.environ.get("STANDIN_VERSION") == "v3" else "0.2.14")
           + f"-standin.{os.environ.get('STANDIN_VERSION', 'v1')}")
HOSTNAME = socket.gethostname()
API_KEY = os.environ.get("API_KEY", "dify-sandbox")
ECHOED = ("GIN_MODE", "WORKER_TIMEOUT", "ENABLE_NETWORK", "HTTP_PROXY", "HTTPS_PROXY", "SANDBOX_PORT")

logging.basicConfig(stream=sys.stdout, level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                    format="%(asctime)s %(levelname)s [sandbox] %(message)s")
log = logging.getLogger("standin.sandbox")
app = Flask("dify-sandbox-standin")
app.json.sort_keys = False


def unauthorized():
    resp = jsonify({"code": -401, "message": "Unauthorized", "data": None,
                    "served_by": "sandbox", "hostname": HOSTNAME})
    resp.status_code = 401
    return resp


def authorized():
    return request.headers.get("X-Api-Key") == API_KEY


@app.get("/health")
def health():
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.post("/v1/sandbox/run")
def run():
    if not authorized():
        return unauthorized()
    doc = request.get_json(silent=True) or {}
    language = str(doc.get("language", ""))
    code = str(doc.get("code", ""))
    digest = hashlib.sha256(code.encode()).hexdigest()
    stdout = (f"stand-in sandbox: {language} code received ({len(code.encode())} bytes, sha256 {digest}); "
              "not executed\n")
    return jsonify({"code": 0, "message": "success",
                    "data": {"error": "", "stdout": stdout},
                    "served_by": "sandbox", "hostname": HOSTNAME, "version": VERSION,
                    "settings": {k: os.environ.get(k, "") for k in ECHOED}})


@app.get("/v1/sandbox/dependencies")
def dependencies():
    if not authorized():
        return unauthorized()
    return jsonify({"code": 0, "message": "success", "data": {"dependencies": []},
                    "served_by": "sandbox", "hostname": HOSTNAME})


def truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "t", "true")  # Go's strconv.ParseBool, as 0.2.14 reads it


def runner_environment() -> dict[str, str]:
    """The environment 0.2.14 gives the code it runs: nothing but the proxies, and those only with
    ENABLE_NETWORK (internal/static/config.go reads them only then)."""
    env: dict[str, str] = {}
    if truthy(os.environ.get("ENABLE_NETWORK", "")):
        for name in ("HTTPS_PROXY", "HTTP_PROXY"):
            if os.environ.get(name):
                env[name] = os.environ[name]
    return env


@app.get("/standin/fetch")
def fetch():
    if not authorized():
        return unauthorized()
    url = request.args.get("url", "")
    if not url.startswith(("http://", "https://")):
        return jsonify({"code": -400, "message": "?url=http(s)://... is required"}), 400
    env = runner_environment()
    if not truthy(os.environ.get("ENABLE_NETWORK", "")):
        return jsonify({"code": 0, "ok": False, "error": "network disabled (ENABLE_NETWORK=false)",
                        "runner_env": sorted(env), "served_by": "sandbox"})
    proxies = {"http": env["HTTP_PROXY"]} if "HTTP_PROXY" in env else {}
    if "HTTPS_PROXY" in env:
        proxies["https"] = env["HTTPS_PROXY"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))
    try:
        with opener.open(url, timeout=10) as resp:
            status, body = resp.status, resp.read(2000)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(2000)
    except Exception as exc:  # noqa: BLE001
        return jsonify({"code": 0, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                        "runner_env": sorted(env), "served_by": "sandbox"})
    return jsonify({"code": 0, "ok": True, "status": status, "body": body.decode("utf-8", "replace"),
                    "via_proxy": proxies.get(url.split(":", 1)[0], ""), "runner_env": sorted(env),
                    "served_by": "sandbox"})


@app.errorhandler(404)
def not_found(_exc):
    resp = jsonify({"code": -404, "message": "not found", "served_by": "sandbox", "hostname": HOSTNAME})
    resp.status_code = 404
    return resp


def main():
    port = int(os.environ.get("SANDBOX_PORT") or "8194")
    server = WSGIServer(("0.0.0.0", port), app, log=None)

    def stop():
        log.info("stopping (signal)")
        server.stop(timeout=5)

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    log.info("dify-sandbox stand-in (TEST DOUBLE) %s listening on :%d", VERSION, port)
    server.serve_forever()


if __name__ == "__main__":
    main()
