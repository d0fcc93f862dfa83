"""Development environment: middleware time to healthy (cold and warm) and api reload latency,
each beside a baseline measured in the same run.

- cold: no containers, no volumes (the database initialises). Ours: `invoke middleware.start`
  (pre-flight: Docker, ports; then compose up --wait). Baseline: raw `docker compose up -d --wait`
  of the same file, env file and project.
- warm: volumes kept from a previous start, containers removed (`down` without -v), then started
  again the same two ways.
- reload: a source edit of the Dify-shaped checkout (the stand-in, a TEST DOUBLE) until /health
  serves the new code. Ours: `invoke dev.start-api --detach` (uv run flask --debug, tracked).
  Baseline: the checkout's own `.venv/bin/flask run --debug`, started directly, no wrapper, no uv.
  Median of BENCH_DEV_RUNS (default 3) edits each; the middleware figures are medians of
  BENCH_DEV_MIDDLEWARE_RUNS (default 2) runs each, who goes first alternating.
Everything runs under a unique project name on free 127.0.0.1 ports and is removed at the end.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import Measure

ROOT = Path(__file__).resolve().parent.parent


def _support():
    spec = importlib.util.spec_from_file_location("difyops_dev_test_support", ROOT / "tests" / "dev" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _timed(fn) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def _health_version(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            import json

            return json.loads(resp.read()).get("version")
    except (OSError, ValueError):
        return None


def _reload_seconds(src: Path, port: int, n: int) -> float:
    """Edit config.py, time until /health reports the new code (bounded)."""
    config_py = src / "api" / "standin" / "config.py"
    text = config_py.read_text()
    marker = f"bench{n}x{int(time.time() * 1000) % 100000}"
    head = text.split('UPSTREAM_VERSION = "', 1)
    current = head[1].split('"', 1)[0]
    config_py.write_text(text.replace(f'UPSTREAM_VERSION = "{current}"', f'UPSTREAM_VERSION = "1.13.3-{marker}"'))
    started = time.monotonic()
    deadline = started + 120
    while time.monotonic() < deadline:
        if marker in (_health_version(port) or ""):
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError(f"the api did not serve the edit within 120s (port {port})")


def _wait_health(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _health_version(port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"no /health on {port} within {timeout}s")


def run() -> list[Measure]:
    support = _support()
    runs = int(os.environ.get("BENCH_DEV_RUNS", "3"))
    mw_runs = int(os.environ.get("BENCH_DEV_MIDDLEWARE_RUNS", "2"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-dev-"))
    env = support.make_env(tmp, "benchdev")
    env_file = env.state / "middleware.env"
    raw = ["docker", "compose", "-f", str(ROOT / "compose" / "dev" / "middleware.yml"), "--env-file", str(env_file),
           "-p", env.project]

    def sh(argv, **kw):
        return subprocess.run(argv, cwd=ROOT, env=env.env(), capture_output=True, text=True, check=True,
                              timeout=900, **kw)

    measures: list[Measure] = []
    baseline_proc = None
    try:
        # middleware.env (secrets, ports) and the checkout's venv, outside the timings
        env.invoke("dev.init", *env.set_args(), "--no-web", timeout=900)

        up_raw = raw + ["up", "-d", "--wait", "--wait-timeout", "300"]
        samples = {"cold ours": [], "cold raw": [], "warm ours": [], "warm raw": []}
        for i in range(mw_runs):  # alternate who goes first: the machine's load drifts
            for who in (("ours", "raw") if i % 2 == 0 else ("raw", "ours")):
                sh(raw + ["down", "--volumes", "--timeout", "10"])
                start = (lambda: env.invoke("middleware.start")) if who == "ours" else (lambda: sh(up_raw))
                samples[f"cold {who}"].append(_timed(start))
                sh(raw + ["down", "--timeout", "10"])
                samples[f"warm {who}"].append(_timed(start))
        med = {k: statistics.median(v) for k, v in samples.items()}
        note = ("5 services (postgres+pgvector, redis, sandbox, ssrf_proxy, plugin daemon), local images; "
                f"median of {mw_runs}; ours " + "{ours}; raw {raw}")
        for kind, label in (("cold", "cold (new volumes)"), ("warm", "warm (volumes kept, containers new)")):
            fmt = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
            measures.append(Measure("dev", f"middleware to healthy, {label}", med[f"{kind} ours"], med[f"{kind} raw"],
                                    "s", "invoke middleware.start", "docker compose up --wait",
                                    note.format(ours=fmt(samples[f"{kind} ours"]), raw=fmt(samples[f"{kind} raw"]))))
        sh(raw + ["up", "-d", "--wait", "--wait-timeout", "300"])

        api_port = env.ports["DEV_API_PORT"]
        env.invoke("dev.start-api", "--detach", timeout=300)
        ours = [_reload_seconds(env.src, api_port, i) for i in range(runs)]
        env.invoke("dev.stop", "--keep-middleware")
        from difyops import envfile

        api_env = dict(os.environ, **envfile.read(env.src / "api" / ".env"), FLASK_APP="app.py")
        api_env.pop("VIRTUAL_ENV", None)
        log = open(tmp / "baseline-api.log", "wb")
        baseline_proc = subprocess.Popen([str(env.src / "api" / ".venv" / "bin" / "flask"), "run", "--host", "127.0.0.1",
                                          "--port", str(api_port), "--debug"], cwd=env.src / "api", env=api_env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_health(api_port)
        base = [_reload_seconds(env.src, api_port, 100 + i) for i in range(runs)]
        measures.append(Measure("dev", "api reload: edit to new code served (median)", statistics.median(ours),
                                statistics.median(base), "s", "invoke dev.start-api", "flask run --debug (no wrapper)",
                                f"{runs} edits each; ours {', '.join(f'{x:.1f}' for x in ours)}; "
                                f"baseline {', '.join(f'{x:.1f}' for x in base)}"))
        for m in measures:
            print(m.markdown_row(), flush=True)
        return measures
    finally:
        if baseline_proc is not None and baseline_proc.poll() is None:
            os.killpg(baseline_proc.pid, 15)
            try:
                baseline_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(baseline_proc.pid, 9)
        env.cleanup()
