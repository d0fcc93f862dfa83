"""The app processes' command lines: flask, Celery under watchfiles, pnpm, the relay, the Procfile."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

from .. import paths, release_sets
from ..devconfig import DevSettings
from ..errors import fail
from .checkout import HOST


def api_argv(port: int) -> list[str]:
    """Dify's own: flask with the debugger and the reloader (reloads on every source change)."""
    return ["uv", "run", "flask", "run", "--host", HOST, "--port", str(port), "--debug"]


def bridge_gateway(c: Any) -> str | None:
    """The address Docker's host-gateway maps to (the default bridge's gateway), if Docker says."""
    result = c.run("docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}'", hide=True, warn=True)
    address = result.stdout.strip() if result.ok else ""
    return address if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", address) else None


def relay_argv(gateway: str, port: int, argv: list[str]) -> list[str]:
    """Wrap the api so containers reach it on gateway:port (see difyops/devrelay.py)."""
    return [sys.executable, str(paths.ROOT / "difyops" / "devrelay.py"), "--listen", f"{gateway}:{port}", "--to", f"{HOST}:{port}",
            "--", *argv]


def celery_queues(ds: DevSettings) -> str:
    """Every Celery queue of the release the checkout is (DIFY_VERSION, else the default release),
    from its release set (difyops/release_sets), as -Q takes them."""
    try:
        return release_sets.for_version(ds.get("DIFY_VERSION")).queue_list()
    except release_sets.ReleaseSetError as exc:
        raise fail(f"{exc} (DIFY_VERSION in {ds.env_file})")


def celery_argv(queues: str, pool: str = "gevent", concurrency: int = 1) -> list[str]:
    return ["uv", "run", "celery", "-A", "app.celery", "worker", "-P", pool, "-c", str(concurrency),
            "--loglevel", "INFO", "-Q", queues]


def worker_argv(api_dir: Path, queues: str, reload: bool = True) -> list[str]:
    """Celery on Dify's queues; under watchfiles, restarted when a Python file changes."""
    celery = celery_argv(queues)
    if not reload:
        return celery
    return [sys.executable, "-m", "watchfiles", "--filter", "python", "--target-type", "command",
            "--sigint-timeout", "10", shlex.join(celery), str(api_dir)]


def web_argv(port: int) -> list[str]:
    return ["pnpm", "dev", "--port", str(port), "--hostname", HOST]


def migrate_argv() -> list[str]:
    return ["uv", "run", "flask", "db", "upgrade"]


def procfile(ds: DevSettings, src: Path, api_port: int, web_port: int, queues: str) -> str:
    """honcho's Procfile: each line runs our own foreground task, so each app records its pid."""
    base = [sys.executable, "-m", "invoke", "--search-root", str(paths.ROOT)]
    lines = {
        "api": base + ["dev.start-api", "--src", str(src), "--port", str(api_port)],
        "worker": base + ["dev.start-worker", "--src", str(src), "--queues", queues],
        "web": base + ["dev.start-web", "--src", str(src), "--port", str(web_port)],
    }
    return "".join(f"{name}: exec {shlex.join(argv)}\n" for name, argv in lines.items())
