"""Smoke: a fresh deployment of the default release, Dify 1.16.1, with the v3 stand-in (a TEST
DOUBLE) in place of Dify's images: `env.init` (the release's secrets generated in their forms) and
`prod.deploy` bring up every service of the release healthy, its own services included
(api_websocket, agent_backend, local_sandbox, agent_ssrf_proxy), with no overlay, network or secret
added by hand: the task library adds them from the release set (difyops/release_sets). It checks
what the new processes promise, as the real ones do: a WebSocket upgrade on /socket.io/ through the
gateway, echoed back; the agent backend's health and its refusal of a malformed secret; the local
sandbox's token and its one way out; the plugin daemon 0.6's start (tini, `commandline migrate &&
exec main`) and its rules."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import struct
import subprocess
import time

import pytest
from smokestack import Stack, make_env
from testkit import check, free_port, healthy, prod_status, record, remove_owned, row_of, unique_name

from difyops import release_sets
from difyops.dotenv import parse

RELEASE = release_sets.default()
V3 = {"DIFY_API_IMAGE": "difyops-standin/dify-api:v3", "DIFY_WEB_IMAGE": "difyops-standin/dify-web:v3",
      "DIFY_SANDBOX_IMAGE": "difyops-standin/dify-sandbox:v3",
      "DIFY_PLUGIN_DAEMON_IMAGE": "difyops-standin/dify-plugin-daemon:v3",
      "DIFY_AGENT_BACKEND_IMAGE": "difyops-standin/dify-agent-backend:v3",
      "DIFY_AGENT_LOCAL_SANDBOX_IMAGE": "difyops-standin/dify-agent-local-sandbox:v3"}


def _container(st: Stack, cluster: str, service: str) -> str:
    return f"{st.name}-{cluster}-{service}-1"


def _exec_python(container: str, code: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", container, "python3", "-c", code], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def release_stack(tmp_path_factory):
    name = unique_name("smokerel")
    port = free_port()
    started = time.monotonic()
    # Nothing of the release by hand: the v3 images and the stack's port only (DIFY_VERSION and the
    # secrets are env.init's, the overlays, networks and upstreams the tasks').
    st = Stack(name, make_env(tmp_path_factory.mktemp("release"), name, port, standin=V3), port)
    try:
        st.invoke("prod.deploy", timeout=900)
        record(f"release {RELEASE.release}: env.init and prod.deploy", time.monotonic() - started)
        yield st
    finally:
        st.teardown()
        remove_owned(name)


def test_a_fresh_env_init_is_the_default_release_with_its_secrets(release_stack):
    env = dict(parse(release_stack.env_file.read_bytes(), {}).values)
    problems = {key: secret.problem(env.get(key)) for key, secret in RELEASE.secrets.items()}
    check(f"env.init wrote DIFY_VERSION={RELEASE.release} (the default) and every secret of its set in its form",
          env.get("DIFY_VERSION") == RELEASE.release and not any(problems.values()),
          {"DIFY_VERSION": env.get("DIFY_VERSION"), "problems": {k: v for k, v in problems.items() if v}})


def test_every_service_of_the_release_is_healthy(release_stack):
    rows = prod_status(release_stack.invoke)
    wanted = {(service.cluster, name) for name, service in RELEASE.services.items()}
    states = {f"{cluster}/{name}": (row_of(rows, name, cluster).get("state"), row_of(rows, name, cluster).get("health"))
              for cluster, name in sorted(wanted)}
    images = {}
    for cluster, name in sorted(wanted):
        out = subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}", _container(release_stack, cluster, name)],
                             capture_output=True, text=True)
        images[name] = out.stdout.strip() or out.stderr.strip()
    dify_made = {name for name, service in RELEASE.services.items() if service.image}
    check(f"prod.status: every service of Dify {RELEASE.release} healthy (api_websocket, agent_backend, local_sandbox "
          "and agent_ssrf_proxy included), each Dify one on its v3 stand-in image, the release set named",
          all(healthy(row_of(rows, name, cluster)) for cluster, name in wanted)
          and all(images[name].startswith("difyops-standin/") and images[name].endswith(":v3") for name in dify_made)
          and {r.get("release_set") for r in rows} == {f"dify-{RELEASE.release}"},
          {"states": states, "images": {k: v for k, v in images.items() if k in dify_made}})


def test_the_release_networks_are_internal(release_stack):
    seen = {}
    for key in RELEASE.networks:
        name = f"{release_stack.name}-{key.replace('_', '-')}"
        out = subprocess.run(["docker", "network", "inspect", "--format", "{{.Internal}}", name],
                             capture_output=True, text=True)
        seen[name] = out.stdout.strip() or out.stderr.strip()[-80:]
    check("the release's own networks (agent sandbox, agent egress) were created by prod.deploy, internal",
          set(seen.values()) == {"true"}, seen)


# ----------------------------------------------------------------------------- websocket api
def _ws_frame(payload: bytes) -> bytes:
    """A masked client text frame (RFC 6455 5.2), payload under 126 bytes."""
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _ws_read(sock: socket.socket, data: bytes) -> bytes:
    while len(data) < 2:
        data += sock.recv(4096)
    length = data[1] & 0x7F
    offset = 2
    if length == 126:
        length, offset = struct.unpack("!H", data[2:4])[0], 4
    while len(data) < offset + length:
        data += sock.recv(4096)
    return data[offset:offset + length]


def test_socket_io_upgrades_through_the_gateway_to_the_websocket_api_and_echoes(release_stack):
    key = base64.b64encode(os.urandom(16)).decode()
    message = f"hello-{secrets.token_hex(4)}".encode()
    with socket.create_connection(("127.0.0.1", release_stack.port), timeout=15) as sock:
        sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        status, _, rest = head.partition(b"\r\n\r\n")
        echoed = b""
        if status.startswith(b"HTTP/1.1 101"):
            sock.sendall(_ws_frame(message))
            echoed = _ws_read(sock, rest)
    check("/socket.io/ through nginx: 101 Switching Protocols from api_websocket (GeventWebSocketWorker), "
          "and a WebSocket message comes back as it was sent",
          status.startswith(b"HTTP/1.1 101") and echoed == message,
          {"status": status.split(b"\r\n", 1)[0].decode(), "sent": message.decode(), "received": echoed.decode()})


def test_the_plain_api_worker_refuses_a_websocket_upgrade(release_stack):
    code = ("import socket; s = socket.create_connection(('api', 5001), 5); s.sendall(b'GET /socket.io/ HTTP/1.1"
            "\\r\\nHost: api\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Key: "
            "dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n'); print(s.recv(200).split(b'\\r\\n')[0])")
    out = _exec_python(_container(release_stack, "api", "api_websocket"), code)
    check("the api itself (gunicorn's plain gevent worker) answers an upgrade with 400, as Dify's docs say "
          "other worker classes break WebSockets", "400" in out.stdout, (out.stdout or out.stderr).strip()[-200:])


# ----------------------------------------------------------------------------- agent backend
_AGENT_CLIENT = """
import json, sys, urllib.error, urllib.request
spec = json.loads(sys.argv[1])
data = None if spec["body"] is None else json.dumps(spec["body"]).encode()
request = urllib.request.Request("http://127.0.0.1:5050" + spec["path"], data=data, headers=spec["headers"],
                                 method="GET" if data is None else "POST")
try:
    with urllib.request.urlopen(request, timeout=40) as resp:
        print(json.dumps({"status": resp.status, "body": json.loads(resp.read())}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": exc.read(300).decode()}))
"""


def _agent(release_stack, path: str, body: dict | None = None, token: str | None = None) -> dict:
    """A request to the agent backend from inside its container (it publishes no port)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    spec = json.dumps({"path": path, "body": body, "headers": headers})
    out = subprocess.run(["docker", "exec", _container(release_stack, "support", "agent_backend"), "python3", "-c",
                          _AGENT_CLIENT, spec], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _env_value(release_stack, key: str) -> str:
    return parse(release_stack.env_file.read_bytes(), {}).values[key]


def test_the_agent_backend_serves_its_schema_and_reaches_redis(release_stack):
    info = _agent(release_stack, "/standin/info")
    schema = _agent(release_stack, "/openapi.json")
    check("agent_backend serves (FastAPI's /openapi.json, what its healthcheck asks), runs as uid 1001 and "
          "reaches Redis db 2", schema["status"] == 200 and info["body"].get("uid") == 1001
          and info["body"].get("redis", {}).get("ok") is True and info["body"]["redis"].get("db") == "2",
          {"schema": schema["status"], "uid": info["body"].get("uid"), "redis": info["body"].get("redis")})


@pytest.mark.parametrize("value,why", [
    ("ab" * 32, "must decode to exactly 32 decoded bytes"),  # a hex secret: 64 characters, 48 bytes
    (None, "must be valid unpadded base64url text"),  # a valid key with '=' padding added
    ("", "is required when DIFY_AGENT_STUB_API_BASE_URL is set"),
])
def test_the_agent_backend_refuses_a_malformed_secret(release_stack, value, why):
    if value is None:
        value = RELEASE.secrets["DIFY_AGENT_SERVER_SECRET_KEY"].generate() + "="
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", "-e", f"DIFY_AGENT_SERVER_SECRET_KEY={value}",
                          "-e", "DIFY_AGENT_STUB_API_BASE_URL=http://agent_backend:5050/agent-stub",
                          V3["DIFY_AGENT_BACKEND_IMAGE"]], capture_output=True, text=True, timeout=60)
    check(f"the agent backend refuses to start on DIFY_AGENT_SERVER_SECRET_KEY={'<hex>' if len(value) == 64 else value[:6] + '...'} "
          f"({why})", out.returncode != 0 and why in out.stderr, {"exit": out.returncode, "stderr": out.stderr.strip()[-160:]})


# ----------------------------------------------------------------------------- local sandbox
def _in_sandbox(release_stack, script: str, with_token: bool = True) -> dict:
    answer = _agent(release_stack, "/standin/sandbox/run", {"script": script, "with_token": with_token},
                    token=_env_value(release_stack, "DIFY_AGENT_API_TOKEN"))
    assert answer["status"] == 200, answer
    return answer["body"]


def test_the_local_sandbox_demands_its_token(release_stack):
    with_token = _in_sandbox(release_stack, "id -u")
    without = _in_sandbox(release_stack, "id -u", with_token=False)
    check("the local sandbox runs a command for the agent backend with DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN "
          "(as its own uid 1000) and answers 401 without it",
          with_token["sandbox_status"] == 200 and with_token["sandbox"]["stdout"].strip() == "1000"
          and without["sandbox_status"] == 401,
          {"with token": with_token["sandbox_status"], "uid": with_token["sandbox"].get("stdout", "").strip(),
           "without": without["sandbox_status"]})


def test_the_local_sandbox_reaches_out_only_through_its_proxy(release_stack):
    probe = "curl -s -o /dev/null -w '%{http_code}' --max-time 8 "
    cases = {
        "agent_backend /agent-stub/ (allowed)": (probe + "http://agent_backend:5050/agent-stub/ping", "200"),
        "api /files/ (allowed)": (probe + "http://api:5001/files/ping", "200"),
        "api /v1/ (private: refused)": (probe + "http://api:5001/v1/ping", "403"),
        "web (private: refused)": (probe + "http://web:3000/", "403"),
        "api without the proxy (no route)": (probe + "--noproxy '*' http://api:5001/health || echo ' unreachable'",
                                             "000 unreachable"),
    }
    seen = {label: _in_sandbox(release_stack, script)["sandbox"]["stdout"].strip()
            for label, (script, _) in cases.items()}
    check("from the local sandbox: the agent backend's callbacks and the api's files through agent_ssrf_proxy, "
          "every other private destination refused, and no way past the proxy",
          all(seen[label] == want for label, (_, want) in cases.items()), seen)


# ----------------------------------------------------------------------------- plugin daemon 0.6
def test_the_plugin_daemon_0_6_starts_under_tini_after_its_migration(release_stack):
    daemon = _container(release_stack, "support", "plugin_daemon")
    config = json.loads(subprocess.run(["docker", "inspect", "--format", "{{json .Config}}", daemon],
                                       capture_output=True, text=True, check=True).stdout)
    pid1 = subprocess.run(["docker", "exec", daemon, "cat", "/proc/1/comm"], capture_output=True, text=True).stdout.strip()
    logs = subprocess.run(["docker", "logs", daemon], capture_output=True, text=True)
    plugin = subprocess.run(["docker", "exec", daemon, "curl", "-fsS", "http://127.0.0.1:5002/standin/plugin-env"],
                            capture_output=True, text=True, timeout=60)
    check("plugin daemon 0.6.3 (stand-in): the image's own tini and `commandline migrate && exec main` ran (the "
          "bundle sets neither), its plugins run (their parent is not PID 1)",
          config["Entrypoint"] == list(RELEASE.image("plugin_daemon").entrypoint)
          and config["Cmd"] == list(RELEASE.image("plugin_daemon").command) and pid1 == "tini"
          and "database migration completed successfully" in logs.stdout and plugin.returncode == 0,
          {"entrypoint": config["Entrypoint"], "cmd": config["Cmd"], "pid 1": pid1,
           "plugin": plugin.returncode})


def test_the_plugin_daemon_0_6_refuses_what_0_6_3_refuses(release_stack):
    image = V3["DIFY_PLUGIN_DAEMON_IMAGE"]
    base = ["-e", "SERVER_KEY=k", "-e", "DIFY_INNER_API_URL=http://api:5001", "-e", "DIFY_INNER_API_KEY=k",
            "-e", "DB_USERNAME=postgres", "-e", "DB_PASSWORD=x", "-e", "DB_HOST=nowhere", "-e", "DB_PORT=5432",
            "-e", "DB_DATABASE=dify_plugin", "-e", "PLUGIN_WORKING_PATH=/app/storage/cwd",
            "-e", "PLUGIN_REMOTE_INSTALLING_HOST=0.0.0.0", "-e", "PLUGIN_REMOTE_INSTALLING_PORT=5003"]
    seen = {}
    for label, extra, want in (("LOG_LEVEL=info", ["-e", "LOG_LEVEL=info"], 'invalid LOG_LEVEL "info"'),
                               ("SERVER_TZ=Mars/Olympus", ["-e", "SERVER_TZ=Mars/Olympus"], "'timezone' tag"),
                               ("no PLUGIN_REMOTE_INSTALLING_HOST", ["-e", "PLUGIN_REMOTE_INSTALLING_HOST="],
                                "plugin remote installing host is empty")):
        out = subprocess.run(["docker", "run", "--rm", "--network", "none", *base, *extra, image],
                             capture_output=True, text=True, timeout=60)
        seen[label] = (out.returncode, want in out.stderr, out.stderr.strip()[-120:])
    check("`commandline migrate` refuses 0.6.3's invalid configurations (exit 1, one line) before anything starts",
          all(code == 1 and found for code, found, _ in seen.values()), seen)


def test_a_daemon_started_without_its_image_command_is_caught(release_stack):
    """/app/main alone (a start command written down from 0.5.3, or a shim that drops the CMD) has no
    migration; as PID 1 (no tini) its plugins die: both refused by the stand-in as by the real image."""
    env = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Env}}",
                          _container(release_stack, "support", "plugin_daemon")], capture_output=True, text=True,
                         check=True).stdout
    args = [a for item in json.loads(env) if not item.startswith(("PATH=", "HOSTNAME=")) for a in ("-e", item)]
    # An existing database the daemon never migrated (PostgreSQL's own).
    fresh = [a if not a.startswith("DB_DATABASE=") else "DB_DATABASE=postgres" for a in args]
    network = ["--network", f"{release_stack.name}-backend"]
    no_migrate = subprocess.run(["docker", "run", "--rm", *network, *fresh, "--entrypoint", "/app/main",
                                 V3["DIFY_PLUGIN_DAEMON_IMAGE"]], capture_output=True, text=True, timeout=90)
    name = f"{release_stack.name}-daemon-pid1"
    subprocess.run(["docker", "run", "-d", "--name", name, *network, *args, "--entrypoint", "/bin/bash",
                    V3["DIFY_PLUGIN_DAEMON_IMAGE"], "-c", "/app/commandline migrate && exec /app/main"],
                   capture_output=True, text=True, check=True)
    try:
        answer = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(["docker", "exec", name, "curl", "-sS", "http://127.0.0.1:5002/standin/plugin-env"],
                                 capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout:
                answer = out.stdout
                break
            time.sleep(1)
        report = json.loads(answer) if answer else {}
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    check("without the image's command: /app/main alone refuses an unmigrated database, and as PID 1 "
          "(no tini) its plugin process exits 255",
          no_migrate.returncode == 1 and "not migrated" in no_migrate.stdout + no_migrate.stderr
          and report.get("ok") is False and report.get("exit_code") == 255,
          {"main alone": (no_migrate.returncode, (no_migrate.stdout + no_migrate.stderr).strip()[-100:]),
           "pid 1 plugin": {k: report.get(k) for k in ("ok", "exit_code")}})
