"""Smoke: the gateway with HTTPS on, checked with a real TLS client on 127.0.0.1.

A second gateway (its own stack name, `<smoke stack>tls`) is deployed with `invoke prod.up
gateway`, a self-signed pair from `invoke tls.self-signed`, and the smoke stack's stand-in api and
web joined to its app network, so TLS, redirects, headers, limits and SSE are tested end to end.
Also here: `nginx -t` for both configs, `tls.expiry`, and prod.check's refusals (one line each).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import ssl
import stat
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import requests
import urllib3
from smokestack import make_env
from testkit import LOCAL_IMAGES, ROOT, check, free_port, invoke, record, remove_owned, unique_name

NGINX_IMAGE = LOCAL_IMAGES["NGINX_IMAGE"]
CERT_DAYS = 30

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # self-signed on purpose


def run_invoke(env_file: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return invoke(*args, env_file=env_file, check=False, timeout=timeout)


def last_line(result: subprocess.CompletedProcess) -> str:
    return (result.stderr.strip().splitlines() or result.stdout.strip().splitlines() or [""])[-1]


def set_env(env_file: Path, **values: str) -> None:
    """Change (or append) KEY=VALUE lines of an env file, keeping the rest."""
    lines = env_file.read_text().splitlines()
    seen = set()
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0]
        if key in values:
            lines[i] = f"{key}={values[key]}"
            seen.add(key)
    lines += [f"{k}={v}" for k, v in values.items() if k not in seen]
    env_file.write_text("\n".join(lines) + "\n")


def containers(project: str, service: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                          "--filter", f"label=com.docker.compose.service={service}"],
                         capture_output=True, text=True)
    return out.stdout.split()


class TLSGateway:
    def __init__(self, name: str, env_file: Path, ssl_dir: Path, http_port: int, https_port: int):
        self.name, self.env_file, self.ssl_dir = name, env_file, ssl_dir
        self.http_port, self.https_port = http_port, https_port

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@pytest.fixture(scope="module")
def tls_env(stack, tmp_path_factory):
    """Env file of the HTTPS gateway (HTTPS on, certificate folder empty as yet)."""
    tmp = tmp_path_factory.mktemp("tls")
    name = unique_name(f"{stack.name}tls")
    http_port, https_port = free_port(), free_port()
    ssl_dir = tmp / "ssl"
    ssl_dir.mkdir()
    env_file = make_env(tmp, name, http_port, {
        "EXPOSE_NGINX_SSL_PORT": str(https_port), "NGINX_HTTPS_ENABLED": "true",
        "NGINX_SSL_DIR": str(ssl_dir), "NGINX_CERT_RELOAD_INTERVAL": "2",
        "NGINX_API_RATE": "50r/s",  # the default (make_env turns it off for the load tests)
    })
    return TLSGateway(name, env_file, ssl_dir, http_port, https_port)


@pytest.fixture(scope="module")
def tls_gateway(stack, tls_env):
    gw = tls_env
    joined = []
    started = time.monotonic()
    try:
        made = run_invoke(gw.env_file, "tls.self-signed", "--days", str(CERT_DAYS))
        assert made.returncode == 0, made.stderr
        # The smoke stack's api and web answer on this gateway's network under their service names.
        subprocess.run(["docker", "network", "create", f"{gw.name}-app"], capture_output=True, check=True)
        for project, service in ((f"{stack.name}-api", "api"), (f"{stack.name}-web", "web")):
            for cid in containers(project, service):
                subprocess.run(["docker", "network", "connect", "--alias", service, f"{gw.name}-app", cid],
                               capture_output=True, check=True)
                joined.append(cid)
        up = run_invoke(gw.env_file, "prod.up", "gateway", timeout=600)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        record("HTTPS gateway up (self-signed pair, prod.up gateway)", time.monotonic() - started)
        yield gw
    finally:
        run_invoke(gw.env_file, "prod.down", "gateway")
        for cid in joined:
            subprocess.run(["docker", "network", "disconnect", "-f", f"{gw.name}-app", cid], capture_output=True)
        run_invoke(gw.env_file, "prod.down", "all", "--volumes", "--yes")
        remove_owned(gw.name)  # whatever the task could not remove (a failed run): this test's own names only


def client_context(version: ssl.TLSVersion | None = None, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the pair is self-signed; what is checked is the protocol
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if version is not None:
            # Old protocols must be offered by the client for the server's refusal to mean anything.
            ctx.set_ciphers("ALL:@SECLEVEL=0")
            ctx.minimum_version = version
            ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def handshake(port: int, ctx: ssl.SSLContext) -> tuple[bool, str]:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
                return True, f"{tls.version()} {tls.cipher()[0]}"
    except (ssl.SSLError, ConnectionError) as exc:
        return False, str(exc)


def served_cert(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with client_context().wrap_socket(sock, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


# ---------------------------------------------------------------------------------------------
# nginx -t on both configs (no stack needed)
# ---------------------------------------------------------------------------------------------
def render(env: dict[str, str], ssl_dir: Path | None, command: list[str]) -> subprocess.CompletedProcess:
    args = ["docker", "run", "--rm", "--network", "none",
            "-v", f"{ROOT}/nginx/templates:/etc/nginx/templates:ro",
            "-v", f"{ROOT}/nginx/entrypoint.d/15-difyops-defaults.envsh:/docker-entrypoint.d/15-difyops-defaults.envsh:ro"]
    if ssl_dir:
        args += ["-v", f"{ssl_dir}:/etc/nginx/ssl:ro"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return subprocess.run(args + [NGINX_IMAGE, *command], capture_output=True, text=True, timeout=120)


def test_nginx_t_http_only_and_https(tls_env):
    result = render({"NGINX_HTTPS_ENABLED": "false"}, None, ["nginx", "-T"])
    http_only = result.returncode == 0 and "listen 443" not in result.stdout and "return 301" not in result.stdout
    check("nginx -t passes with HTTPS off (no TLS server, no redirect)", http_only,
          (result.stderr.strip().splitlines() or ["no output"])[-1])
    made = run_invoke(tls_env.env_file, "tls.self-signed", "--days", str(CERT_DAYS), "--force")
    check("tls.self-signed writes the pair", made.returncode == 0, last_line(made))
    result = render({"NGINX_HTTPS_ENABLED": "true"}, tls_env.ssl_dir, ["nginx", "-T"])
    text = result.stdout
    needed = ["ssl_protocols TLSv1.2 TLSv1.3;", "ssl_prefer_server_ciphers off;", "ssl_session_tickets off;",
              "return 301 https://", "location ^~ /.well-known/acme-challenge/", "server_tokens off;",
              "limit_req_status 429;", "gzip on;"]
    check("nginx -t passes with HTTPS on, Mozilla intermediate settings rendered",
          result.returncode == 0 and all(n in text for n in needed),
          [n for n in needed if n not in text] or (result.stderr.strip().splitlines() or ["ok"])[-1])
    embed = render({"ALLOW_EMBED": "true"}, None, ["nginx", "-T"])
    check("Dify's ALLOW_EMBED=true lets other sites frame it", embed.returncode == 0
          and "frame-ancestors *" in embed.stdout and "frame-ancestors 'self'" in text,
          "frame-ancestors * with ALLOW_EMBED, 'self' without" if "frame-ancestors *" in embed.stdout
          else embed.stderr[-200:])
    check("text/event-stream is never gzipped", "event-stream" not in text.split("gzip_types", 1)[1].split(";")[0],
          "gzip_types has no text/event-stream")


# ---------------------------------------------------------------------------------------------
# The HTTPS gateway, end to end
# ---------------------------------------------------------------------------------------------
def test_https_without_a_certificate_is_refused_before_anything_starts(stack, tls_env):
    for f in tls_env.ssl_dir.iterdir():
        f.unlink()
    result = run_invoke(tls_env.env_file, "prod.up", "gateway")
    text = result.stdout + result.stderr
    ok = (result.returncode != 0 and "NGINX_HTTPS_ENABLED=true but the certificate" in text
          and not containers(f"{tls_env.name}-gateway", "nginx") and "Traceback" not in text)
    check("HTTPS on without its certificate: pre-flight refuses, nothing starts", ok,
          next((ln for ln in text.splitlines() if "NGINX_HTTPS_ENABLED" in ln), last_line(result)))


def test_self_signed_key_is_private(tls_gateway):
    key = tls_gateway.ssl_dir / "dify.key"
    mode = stat.S_IMODE(key.stat().st_mode)
    check("tls.self-signed writes the key mode 0600", mode == 0o600, oct(mode))


def test_expiry_reports_days_left(tls_gateway):
    result = run_invoke(tls_gateway.env_file, "tls.expiry")
    ok = result.returncode == 0 and any(f"{d} day(s) left" in result.stdout for d in (CERT_DAYS - 1, CERT_DAYS))
    check(f"tls.expiry reports about {CERT_DAYS} days left", ok, result.stdout.strip() or last_line(result))
    result = run_invoke(tls_gateway.env_file, "tls.expiry", "--warn-days", str(CERT_DAYS + 30))
    check("tls.expiry exits non-zero under --warn-days", result.returncode != 0 and "under" in last_line(result),
          f"exit {result.returncode}: {last_line(result)}")


def test_protocols(tls_gateway):
    port = tls_gateway.https_port
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ok, seen = handshake(port, client_context(version))
        check(f"{version.name} accepted", ok and seen.startswith(version.name.replace("_", ".")), seen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
    for version in old:
        ok, seen = handshake(port, client_context(version))
        # The server's own alert, not the client declining to offer the protocol.
        check(f"{version.name} refused by the server", not ok and "ALERT_PROTOCOL_VERSION" in seen, seen)
    ok, seen = handshake(port, client_context(ciphers="AES128-SHA:@SECLEVEL=0"))
    check("a cipher without forward secrecy (AES128-SHA) refused", not ok, seen)


def test_http_redirects_except_acme(tls_gateway, stack):
    r = requests.get(tls_gateway.http + "/console/api/ping?x=1", allow_redirects=False, timeout=10)
    target = f"https://127.0.0.1:{tls_gateway.https_port}/console/api/ping?x=1"
    check("HTTP redirects to HTTPS (301, same path)", r.status_code in (301, 308)
          and r.headers.get("Location") == target, f"{r.status_code} {r.headers.get('Location')}")
    token = f"token-{os.urandom(4).hex()}"
    subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{tls_gateway.name}-certbot-www:/w",
                    "--entrypoint", "sh", NGINX_IMAGE, "-c",
                    f"mkdir -p /w/.well-known/acme-challenge && echo {token} > /w/.well-known/acme-challenge/{token}"],
                   check=True, capture_output=True)
    r = requests.get(f"{tls_gateway.http}/.well-known/acme-challenge/{token}", allow_redirects=False, timeout=10)
    check("the ACME challenge is served over HTTP from certbot's webroot", r.status_code == 200
          and r.text.strip() == token, f"{r.status_code} {r.text.strip()[:40]!r}")


SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Content-Security-Policy": "frame-ancestors 'self'",
}


def test_headers_over_https(tls_gateway):
    for path in ("/", "/console/api/ping", "/healthz"):
        r = requests.get(tls_gateway.https + path, verify=False, timeout=10)
        missing = {k: r.headers.get(k) for k, v in SECURITY_HEADERS.items() if r.headers.get(k) != v}
        if "Permissions-Policy" not in r.headers:
            missing["Permissions-Policy"] = None
        check(f"HSTS and security headers on {path}", r.status_code == 200 and not missing,
              f"{r.status_code}, wrong or missing: {missing or 'none'}")
    r = requests.get(tls_gateway.https + "/console/api/ping", verify=False, timeout=10)
    check("the api's X-Accel-Buffering header is kept beside them", r.headers.get("X-Accel-Buffering") == "no"
          and r.json().get("served_by") == "api", r.headers.get("X-Accel-Buffering"))
    check("no nginx version in the Server header", r.headers.get("Server") == "nginx", r.headers.get("Server"))
    r = requests.get(tls_gateway.https + "/_next/static/standin/app.js", verify=False, timeout=10)
    cache = r.headers.get("Cache-Control", "")
    check("Next.js static assets cached a year, once", r.status_code == 200
          and cache == "public, max-age=31536000, immutable" and "X-Content-Type-Options" in r.headers,
          f"{r.status_code} Cache-Control={cache!r}")
    r = requests.get(tls_gateway.https + "/", headers={"Accept-Encoding": "gzip"}, verify=False, timeout=10)
    check("HTML is gzipped", r.headers.get("Content-Encoding") == "gzip", r.headers.get("Content-Encoding"))


def test_sse_streams_event_by_event_over_https_with_gzip_on(tls_gateway):
    count, interval = 8, 0.3
    arrivals = []
    started = time.monotonic()
    with requests.get(tls_gateway.https + f"/v1/sse?count={count}&interval={interval}", stream=True,
                      verify=False, timeout=30, headers={"Accept-Encoding": "gzip"}) as r:
        encoding = r.headers.get("Content-Encoding")
        for line in r.iter_lines(chunk_size=1):
            if line.startswith(b"data:") and json.loads(line[5:]).get("event") == "message":
                arrivals.append(time.monotonic() - started)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)] or [0.0]
    steady = len(arrivals) == count and min(gaps) > interval * 0.5
    check("SSE over HTTPS arrives event by event, not gzipped", steady and encoding is None,
          f"{len(arrivals)} events, gaps {min(gaps):.2f}..{max(gaps):.2f}s, Content-Encoding={encoding}")


def test_login_rate_limit_returns_429(tls_gateway):
    # Defaults: 10 requests a minute, burst 5: the 7th request at once is past the limit.
    codes = []
    for _ in range(12):  # bounded: twelve requests, 10 s timeout each
        r = requests.post(tls_gateway.https + "/console/api/login", json={"email": "x@example.com"},
                          verify=False, timeout=10)
        codes.append(r.status_code)
    first_429 = codes.index(429) if 429 in codes else None
    check("login past its rate limit answers 429", first_429 is not None and 5 <= first_429 <= 7
          and all(code == 429 for code in codes[first_429:]), codes)
    r = requests.get(tls_gateway.https + "/console/api/ping", verify=False, timeout=10)
    check("other console routes are not limited by it", r.status_code == 200, r.status_code)


def test_gateway_hardening(tls_gateway):
    cid = containers(f"{tls_gateway.name}-gateway", "nginx")[0]
    info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True).stdout)[0]
    host = info["HostConfig"]
    ok = ("no-new-privileges:true" in (host.get("SecurityOpt") or []) and host.get("CapDrop") == ["ALL"]
          and host.get("Memory", 0) > 0 and host.get("NanoCpus", 0) > 0)
    bindings = {p: [b["HostIp"] for b in v] for p, v in (host.get("PortBindings") or {}).items()}
    check("gateway: no-new-privileges, capabilities dropped, limits, 127.0.0.1 only",
          ok and all(ips == ["127.0.0.1"] for ips in bindings.values()),
          {"SecurityOpt": host.get("SecurityOpt"), "CapDrop": host.get("CapDrop"), "Memory": host.get("Memory"),
           "NanoCpus": host.get("NanoCpus"), "ports": bindings})


def test_new_certificate_is_picked_up_without_restart(tls_gateway):
    before = served_cert(tls_gateway.https_port)
    made = run_invoke(tls_gateway.env_file, "tls.self-signed", "--days", "10", "--force")
    assert made.returncode == 0, made.stderr
    new = ssl.PEM_cert_to_DER_cert((tls_gateway.ssl_dir / "dify.crt").read_text())
    deadline, seen = time.monotonic() + 20, before
    while time.monotonic() < deadline and seen != new:  # bounded: 20 s
        time.sleep(1)
        seen = served_cert(tls_gateway.https_port)
    check("a replaced certificate is served after nginx's own reload (no restart)", seen == new and seen != before,
          "new certificate served" if seen == new else "still the old one after 20 s")
    reload = run_invoke(tls_gateway.env_file, "tls.reload")
    check("tls.reload tests and reloads the running gateway", reload.returncode == 0, last_line(reload))


# ---------------------------------------------------------------------------------------------
# prod.check refusals: each bad configuration gives its own line and a non-zero exit
# ---------------------------------------------------------------------------------------------
def test_prod_check_accepts_the_smoke_configuration(stack):
    result = run_invoke(stack.env_file, "prod.check")
    check("prod.check accepts a private HTTP gateway with generated secrets", result.returncode == 0,
          result.stdout.strip() or last_line(result))


BAD = [
    ("a placeholder secret", {"SECRET_KEY": "!!!GENERATED!!!"}, "SECRET_KEY is still the placeholder"),
    ("a short secret", {"SECRET_KEY": "tooshort123"}, "SECRET_KEY is only 11 characters"),
    ("Dify's public default secret", {"SECRET_KEY": "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U"},
     "public default"),
    ("DEBUG on", {"DEBUG": "true"}, "DEBUG=true turns on debug mode"),
    ("FLASK_DEBUG on", {"FLASK_DEBUG": "true"}, "FLASK_DEBUG=true turns on debug mode"),
    ("0.0.0.0 without HTTPS", {"NGINX_BIND_ADDRESS": "0.0.0.0"}, "binds 0.0.0.0 with plain HTTP only"),
    ("a plain-HTTP public URL", {"CONSOLE_WEB_URL": "http://dify.example.com"}, "CONSOLE_WEB_URL=http://"),
    ("HTTPS without a certificate", {"NGINX_HTTPS_ENABLED": "true", "NGINX_SSL_CERT_FILENAME": "absent.crt"},
     "does not exist"),
    ("HTTPS with a key from another pair", {"NGINX_HTTPS_ENABLED": "true", "NGINX_SSL_CERT_KEY_FILENAME": "other.key"},
     "does not belong to the certificate"),
    ("an unknown size preset", {"DIFYOPS_SIZE": "huge"}, "DIFYOPS_SIZE='huge' is not a preset"),
]


@pytest.fixture(scope="module")
def check_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("check")
    ssl_dir = tmp / "ssl"
    ssl_dir.mkdir()
    env_file = make_env(tmp, unique_name("checkonly"), free_port(), {"NGINX_SSL_DIR": str(ssl_dir)})
    made = run_invoke(env_file, "tls.self-signed")
    assert made.returncode == 0, made.stderr
    subprocess.run(["openssl", "genrsa", "-out", str(ssl_dir / "other.key"), "2048"], check=True, capture_output=True)
    return env_file


@pytest.mark.parametrize("label,values,needle", BAD, ids=[b[0] for b in BAD])
def test_prod_check_refuses(check_env, tmp_path, label, values, needle):
    env_file = tmp_path / ".env"
    env_file.write_text(check_env.read_text())
    set_env(env_file, **values)
    result = run_invoke(env_file, "prod.check")
    text = result.stdout + result.stderr
    lines = [ln for ln in text.splitlines() if needle in ln]
    ok = result.returncode != 0 and len(lines) == 1 and last_line(result).startswith("error:") and "Traceback" not in text
    check(f"prod.check refuses {label}", ok, f"exit {result.returncode}: {lines[0].strip() if lines else last_line(result)}")
