# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# dify-sandbox stand-in: the HTTP contract of langgenius/dify-sandbox, without running any code.
#   GET  /health                       200 "ok"
#   POST /v1/sandbox/run               X-Api-Key must equal API_KEY (401 otherwise);
#                                      {"code":0,"message":"success","data":{"error":"","stdout":...}}
#   GET  /v1/sandbox/dependencies      X-Api-Key checked; {"code":0,"data":{"dependencies":[]}}
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

import gevent  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

VERSION = (os.environ.get("STANDIN_REPORTED_VERSION")
           or f"0.2.14-standin.{os.environ.get('STANDIN_VERSION', 'v1')}")
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
