"""A 3-node Swarm (1 manager + 2 workers, docker-in-docker) with the stand-in deployed on it.

The tasks under test reach the manager only through a Docker context (as CI reaches a remote
manager over ssh). The gateway is published by the manager's container on 127.0.0.1 only.
This machine's kernel has no IPVS, so Swarm's virtual IPs and routing mesh cannot work here: the
stack runs with SWARM_ENDPOINT_MODE=dnsrr and SWARM_PUBLISH_MODE=host (both documented settings).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "smoke"))
from smokelib import record  # noqa: E402
from swarmlab import Lab  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_PORT = 8080  # inside the Swarm
# Every node takes the app role (api, web, sandbox, SSRF proxy: three nodes for two replicas keep
# them apart through start-first updates); the manager also holds data (with the plugin daemon) and
# the gateway.
APP_IMAGES = ["difyops-standin/dify-api:v1", "difyops-standin/dify-api:v2", "difyops-standin/dify-web:v1",
              "difyops-standin/dify-sandbox:v1", "difyops-local/squid:6"]
MANAGER_IMAGES = ["difyops-local/postgres:17", "difyops-local/redis:8", "difyops-local/nginx:1.26",
                  "difyops-standin/dify-plugin-daemon:v1", *APP_IMAGES]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SwarmStack:
    def __init__(self, lab: Lab, name: str, env_file: Path, port: int):
        self.lab, self.name, self.env_file, self.port = lab, name, env_file, port

    def invoke(self, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
        env = dict(os.environ, INVOKE_DIFYOPS_ENV_FILE=str(self.env_file))
        result = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def docker(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "--context", self.lab.context, *args], capture_output=True, text=True,
                              timeout=120)

    def set_env(self, key: str, value: str) -> None:
        lines = [ln for ln in self.env_file.read_text().splitlines() if not ln.startswith(f"{key}=")]
        self.env_file.write_text("\n".join(lines + [f"{key}={value}"]) + "\n")


@pytest.fixture(scope="session")
def swarm_stack(tmp_path_factory):
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine here; `nox -s swarm` runs these checks on a machine with one")
    prefix = f"difyops-sw{secrets.token_hex(3)}"
    lab = Lab(prefix, Path(f"/tmp/{prefix}"))
    port = free_port()
    try:
        started = time.monotonic()
        lab.start(workers=2, publish={GATEWAY_PORT: port})
        record("swarm: 3 nodes up", time.monotonic() - started)
        mark = time.monotonic()
        lab.load_images({"manager": MANAGER_IMAGES, **{f"worker{i}": APP_IMAGES for i in (1, 2)}})
        record("swarm: images copied into the nodes", time.monotonic() - mark)
        name = f"sw{secrets.token_hex(3)}"
        env_file = tmp_path_factory.mktemp("swarm") / ".env"
        overrides = {
            "DIFYOPS_STACK": name, "EXPOSE_NGINX_PORT": str(GATEWAY_PORT), "API_REPLICAS": "2", "WEB_REPLICAS": "2",
            "SWARM_ENDPOINT_MODE": "dnsrr", "SWARM_PUBLISH_MODE": "host",
            "DIFY_API_IMAGE": "difyops-standin/dify-api:v1", "DIFY_WEB_IMAGE": "difyops-standin/dify-web:v1",
            "DIFY_SANDBOX_IMAGE": "difyops-standin/dify-sandbox:v1",
            "DIFY_PLUGIN_DAEMON_IMAGE": "difyops-standin/dify-plugin-daemon:v1", "SSRF_PROXY_IMAGE": "difyops-local/squid:6",
            "POSTGRES_IMAGE": MANAGER_IMAGES[0], "REDIS_IMAGE": MANAGER_IMAGES[1], "NGINX_IMAGE": MANAGER_IMAGES[2],
        }
        args = [sys.executable, "-m", "invoke", "env.init", "--env-file", str(env_file)]
        for key, value in overrides.items():
            args += ["--set", f"{key}={value}"]
        subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True)
        yield SwarmStack(lab, name, env_file, port)
    finally:
        left = lab.destroy()
        print(f"swarm lab {prefix} removed" + (f"; left behind: {left}" if left else ""))
