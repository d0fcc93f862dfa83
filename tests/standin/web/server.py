# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# dify-web stand-in: answers on PORT (default 3000) like Dify's Next.js server would for a gateway test.
# It binds where Next.js's standalone server.js binds (the server Dify's web image runs under pm2):
# the address of $HOSTNAME, or 0.0.0.0 when HOSTNAME is unset or empty. Docker sets HOSTNAME to the
# container's id, which resolves to the container's own address: then nothing answers on 127.0.0.1.
# Every page is a small HTML document containing "Dify stand-in web" and the version; /_next/static/...
# serves files from ./static/_next/static; /_standin/info is JSON. The variables Dify's web reads
# (docker-compose-template.yaml's web service at Dify 1.13.3) are only echoed there, so a test can
# see which reached the container. wget is installed for the compose healthcheck.
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
# v3 stands in for Dify 1.16.1's web (difyops/release_sets/dify-1.16.1.yaml).
UPSTREAM = {"v3": "1.16.1"}.get(IMAGE_VERSION, UPSTREAM_VERSION)
VERSION = os.environ.get("STANDIN_REPORTED_VERSION") or f"{UPSTREAM}-standin.{IMAGE_VERSION}"
HOSTNAME = socket.gethostname()
HERE = os.path.dirname(os.path.abspath(__file__))
# The web service's environment in Dify 1.13.3's compose template (commit 0055b983), and a few the
# image's entrypoint maps besides (NEXT_PUBLIC_ENABLE_SINGLE_DOLLAR_LATEX; the image's own ENV).
ECHOED = ("CONSOLE_API_URL", "APP_API_URL", "AMPLITUDE_API_KEY", "NEXT_PUBLIC_COOKIE_DOMAIN",
          "NEXT_PUBLIC_SOCKET_URL", "SENTRY_DSN", "NEXT_TELEMETRY_DISABLED", "TEXT_GENERATION_TIMEOUT_MS",
          "CSP_WHITELIST", "ALLOW_EMBED", "ALLOW_UNSAFE_DATA_SCHEME", "MARKETPLACE_API_URL", "MARKETPLACE_URL",
          "TOP_K_MAX_VALUE", "INDEXING_MAX_SEGMENTATION_TOKENS_LENGTH", "LOOP_NODE_MAX_COUNT", "MAX_TOOLS_NUM",
          "MAX_PARALLEL_LIMIT", "MAX_ITERATIONS_NUM", "MAX_TREE_DEPTH", "ENABLE_WEBSITE_JINAREADER",
          "ENABLE_WEBSITE_FIRECRAWL", "ENABLE_WEBSITE_WATERCRAWL", "NEXT_PUBLIC_ENABLE_SINGLE_DOLLAR_LATEX",
          "NEXT_PUBLIC_API_PREFIX", "NEXT_PUBLIC_PUBLIC_API_PREFIX", "PM2_INSTANCES", "DEPLOY_ENV", "EDITION",
          "HOSTNAME",
          # What Dify 1.14's and 1.16's web read besides (compose template at 1.16.1; the 1.16.0 docs).
          "SERVER_CONSOLE_API_URL", "EXPERIMENTAL_ENABLE_VINEXT", "COOKIEYES_SITE_KEY",
          "WORKFLOW_GENERATION_TIMEOUT_MS", "NEXT_PUBLIC_ENABLE_AGENT_V2")

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
                    "image_version": IMAGE_VERSION, "listening_on": BOUND.get("address"),
                    "settings": settings(), "environment": sorted(os.environ), "path": request.path,
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


BOUND: dict[str, str] = {}


def bind_address(port: int) -> str:
    """Next.js standalone: `hostname = process.env.HOSTNAME || '0.0.0.0'`, then listen(port, hostname),
    which resolves a name to its first address."""
    hostname = os.environ.get("HOSTNAME") or "0.0.0.0"
    return socket.getaddrinfo(hostname, port, socket.AF_UNSPEC, socket.SOCK_STREAM)[0][4][0]


def main():
    port = int(os.environ.get("PORT", "3000"))
    address = bind_address(port)
    BOUND["address"] = f"{address}:{port}"
    server = WSGIServer((address, port), app, log=_Log(), error_log=_Log())

    def stop():
        log.info("stopping (signal)")
        server.stop(timeout=5)

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    log.info("dify-web stand-in (TEST DOUBLE) %s listening on %s (HOSTNAME=%s)", VERSION, BOUND["address"],
             os.environ.get("HOSTNAME", ""))
    server.serve_forever()


if __name__ == "__main__":
    main()
