"""Smoke fixtures: a whole stack deployed with the Dify stand-in (a test double) under a
unique stack name, on a free port of 127.0.0.1, and torn down afterwards."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from smokelib import record

ROOT = Path(__file__).resolve().parents[2]

STANDIN_IMAGES = {
    "DIFY_API_IMAGE": "difyops-standin/dify-api:v1",
    "DIFY_WEB_IMAGE": "difyops-standin/dify-web:v1",
    "DIFY_SANDBOX_IMAGE": "difyops-standin/dify-sandbox:v1",
    "DIFY_PLUGIN_DAEMON_IMAGE": "difyops-standin/dify-plugin-daemon:v1",
}
LOCAL_IMAGES = {
    "POSTGRES_IMAGE": "difyops-local/postgres:17",
    "REDIS_IMAGE": "difyops-local/redis:8",
    "NGINX_IMAGE": "difyops-local/nginx:1.26",
    "SSRF_PROXY_IMAGE": "difyops-local/squid:6",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    name: str
    env_file: Path
    port: int
    torn_down: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def invoke(self, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
        env = dict(os.environ, INVOKE_DIFYOPS_ENV_FILE=str(self.env_file))
        result = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def teardown(self) -> dict[str, list[str]]:
        """`prod.down all --volumes`, then whatever of this stack is still there."""
        started = time.monotonic()
        down = self.invoke("prod.down", "all", "--volumes", "--yes", check=False)
        record("teardown", time.monotonic() - started)
        self.torn_down = True
        if down.returncode != 0:
            print(down.stdout[-2000:], down.stderr[-2000:])
        return self.leftovers()

    def remove_leftovers(self) -> None:
        for kind, names in self.leftovers().items():
            sub = {"containers": ["rm", "-f"], "networks": ["network", "rm"], "volumes": ["volume", "rm", "-f"]}[kind]
            for n in names:
                subprocess.run(["docker", *sub, n], capture_output=True)

    def leftovers(self) -> dict[str, list[str]]:
        found = {}
        for kind, cmd in (("containers", ["docker", "ps", "-a", "--format", "{{.Names}}"]),
                          ("networks", ["docker", "network", "ls", "--format", "{{.Name}}"]),
                          ("volumes", ["docker", "volume", "ls", "--format", "{{.Name}}"])):
            names = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
            found[kind] = [n for n in names if n.startswith(f"{self.name}-")]
        return found


def make_env(tmp: Path, name: str, port: int, extra: dict[str, str] | None = None) -> Path:
    env_file = tmp / ".env"
    # Load tests (upgrade under load) measure the stack, not the gateway's per-client limit on /v1,
    # which test_03_tls checks with its defaults.
    overrides = {"DIFYOPS_STACK": name, "EXPOSE_NGINX_PORT": str(port), "UPLOAD_FILE_SIZE_LIMIT": "30",
                 "NGINX_API_RATE": "off",
                 **STANDIN_IMAGES, **LOCAL_IMAGES,
                 **(extra or {})}
    args = [sys.executable, "-m", "invoke", "env.init", "--env-file", str(env_file)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True)
    return env_file


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    name = f"smoke{secrets.token_hex(3)}"
    tmp = tmp_path_factory.mktemp("stack")
    port = free_port()
    st = Stack(name, make_env(tmp, name, port), port)
    started = time.monotonic()
    try:
        result = st.invoke("prod.deploy", timeout=1200)
        print(result.stdout[-2000:])
        record("deploy (all clusters)", time.monotonic() - started)
        yield st
    finally:
        if not st.torn_down:
            st.teardown()
        # Leave the machine clean even when a check failed.
        st.remove_leftovers()

