"""Upgrade benchmark: failed requests during `invoke prod.upgrade` under load against a plain
`docker compose up -d --force-recreate` of the same stack in the same run; requests per second and
latency through the gateway against straight to an api replica (its address on the Docker bridge);
time to first SSE event through the gateway against straight.

Deploys its own stack (the Dify stand-in, a test double) under a unique name on a free port of
127.0.0.1 and removes it at the end. Traffic goes to 127.0.0.1 and the Docker bridge only.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import STANDIN_STACK, Measure
from benchmarks.loadgen import Load, SseStream

ROOT = Path(__file__).resolve().parent.parent
LOAD_PATHS = ["/v1/ping", "/", "/console/api/ping", "/api/ping"]
THREADS = 4
LOAD_SECONDS = 20  # the throughput runs
SSE_SAMPLES = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BenchStack:
    def __init__(self) -> None:
        self.name = f"bench{secrets.token_hex(3)}"
        self.tmp = Path(tempfile.mkdtemp(prefix="difyops-bench-"))
        self.env_file = self.tmp / ".env"
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def invoke(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, INVOKE_DIFYOPS_ENV_FILE=str(self.env_file))
        result = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=1200)
        if check and result.returncode:
            raise RuntimeError(f"invoke {' '.join(args)} failed: {result.stderr[-1500:]}")
        return result

    def create(self) -> None:
        # One load generator is one client address: the per-address limits (50 r/s on the API
        # paths by default) would answer most of it with 429 and the figures would measure the
        # limiter, not the proxying. They are off here and nowhere else.
        sets = {"DIFYOPS_STACK": self.name, "EXPOSE_NGINX_PORT": str(self.port),
                "EXPOSE_NGINX_SSL_PORT": str(_free_port()), "NGINX_API_RATE": "off", "NGINX_CONN_LIMIT": "off",
                **STANDIN_STACK}
        args = ["env.init", "--env-file", str(self.env_file)]
        for key, value in sets.items():
            args += ["--set", f"{key}={value}"]
        self.invoke(*args)
        self.invoke("prod.deploy")

    def compose(self, cluster: str, project: str, *args: str, env: dict | None = None) -> None:
        """`docker compose` for a cluster as the tasks render it (the one renderer: the release's
        overlays and images, the size preset), for one of its projects."""
        from difyops import clusters as cl
        from difyops import config, units

        settings = config.settings_for(self.env_file, self.name, 600)
        argv = cl.compose_argv(settings, cl.CLUSTERS[cluster], *args, project_name=project)
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, **units.cluster_env(settings, cl.CLUSTERS[cluster]), **(env or {})))

    def active(self, cluster: str) -> str:
        state = self.tmp / "var" / self.name / "state.json"
        projects = json.loads(state.read_text()).get("projects", {}) if state.exists() else {}
        return projects.get(cluster, f"{self.name}-{cluster}")

    def api_address(self) -> str:
        project = self.active("api")
        ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                              "--filter", "label=com.docker.compose.service=api"],
                             capture_output=True, text=True, check=True).stdout.split()
        fmt = "{{(index .NetworkSettings.Networks \"%s-app\").IPAddress}}" % self.name
        ip = subprocess.run(["docker", "inspect", "-f", fmt, ids[0]], capture_output=True, text=True,
                            check=True).stdout.strip()
        return f"http://{ip}:5001"

    def remove(self) -> None:
        self.invoke("prod.down", "all", "--volumes", "--yes", check=False)
        for _kind, ls, rm in (("containers", ["docker", "ps", "-aq", "--filter", f"name=^{self.name}-"], ["docker", "rm", "-f"]),
                             ("networks", ["docker", "network", "ls", "-q", "--filter", f"name=^{self.name}-"], ["docker", "network", "rm"]),
                             ("volumes", ["docker", "volume", "ls", "-q", "--filter", f"name=^{self.name}-"], ["docker", "volume", "rm", "-f"])):
            for item in subprocess.run(ls, capture_output=True, text=True).stdout.split():
                subprocess.run([*rm, item], capture_output=True)
        subprocess.run(["rm", "-rf", str(self.tmp)])


def _under_load(st: BenchStack, action) -> tuple:
    load = Load(st.base, LOAD_PATHS, threads=THREADS, seconds=300).start()
    time.sleep(2)
    started = time.monotonic()
    action()
    seconds = time.monotonic() - started
    time.sleep(3)
    return load.stop(), seconds


def _ttfe(url: str) -> float:
    samples = []
    for _ in range(SSE_SAMPLES):
        stream = SseStream(url + "/v1/sse?count=1&interval=0", count=1, timeout=30)
        stream.run()
        if stream.first_event_after is not None:
            samples.append(stream.first_event_after)
    samples.sort()
    return samples[len(samples) // 2] if samples else float("nan")


def run() -> list[Measure]:
    st = BenchStack()
    try:
        st.create()
        ours, ours_s = _under_load(st, lambda: st.invoke(
            "prod.upgrade", "--api-image", "difyops-standin/dify-api:v2",
            "--web-image", "difyops-standin/dify-web:v2", "--no-backup"))
        print(f"ours (prod.upgrade v1->v2, {ours_s:.0f}s): {ours.summary()}", flush=True)

        def recreate():
            for cluster in ("api", "web"):
                st.compose(cluster, st.active(cluster), "up", "-d", "--force-recreate", "--wait")
        base, base_s = _under_load(st, recreate)
        print(f"baseline (compose up -d --force-recreate, {base_s:.0f}s): {base.summary()}", flush=True)

        direct_url = st.api_address()
        via = Load(st.base, ["/v1/ping"], threads=THREADS, seconds=LOAD_SECONDS).start()
        time.sleep(LOAD_SECONDS + 1)
        via = via.stop()
        direct = Load(direct_url, ["/v1/ping"], threads=THREADS, seconds=LOAD_SECONDS).start()
        time.sleep(LOAD_SECONDS + 1)
        direct = direct.stop()
        print(f"gateway: {via.summary()}\ndirect: {direct.summary()}", flush=True)
        ttfe_via, ttfe_direct = _ttfe(st.base), _ttfe(direct_url)
        note_load = f"{THREADS} threads of GETs ({', '.join(LOAD_PATHS)})"
        return [
            Measure("upgrade", "failed requests during an upgrade under load", ours.failed, base.failed, "requests",
                    "prod.upgrade", "compose up -d --force-recreate",
                    f"{ours.total} vs {base.total} requests; {note_load}; max latency "
                    f"{max(ours.latencies, default=0) * 1000:.0f} vs {max(base.latencies, default=0) * 1000:.0f} ms"),
            Measure("upgrade", "failed share during an upgrade", 100 * ours.failed / max(ours.total, 1),
                    100 * base.failed / max(base.total, 1), "%", "prod.upgrade", "force-recreate"),
            Measure("upgrade", "api /v1/ping throughput", via.rps, direct.rps, "req/s", "through gateway",
                    "straight to replica", f"{THREADS} threads, {LOAD_SECONDS}s each"),
            Measure("upgrade", "api /v1/ping p50 latency", via.percentile(50) * 1000, direct.percentile(50) * 1000,
                    "ms", "through gateway", "straight to replica"),
            Measure("upgrade", "api /v1/ping p99 latency", via.percentile(99) * 1000, direct.percentile(99) * 1000,
                    "ms", "through gateway", "straight to replica"),
            Measure("upgrade", "time to first SSE event (median)", ttfe_via * 1000, ttfe_direct * 1000, "ms",
                    "through gateway", "straight to replica", f"{SSE_SAMPLES} streams each"),
        ]
    finally:
        st.remove()


if __name__ == "__main__":
    for m in run():
        print(m.markdown_row())
