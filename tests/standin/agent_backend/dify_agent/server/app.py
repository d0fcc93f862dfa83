# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# dify-agent-backend stand-in: the parts of Dify's agent backend (langgenius/dify dify-agent, the
# image langgenius/dify-agent-backend, Dify 1.16.1) a deployment touches. Started as the real image
# starts it, `uvicorn dify_agent.server.app:app --host 0.0.0.0 --port 5050` (dify-agent/Dockerfile
# at 3d068378: no ENTRYPOINT, user dify uid 1001, no curl), a FastAPI app ("Dify Agent Run Server",
# app.py at 6ee7e3b6), so its schema is served at /openapi.json as the real one's is.
# At import, as the real settings do, it refuses a malformed DIFY_AGENT_SERVER_SECRET_KEY (secret.py)
# and a missing one while DIFY_AGENT_STUB_API_BASE_URL is set: one line on stderr, exit 1.
#   GET  /openapi.json             FastAPI's schema (what the bundle's healthcheck asks)
#   GET  /agent-stub/ping          the sandbox's callback path (reached through agent_ssrf_proxy)
#   GET  /standin/info             version, which settings are set (names only), Redis reachable
#   POST /standin/sandbox/run      {"script": ...}: runs it in the local sandbox through its API
#                                  (DIFY_AGENT_LOCAL_SANDBOX_ENDPOINT, bearer DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN)
#                                  and returns the sandbox's answer; needs Authorization: Bearer DIFY_AGENT_API_TOKEN
import json
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

from dify_agent.server import secret

_PROBLEM = secret.settings_problem(os.environ)
if _PROBLEM is not None:
    print(f"ERROR: invalid settings: {_PROBLEM}", file=sys.stderr, flush=True)
    sys.exit(1)

from fastapi import FastAPI, Header, HTTPException  # noqa: E402

VERSION = os.environ.get("STANDIN_REPORTED_VERSION") or f"1.16.1-standin.{os.environ.get('STANDIN_VERSION', 'v3')}"
SETTINGS = ("DIFY_AGENT_REDIS_URL", "DIFY_AGENT_REDIS_PREFIX", "DIFY_AGENT_PLUGIN_DAEMON_URL",
            "DIFY_AGENT_PLUGIN_DAEMON_API_KEY", "DIFY_AGENT_INNER_API_URL", "DIFY_AGENT_INNER_API_KEY",
            "DIFY_AGENT_RUNTIME_BACKEND", "DIFY_AGENT_LOCAL_SANDBOX_ENDPOINT", "DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN",
            "DIFY_AGENT_STUB_API_BASE_URL", "DIFY_AGENT_SERVER_SECRET_KEY", "DIFY_AGENT_API_TOKEN",
            "DIFY_AGENT_SHUTDOWN_GRACE_SECONDS", "DIFY_AGENT_RUN_RETENTION_SECONDS")

app = FastAPI(title="Dify Agent Run Server (stand-in, TEST DOUBLE)", version="0.1.0")


def _redis_ok() -> dict:
    """PING through DIFY_AGENT_REDIS_URL (redis://:password@host:port/db), by hand: no client library."""
    url = urllib.parse.urlsplit(os.environ.get("DIFY_AGENT_REDIS_URL", ""))
    try:
        with socket.create_connection((url.hostname or "redis", url.port or 6379), timeout=3) as sock:
            if url.password:
                password = urllib.parse.unquote(url.password)
                sock.sendall(f"*2\r\n$4\r\nAUTH\r\n${len(password.encode())}\r\n{password}\r\n".encode())
                if not sock.recv(64).startswith(b"+OK"):
                    return {"ok": False, "error": "AUTH refused"}
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return {"ok": sock.recv(64).startswith(b"+PONG"), "db": (url.path or "/0").lstrip("/")}
    except OSError as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


@app.get("/agent-stub/ping")
def agent_stub_ping():
    return {"served_by": "agent_backend", "pong": True, "route": "agent-stub"}


@app.get("/standin/info")
def info():
    return {"served_by": "agent_backend", "version": VERSION, "uid": os.getuid(),
            "set": sorted(name for name in SETTINGS if os.environ.get(name)), "redis": _redis_ok()}


@app.post("/standin/sandbox/run")
def sandbox_run(body: dict, authorization: str | None = Header(default=None)):
    token = os.environ.get("DIFY_AGENT_API_TOKEN", "")
    if not token or authorization != f"Bearer {token}":
        raise HTTPException(status_code=401, detail="Authorization must be Bearer DIFY_AGENT_API_TOKEN")
    endpoint = os.environ.get("DIFY_AGENT_LOCAL_SANDBOX_ENDPOINT", "http://local_sandbox:5004").rstrip("/")
    request = urllib.request.Request(f"{endpoint}/v1/jobs/run", method="POST",
                                     data=json.dumps({"script": str(body.get("script", "")),
                                                      "timeout": float(body.get("timeout", 20))}).encode(),
                                     headers={"Content-Type": "application/json"})
    sandbox_token = os.environ.get("DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN", "")
    if body.get("with_token", True) and sandbox_token:
        request.add_header("Authorization", f"Bearer {sandbox_token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return {"sandbox_status": resp.status, "sandbox": json.loads(resp.read())}
    except urllib.error.HTTPError as exc:
        return {"sandbox_status": exc.code, "sandbox": exc.read(500).decode("utf-8", "replace")}
    except OSError as exc:
        raise HTTPException(status_code=502, detail=f"local sandbox unreachable: {exc}") from None
