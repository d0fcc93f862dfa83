"""Pre-flight probes: look, change nothing. Each returns problem lines (empty = fine)."""

from __future__ import annotations

import errno
import re
import shlex
import shutil
import socket
from typing import Any

from . import envfile, tls
from .config import Settings

MIN_COMPOSE = (2, 20, 3)  # `depends_on.required` and `--wait-timeout`
MIN_ENGINE = (25, 0)  # healthcheck start_interval


def _version(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not match:
        return ()
    return tuple(int(g) for g in match.groups() if g is not None)


def docker_problems(c: Any) -> list[str]:
    if shutil.which("docker") is None:
        return ["Docker is not installed: install Docker Engine 25 or newer (scripts/host-setup.sh does it on Debian)"]
    info = c.run("docker info --format '{{.ServerVersion}}'", hide=True, warn=True)
    if not info.ok:
        return ["the Docker daemon is not running or not reachable: start it (systemctl start docker) and retry"]
    problems = []
    engine = _version(info.stdout.strip())
    if engine and engine < MIN_ENGINE:
        problems.append(
            f"Docker Engine {info.stdout.strip()} is too old: healthcheck start_interval needs 25 or newer"
        )
    compose = c.run("docker compose version --short", hide=True, warn=True)
    if not compose.ok:
        legacy = shutil.which("docker-compose") is not None
        hint = " (only the old docker-compose v1 was found)" if legacy else ""
        problems.append(f"Docker Compose v2 is missing{hint}: install the docker compose plugin 2.20.3 or newer")
    else:
        version = _version(compose.stdout.strip())
        if version and version < MIN_COMPOSE:
            problems.append(
                f"Docker Compose {compose.stdout.strip()} is too old: 2.20.3 or newer is needed"
            )
    return problems


def env_problems(settings: Settings) -> list[str]:
    """envfile.check's lines on the settings (load_settings refused a file Compose refuses)."""
    path = settings.env_file
    if not path.exists():
        return [f"{path} does not exist: run `invoke env.init` to create it"]
    return envfile.check(settings.env) + settings.disagreements


def port_in_use(host: str, port: int) -> bool:
    """True if something already listens on host:port (we bind, then let go at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def published_by_stack(c: Any, settings: Settings, port: int) -> bool:
    """True if this stack's own gateway already publishes the port (a redeploy)."""
    result = c.run(
        shlex.join(["docker", "ps", "--filter", f"label=com.docker.compose.project={settings.stack}-gateway",
                    "--format", "{{.Ports}}"]),
        hide=True, warn=True,
    )
    return result.ok and f":{port}->" in result.stdout


def port_problems(c: Any, settings: Settings) -> list[str]:
    host = settings.get("NGINX_BIND_ADDRESS", "127.0.0.1")
    problems = []
    keys = [("EXPOSE_NGINX_PORT", "80")]
    if tls.https_enabled(settings.env):
        keys.append(("EXPOSE_NGINX_SSL_PORT", "443"))  # published only with HTTPS on
    for key, default in keys:
        raw = settings.get(key, default)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            problems.append(f"{key}={raw!r} is not a port number")
            continue
        port = int(raw)
        probe_host = "0.0.0.0" if host in ("", "0.0.0.0") else host
        if port_in_use(probe_host, port) and not published_by_stack(c, settings, port):
            problems.append(
                f"port {port} on {host} is already in use: stop what holds it or set {key} in {settings.env_file.name}"
            )
    return problems


def missing_images(c: Any, refs: list[str]) -> list[str]:
    missing = []
    for ref in refs:
        if not c.run(shlex.join(["docker", "image", "inspect", "--format", "{{.Id}}", ref]), hide=True, warn=True).ok:
            missing.append(ref)
    return missing
