"""Fixtures of the development-environment tests: a Dify-shaped checkout built from the
stand-in (a TEST DOUBLE) in a temp folder, its own state folder, a unique middleware project
and free ports on 127.0.0.1; everything stopped and removed afterwards."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "smoke"))  # smokelib: named checks
sys.path.insert(0, str(HERE))

import fixture  # noqa: E402

LOCAL_IMAGES = {
    "POSTGRES_IMAGE": "difyops-local/postgres:17",
    "REDIS_IMAGE": "difyops-local/redis:8",
    "SSRF_PROXY_IMAGE": "difyops-local/squid:6",
    "DIFY_SANDBOX_IMAGE": "difyops-standin/dify-sandbox:v1",
    "DIFY_PLUGIN_DAEMON_IMAGE": "difyops-standin/dify-plugin-daemon:v1",
    "ADMINER_IMAGE": "difyops-local/adminer:5",
}
PORT_KEYS = ("EXPOSE_POSTGRES_PORT", "EXPOSE_REDIS_PORT", "EXPOSE_SANDBOX_PORT", "EXPOSE_SSRF_PROXY_PORT",
             "EXPOSE_PLUGIN_DAEMON_PORT", "EXPOSE_PLUGIN_DEBUGGING_PORT", "EXPOSE_VIEWER_PORT",
             "DEV_API_PORT", "DEV_WEB_PORT")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class DevEnv:
    stack: str
    state: Path
    src: Path
    ports: dict[str, int]
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def project(self) -> str:
        return f"{self.stack}-middleware"

    def env(self, **extra) -> dict[str, str]:
        env = dict(os.environ, INVOKE_DIFYOPS_DEV_DIR=str(self.state), INVOKE_DIFYOPS_DEV_STACK=self.stack,
                   DIFY_SRC=str(self.src), INVOKE_DIFYOPS_DIFY_REPO="/nonexistent/dify.git")
        env.pop("INVOKE_DIFYOPS_DIFY_SRC", None)
        env.update(self.extra_env)
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def invoke(self, *args: str, check: bool = True, timeout: int = 600, **extra) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args], cwd=ROOT,
                                env=self.env(**extra), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def set_args(self) -> list[str]:
        args = []
        for key, value in {**LOCAL_IMAGES, **{k: str(v) for k, v in self.ports.items()}}.items():
            args += ["--set", f"{key}={value}"]
        return args

    def url(self, name: str, path: str = "/") -> str:
        key = {"api": "DEV_API_PORT", "web": "DEV_WEB_PORT", "viewer": "EXPOSE_VIEWER_PORT"}[name]
        return f"http://127.0.0.1:{self.ports[key]}{path}"

    def status(self) -> dict:
        return json.loads(self.invoke("dev.status", "--json").stdout)

    def containers(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
                              "--format", "{{.Names}}"], capture_output=True, text=True)
        return out.stdout.split()

    def volumes(self) -> list[str]:
        """The project's named volumes (compose labels them; anonymous volumes have no such label)."""
        out = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
                             capture_output=True, text=True)
        return sorted(out.stdout.split())

    def anonymous_volumes(self) -> list[str]:
        """Anonymous volumes mounted by the project's containers, as `destination=name`."""
        found = []
        for name in self.containers():
            out = subprocess.run(["docker", "inspect", "-f", "{{json .Mounts}}", name], capture_output=True, text=True)
            for mount in json.loads(out.stdout or "null") or []:
                if mount.get("Type") == "volume" and not mount.get("Name", "").startswith(f"{self.project}_"):
                    found.append(f"{mount['Destination']}={mount['Name']}")
        return sorted(found)

    def tracked_pids(self) -> list[int]:
        pids = []
        for path in (self.state / "run").glob("*.json") if (self.state / "run").is_dir() else []:
            pids.append(json.loads(path.read_text())["pid"])
        return pids

    def cleanup(self) -> None:
        self.invoke("dev.stop", check=False, timeout=180)
        subprocess.run(["docker", "compose", "-f", str(ROOT / "compose" / "dev" / "middleware.yml"),
                        "--env-file", str(self.state / "middleware.env"), "-p", self.project,
                        "--profile", "viewer", "down", "--volumes", "--remove-orphans", "--timeout", "10"],
                       capture_output=True, timeout=300)


def make_env(tmp: Path, name: str = "devt") -> DevEnv:
    stack = f"{name}{secrets.token_hex(3)}"
    src = fixture.build(tmp / "dify")
    return DevEnv(stack, tmp / "state", src, dict(zip(PORT_KEYS, free_ports(len(PORT_KEYS)))))


@pytest.fixture(scope="session")
def devenv(tmp_path_factory):
    env = make_env(tmp_path_factory.mktemp("dev"))
    try:
        yield env
    finally:
        started = time.monotonic()
        env.cleanup()
        print(f"TIMING cleanup: {time.monotonic() - started:.1f}s")
