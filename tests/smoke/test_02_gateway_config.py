"""Smoke: the gateway's rendered nginx config passes `nginx -t` inside the gateway image, its
body limit follows Dify's upload limits, and /socket.io/ carries WebSocket upgrades."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time

import pytest
from testkit import LOCAL_IMAGES, ROOT, STANDIN_IMAGES, check, free_port, unique_name

IMAGE = LOCAL_IMAGES["NGINX_IMAGE"]
STANDIN_WEB = STANDIN_IMAGES["DIFY_WEB_IMAGE"]  # has python3, for the WebSocket test upstream


def render(env: dict[str, str], command: list[str]) -> subprocess.CompletedProcess:
    args = ["docker", "run", "--rm", "--network", "none",
            "-v", f"{ROOT}/nginx/templates:/etc/nginx/templates:ro",
            "-v", f"{ROOT}/nginx/entrypoint.d/15-difyops-defaults.envsh:/docker-entrypoint.d/15-difyops-defaults.envsh:ro"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return subprocess.run(args + [IMAGE, *command], capture_output=True, text=True, timeout=120)


def test_nginx_t_passes_on_the_rendered_config():
    result = render({}, ["nginx", "-t"])
    check("nginx -t passes on the rendered gateway config", result.returncode == 0,
          (result.stderr.strip().splitlines() or ["no output"])[-1])


@pytest.mark.parametrize(
    "env, expected",
    [({}, "111M"),  # largest default: 100 MB video uploads
     ({"UPLOAD_VIDEO_FILE_SIZE_LIMIT": "300"}, "331M"),
     ({"NGINX_CLIENT_MAX_BODY_SIZE": "2g"}, "2g")],
)
def test_body_limit_follows_upload_limits(env, expected):
    result = render(env, ["nginx", "-T"])
    lines = [ln.strip() for ln in result.stdout.splitlines() if ln.strip().startswith("client_max_body_size")]
    check(f"client_max_body_size with {env or 'defaults'}", lines == [f"client_max_body_size {expected};"],
          lines or result.stderr[-300:])


def test_sse_settings_in_every_api_location():
    result = render({}, ["nginx", "-T"])
    text = result.stdout
    needed = ["proxy_buffering off;", "add_header X-Accel-Buffering no always;", "proxy_read_timeout 3600s;"]
    check("SSE-safe proxy settings are rendered", all(n in text for n in needed),
          [n for n in needed if n not in text] or "all present")


# ---------------------------------------------------------------------------------------------
# /socket.io/ (collaboration): the gateway's real config, its default upstream (api:5001) answered
# by a WebSocket test upstream on a throwaway network, the client on 127.0.0.1.
# ---------------------------------------------------------------------------------------------
def _exchange(port: int, request: bytes, then: bytes = b"", timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
        if then and data.startswith(b"HTTP/1.1 101"):
            sock.sendall(then)
            deadline = time.monotonic() + timeout
            while then not in data and time.monotonic() < deadline:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        else:  # read the rest of a plain answer
            sock.settimeout(2)
            try:
                while chunk := sock.recv(4096):
                    data += chunk
            except OSError:
                pass
        return data


def _upgrade(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: smoke.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


@pytest.fixture(scope="module")
def ws_gateway():
    name = unique_name("smokews")
    network, upstream, gateway = f"{name}-net", f"{name}-api", f"{name}-nginx"
    port = free_port()
    subprocess.run(["docker", "network", "create", network], capture_output=True, check=True)
    try:
        subprocess.run(["docker", "run", "-d", "--name", upstream, "--network", network, "--network-alias", "api",
                        "-v", f"{ROOT}/tests/smoke/ws_echo.py:/ws_echo.py:ro", "--entrypoint", "python3",
                        STANDIN_WEB, "/ws_echo.py"], capture_output=True, check=True)
        subprocess.run(["docker", "run", "-d", "--name", gateway, "--network", network,
                        "-p", f"127.0.0.1:{port}:80",
                        "-v", f"{ROOT}/nginx/templates:/etc/nginx/templates:ro",
                        "-v", f"{ROOT}/nginx/entrypoint.d/15-difyops-defaults.envsh:"
                              "/docker-entrypoint.d/15-difyops-defaults.envsh:ro",
                        IMAGE], capture_output=True, check=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # bounded wait for nginx and the upstream behind it
            try:
                if _exchange(port, b"GET /socket.io/?ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                             ).startswith(b"HTTP/1.1 200"):
                    break
            except OSError:
                pass
            time.sleep(0.3)
        yield port
    finally:
        subprocess.run(["docker", "rm", "-fv", gateway, upstream], capture_output=True)
        subprocess.run(["docker", "network", "rm", network], capture_output=True)


def test_socket_io_upgrades_to_a_websocket_through_the_gateway(ws_gateway):
    answer = _exchange(ws_gateway, _upgrade("/socket.io/?EIO=4&transport=websocket"), then=b"ping-through-nginx")
    first = answer.split(b"\r\n", 1)[0].decode("latin-1")
    check("/socket.io/ with Upgrade: websocket gets 101 from the api upstream, and bytes flow both ways",
          first.startswith("HTTP/1.1 101") and b"ping-through-nginx" in answer, first or "no answer")


def test_socket_io_polling_passes_as_plain_http(ws_gateway):
    answer = _exchange(ws_gateway, b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: smoke.test\r\n"
                                   b"Connection: close\r\n\r\n")
    body = answer.partition(b"\r\n\r\n")[2]
    seen = json.loads(body) if body.startswith(b"{") else {}
    check("Socket.IO's polling reaches the same upstream without an upgrade",
          seen.get("served_by") == "ws_echo" and "upgrade" not in seen.get("headers", {}),
          seen.get("headers") or answer[:80])


def test_only_socket_io_upgrades(ws_gateway):
    answer = _exchange(ws_gateway, _upgrade("/console/api/ping"))
    first = answer.split(b"\r\n", 1)[0].decode("latin-1")
    check("an upgrade asked for on an API route is not passed on (the shared snippet keeps Connection \"\")",
          not first.startswith("HTTP/1.1 101"), first or "no answer")
