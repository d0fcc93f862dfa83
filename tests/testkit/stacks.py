"""What the Docker suites share to make and reach a stack: the images they run, free ports on
127.0.0.1, `invoke` as a subprocess (as a user runs it), an .env from `env.init`, and what of a
name is still on the engine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from .names import owns

ROOT = Path(__file__).resolve().parents[2]

# The Dify stand-in (a TEST DOUBLE, tests/standin/) in place of Dify's images.
STANDIN_IMAGES = {
    "DIFY_API_IMAGE": "difyops-standin/dify-api:v1",
    "DIFY_WEB_IMAGE": "difyops-standin/dify-web:v1",
    "DIFY_SANDBOX_IMAGE": "difyops-standin/dify-sandbox:v1",
    "DIFY_PLUGIN_DAEMON_IMAGE": "difyops-standin/dify-plugin-daemon:v1",
}
# The Dify release the v1 (and v2) stand-in models: a stack of those images says so in its .env, or
# the tasks would deploy the default release's set (its agent services, plugin daemon 0.6) beside them.
STANDIN_RELEASE = {"DIFY_VERSION": "1.13.3"}
# Local builds (images/) of the other images a stack runs.
LOCAL_IMAGES = {
    "POSTGRES_IMAGE": "difyops-local/postgres:17",
    "REDIS_IMAGE": "difyops-local/redis:8",
    "NGINX_IMAGE": "difyops-local/nginx:1.26",
    "SSRF_PROXY_IMAGE": "difyops-local/squid:6",
}


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 now (held together while chosen, so never the same twice)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def invoke(*args: str, env_file: Path | str | None = None, check: bool = True, timeout: float = 900,
           env: dict[str, str | None] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """`invoke ARGS` from the checkout, as a user runs it; `env_file` is INVOKE_DIFYOPS_ENV_FILE, `env`
    sets (or, with None, removes) variables. With `check`, a non-zero exit fails with its output."""
    environ: dict[str, str | None] = dict(os.environ)
    if env_file is not None:
        environ["INVOKE_DIFYOPS_ENV_FILE"] = str(env_file)
    environ.update(env or {})
    result = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout, input=input,
                            env={k: v for k, v in environ.items() if v is not None})
    if check and result.returncode != 0:
        raise AssertionError(f"invoke {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def env_init(env_file: Path, values: dict[str, str], *extra: str) -> Path:
    """`invoke env.init --env-file FILE --set KEY=VALUE...` (and `extra` arguments): a fresh .env."""
    args = ["env.init", "--env-file", str(env_file), *extra]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    invoke(*args, timeout=120)
    return env_file


_LISTINGS = {
    "containers": (["docker", "ps", "-a", "--format", "{{.Names}}"], ["docker", "rm", "-fv"]),
    "networks": (["docker", "network", "ls", "--format", "{{.Name}}"], ["docker", "network", "rm"]),
    "volumes": (["docker", "volume", "ls", "--format", "{{.Name}}"], ["docker", "volume", "rm", "-f"]),
}


def owned(name: str, docker: tuple[str, ...] = ("docker",)) -> dict[str, list[str]]:
    """The containers, networks and volumes named `name`, `name-...` or `name_...` (a stack's)."""
    found = {}
    for kind, (listing, _) in _LISTINGS.items():
        out = subprocess.run([*docker, *listing[1:]], capture_output=True, text=True, check=True,
                             timeout=120).stdout
        found[kind] = sorted(n for n in out.split() if owns([name], n))
    return found


def mounted_volumes(name: str) -> dict[str, str]:
    """Every volume the containers of `name` mount, named or anonymous: volume -> `container:destination`."""
    containers = owned(name)["containers"]
    if not containers:
        return {}
    out = subprocess.run(["docker", "inspect", "--format", "{{.Name}} {{json .Mounts}}", *containers],
                         capture_output=True, text=True, timeout=120).stdout
    found = {}
    for line in out.splitlines():
        container, _, mounts = line.partition(" ")
        for mount in json.loads(mounts or "null") or []:
            if mount.get("Type") == "volume":
                found[mount["Name"]] = f"{container.lstrip('/')}:{mount['Destination']}"
    return found


def existing_volumes(names) -> list[str]:
    """Which of these volumes are still there."""
    out = subprocess.run(["docker", "volume", "ls", "--format", "{{.Name}}"], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    return sorted(set(names) & set(out))


def remove_owned(name: str) -> None:
    """Remove whatever of `name` is still there (a failed run's): containers, then networks, then volumes."""
    for kind, names in owned(name).items():
        for item in names:
            subprocess.run([*_LISTINGS[kind][1], item], capture_output=True, timeout=300)
