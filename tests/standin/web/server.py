# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# dify-web stand-in: answers on PORT (default 3000) like Dify's Next.js server would for a gateway test.
# Every page is a small HTML document containing "Dify stand-in web" and the version; /_next/static/...
# serves files from ./static/_next/static; /_standin/info is JSON. CONSOLE_API_URL and APP_API_URL (and a
# few other Dify web variables) are only echoed. wget is installed for the compose healthcheck.
from gevent import monkey

monkey.patch_all()

import html  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from flask import Flask, jsonify, request, send_from_directory  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

UPSTREAM_VERSION = "1.13.3"
IMAGE_VERSION = os.environ.get("STANDIN_VERSION", "v1")
VERSION = os.environ.get("STANDIN_REPORTED_VERSION") or f"{UPSTREAM_VERSION}-standin.{IMAGE_VERSION}"
HOSTNAME = socket.gethostname()
HERE = os.path.dirname(os.path.abspath(__file__))
ECHOED = ("CONSOLE_API_URL", "APP_API_URL", "MARKETPLACE_API_URL", "MARKETPLACE_URL",
          "NEXT_PUBLIC_API_PREFIX", "NEXT_PUBLIC_PUBLIC_API_PREFIX", "TEXT_GENERATION_TIMEOUT_MS",
          "PM2_INSTANCES", "DEPLOY_ENV", "EDITION")

LOG_JSON = os.environ.get("LOG_OUTPUT_FORMAT", "text").lower() == "json"
logging.basicConfig(stream=sys.stdout, level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                    format="%(asctime)s %(levelname)s [web] %(message)s")
log = logging.getLogger("standin.web")

app = Flask("dify-web-standin", static_folder=None)
app.json.sort_keys = False


def settings():
    return {name: os.environ.get(name, "") for name in ECHOED}


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Dify stand-in web</title>
<link rel="stylesheet" href="/_next/static/standin/app.css"></head>
<body><!-- TEST DOUBLE: not Dify -->
<h1>Dify stand-in web</h1>
<p>version <span id="version">{version}</span> &middot; page <code>{path}</code> &middot; served by web on
<span id="hostname">{hostname}</span></p>
<pre id="settings">{settings}</pre>
<script src="/_next/static/standin/app.js"></script>
</body></html>
"""


@app.get("/_standin/info")
def info():
    return jsonify({"served_by": "web", "hostname": HOSTNAME, "version": VERSION,
                    "image_version": IMAGE_VERSION,
                    "settings": settings(), "path": request.path,
                    "x_forwarded_for": request.headers.get("X-Forwarded-For"),
                    "x_forwarded_proto": request.headers.get("X-Forwarded-Proto")})


@app.get("/_next/static/<path:name>")
def next_static(name):
    resp = send_from_directory(os.path.join(HERE, "static", "_next", "static"), name)
    resp.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    resp.headers["X-Standin-Served-By"] = "web"
    return resp


@app.route("/", defaults={"path": ""}, methods=["GET", "HEAD"])
@app.route("/<path:path>", methods=["GET", "HEAD"])
def page(path):
    body = PAGE.format(version=html.escape(VERSION), path=html.escape("/" + path),
                       hostname=html.escape(HOSTNAME),
                       settings=html.escape(json.dumps(settings(), indent=2)))
    resp = app.response_class(body, mimetype="text/html")
    resp.headers["X-Standin-Served-By"] = "web"
    return resp


class _Log:
    """gevent access log -> stdout (JSON when LOG_OUTPUT_FORMAT=json)."""

    def write(self, line):
        line = line.strip()
        if not line:
            return
        if LOG_JSON:
            line = json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "severity": "INFO",
                               "service": "dify-web-standin", "hostname": HOSTNAME, "message": line})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main():
    port = int(os.environ.get("PORT", "3000"))
    server = WSGIServer(("0.0.0.0", port), app, log=_Log(), error_log=_Log())

    def stop():
        log.info("stopping (signal)")
        server.stop(timeout=5)

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    log.info("dify-web stand-in (TEST DOUBLE) %s listening on :%d", VERSION, port)
    server.serve_forever()


if __name__ == "__main__":
    main()
