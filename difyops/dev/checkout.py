"""The Dify checkout (found, or cloned at DIFY_VERSION) and the tools it needs (uv and Python, Node and pnpm)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

from ..report import last_line
from .. import probes, release_sets
from ..devconfig import DevSettings
from ..errors import fail
from ..report import Say, quiet

VECTOR_PROFILES = {"pgvector": None, "weaviate": "weaviate", "qdrant": "qdrant"}


# Services that must be healthy before the api, worker or migrations can start.
CORE_SERVICES = ("db_postgres", "redis")


MIDDLEWARE_SERVICES = ("db_postgres", "redis", "sandbox", "ssrf_proxy", "plugin_daemon")


APPS = ("api", "worker", "web")


HOST = "127.0.0.1"  # every app process and published port binds here only


MIN_NODE = 22  # Dify's web wants Node 22 unless web/package.json says otherwise


def checkout_problem(path: Path) -> str | None:
    """Why a folder is not a usable Dify checkout, or None."""
    if not path.is_dir():
        return f"{path} does not exist"
    for rel in ("api/pyproject.toml", "web/package.json"):
        if not (path / rel).is_file():
            return f"{path} is not a Dify checkout (no {rel})"
    return None


def find_source(c: Any, ds: DevSettings, clone: bool = True, say: Say = quiet) -> Path:
    """The Dify checkout: the configured one as it is (offline), else a clone of DIFY_VERSION."""
    if ds.dify_src is not None:
        problem = checkout_problem(ds.dify_src)
        if problem:
            raise fail(f"{problem}: point DIFY_SRC (or --src) at a Dify checkout with api/ and web/")
        return ds.dify_src
    target = ds.state_dir / "dify"
    if checkout_problem(target) is None:
        return target
    if not clone:
        raise fail("no Dify source: set DIFY_SRC=/path/to/dify (or --src), or run `invoke dev.init` to clone it")
    if shutil.which("git") is None:
        raise fail("no Dify source and git is not installed: install git, or set DIFY_SRC=/path/to/dify")
    version = ds.get("DIFY_VERSION", release_sets.default().release)
    ds.state_dir.mkdir(parents=True, exist_ok=True)
    say(f"no DIFY_SRC set: cloning Dify {version} into {target}")
    result = c.run(shlex.join(["git", "clone", "--depth", "1", "--branch", version, ds.dify_repo, str(target)]),
                   warn=True, hide="stdout")
    if not result.ok or checkout_problem(target):
        shutil.rmtree(target, ignore_errors=True)
        last = last_line(result.stderr, 'no output')
        raise fail(f"no Dify source: cloning {ds.dify_repo} failed ({last}); set DIFY_SRC=/path/to/dify "
                   "to use an existing checkout")
    return target


def _version(text: str) -> tuple[int, ...]:
    return probes._version(text)


def python_problems(c: Any, src: Path) -> list[str]:
    if shutil.which("uv") is None:
        return ["uv is not installed: `pip install uv` (or see https://docs.astral.sh/uv/), then retry"]
    spec = _requires_python(src / "api" / "pyproject.toml")
    argv = ["uv", "python", "find", "--system"] + ([spec] if spec else [])
    result = c.run(shlex.join(argv), hide=True, warn=True)
    if not result.ok:
        return [f"no Python interpreter matches {spec or 'the api'} (api/pyproject.toml): install one "
                f"(e.g. with pyenv or apt) and put it on PATH"]
    return []


def _requires_python(pyproject: Path) -> str | None:
    try:
        import tomllib

        data = tomllib.loads(pyproject.read_text())
    except (OSError, ValueError):
        return None
    return (data.get("project") or {}).get("requires-python")


def node_problems(c: Any, src: Path) -> list[str]:
    if shutil.which("node") is None:
        return [f"Node.js is not installed: install Node {MIN_NODE} (e.g. from nodesource or nvm), then retry"]
    result = c.run("node --version", hide=True, warn=True)
    have = _version(result.stdout if result.ok else "")
    need = _node_minimum(src / "web" / "package.json")
    problems = []
    if have and have[0] < need:
        problems.append(f"Node {result.stdout.strip()} is too old: web/package.json needs Node {need} or newer")
    if shutil.which("pnpm") is None:
        problems.append("pnpm is not installed: `corepack enable pnpm` or `npm install -g pnpm`, then retry")
    return problems


def _node_minimum(package_json: Path) -> int:
    try:
        engines = json.loads(package_json.read_text()).get("engines") or {}
    except (OSError, ValueError):
        return MIN_NODE
    match = re.search(r"(\d+)", str(engines.get("node", "")))
    return int(match.group(1)) if match else MIN_NODE
