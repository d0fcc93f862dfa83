"""A 3-node Swarm (1 manager + 2 workers, docker-in-docker) with the stand-in deployed on it.

The tasks under test reach the manager only through a Docker context (as CI reaches a remote
manager over ssh). The gateway is published by the manager's container on 127.0.0.1 only.
This machine's kernel has no IPVS, so Swarm's virtual IPs and routing mesh cannot work here: the
stack runs with SWARM_ENDPOINT_MODE=dnsrr and SWARM_PUBLISH_MODE=host (both documented settings).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from swarmlab import Lab
from testkit import (
    LOCAL_IMAGES,
    STANDIN_IMAGES,
    STANDIN_RELEASE,
    check,
    env_init,
    free_port,
    invoke,
    record,
    require,
    unique_name,
)

GATEWAY_PORT = 8080  # inside the Swarm
# Every node takes the app role (api, web, sandbox, SSRF proxy: three nodes for two replicas keep
# them apart through start-first updates); the manager also holds data (with the plugin daemon) and
# the gateway.
APP_IMAGES = [STANDIN_IMAGES["DIFY_API_IMAGE"], "difyops-standin/dify-api:v2", STANDIN_IMAGES["DIFY_WEB_IMAGE"],
              STANDIN_IMAGES["DIFY_SANDBOX_IMAGE"], LOCAL_IMAGES["SSRF_PROXY_IMAGE"]]
# The v3 stand-in models Dify 1.16.1 (the release upgrade's target): its app images on every node.
V3_IMAGES = {"DIFY_API_IMAGE": "difyops-standin/dify-api:v3", "DIFY_WEB_IMAGE": "difyops-standin/dify-web:v3",
             "DIFY_SANDBOX_IMAGE": "difyops-standin/dify-sandbox:v3",
             "DIFY_AGENT_BACKEND_IMAGE": "difyops-standin/dify-agent-backend:v3",
             "DIFY_AGENT_LOCAL_SANDBOX_IMAGE": "difyops-standin/dify-agent-local-sandbox:v3",
             "DIFY_PLUGIN_DAEMON_IMAGE": "difyops-standin/dify-plugin-daemon:v3"}
APP_IMAGES += [ref for key, ref in V3_IMAGES.items() if key != "DIFY_PLUGIN_DAEMON_IMAGE"]
MANAGER_IMAGES = [LOCAL_IMAGES[k] for k in ("POSTGRES_IMAGE", "REDIS_IMAGE", "NGINX_IMAGE")] + [
    STANDIN_IMAGES["DIFY_PLUGIN_DAEMON_IMAGE"], V3_IMAGES["DIFY_PLUGIN_DAEMON_IMAGE"], *APP_IMAGES]
# The plugin daemon as 0.6.x starts (langgenius/dify-plugin-daemon docker/local.dockerfile at 0.6.10):
# a process supervisor as ENTRYPOINT (tini -g -- there; env -- here), a CMD that migrates then execs
# the server, and no /app/entrypoint.sh. The stand-in daemon (a TEST DOUBLE) re-packed that way.
DAEMON_06 = f"difyops-test/plugin-daemon-06:{unique_name('t')}"
DAEMON_06_DOCKERFILE = (
    "FROM difyops-standin/dify-plugin-daemon:v1\n"
    "RUN rm /app/entrypoint.sh && printf '#!/bin/sh\\necho \"migrated (stand-in)\"\\n' > /app/commandline "
    "&& chmod 0755 /app/commandline\n"
    'ENTRYPOINT ["/usr/bin/env", "--"]\n'
    'CMD ["/bin/bash", "-c", "/app/commandline migrate && exec python3 /app/daemon/server.py"]\n'
)


class SwarmStack:
    def __init__(self, lab: Lab, name: str, env_file: Path, port: int):
        self.lab, self.name, self.env_file, self.port = lab, name, env_file, port

    def invoke(self, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
        return invoke(*args, env_file=self.env_file, check=check, timeout=timeout)

    def docker(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "--context", self.lab.context, *args], capture_output=True, text=True,
                              timeout=120)

    def set_env(self, key: str, value: str) -> None:
        lines = [ln for ln in self.env_file.read_text().splitlines() if not ln.startswith(f"{key}=")]
        self.env_file.write_text("\n".join(lines + [f"{key}={value}"]) + "\n")


@pytest.fixture(scope="session")
def swarm_stack(tmp_path_factory):
    require(subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "no Docker engine answers here",
            "nox -s swarm on a machine with one (CI starts it)")
    prefix = unique_name("difyops-sw")
    lab = Lab(prefix, Path(f"/tmp/{prefix}"))
    port = free_port()
    try:
        subprocess.run(["docker", "build", "-q", "-t", DAEMON_06, "-"], input=DAEMON_06_DOCKERFILE, text=True,
                       check=True, capture_output=True)
        started = time.monotonic()
        lab.start(workers=2, publish={GATEWAY_PORT: port})
        record("swarm: 3 nodes up", time.monotonic() - started)
        mark = time.monotonic()
        lab.load_images({"manager": [*MANAGER_IMAGES, DAEMON_06], **{f"worker{i}": APP_IMAGES for i in (1, 2)}})
        record("swarm: images copied into the nodes", time.monotonic() - mark)
        name = unique_name("sw")
        env_file = tmp_path_factory.mktemp("swarm") / ".env"
        env_init(env_file, {
            "DIFYOPS_STACK": name, "EXPOSE_NGINX_PORT": str(GATEWAY_PORT), "API_REPLICAS": "2", "WEB_REPLICAS": "2",
            "SWARM_ENDPOINT_MODE": "dnsrr", "SWARM_PUBLISH_MODE": "host",
            **STANDIN_RELEASE, **STANDIN_IMAGES, **LOCAL_IMAGES,
        })
        st = SwarmStack(lab, name, env_file, port)
        st.daemon_06 = DAEMON_06
        yield st
    finally:
        subprocess.run(["docker", "rmi", "-f", DAEMON_06], capture_output=True)
        left = lab.destroy()
        check(f"the swarm lab {prefix} is removed whole (nodes, their volumes, network, context)", not left,
              left or "nothing left")
