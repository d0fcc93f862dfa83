"""Ask the real Compose CLI what it makes of env files: `docker compose config`, no daemon.

For one case it writes the env file(s) and a compose file with two services:
- `p` has `KEY: "${KEY+1}${KEY}"` for each key asked about: the project environment, where a set
  value comes back with a leading "1" and an unset one as "" (so unset and empty differ);
- `f` has `env_file:` the (last) file: what a container gets from it.
and runs `docker compose --env-file F... -f compose.yml config --format json` with exactly the
environment given (plus PATH and HOME), DOCKER_HOST pointing nowhere (no engine is needed or
touched).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

_NO_ENGINE = "unix:///nonexistent/difyops-dotenv-tests.sock"
_DOLLAR_PROBE = "DIFYOPS_DOLLAR_PROBE"


@dataclass
class ComposeRead:
    error: str | None  # Compose's message when it refuses the files
    project: dict[str, str | None]  # key -> value in the project environment, None when unset
    env_file: dict[str, str]  # what the env_file: service gets


def compose_version() -> str | None:
    """`docker compose version --short`, or None when there is no Compose v2 CLI here."""
    if not shutil.which("docker"):
        return None
    try:
        done = subprocess.run(["docker", "compose", "version", "--short"], check=False, capture_output=True, text=True,
                              timeout=30, env=_base_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip().lstrip("v")
    return version if done.returncode == 0 and version.startswith("2.") else None


def require_compose() -> str:
    """Compose's version; skip (fail under CI=true) when the CLI is missing."""
    version = compose_version()
    if version is None:
        reason = ("`docker compose` (Compose v2 CLI) is missing: these comparisons need only the CLI, no engine;"
                  " they run in CI, where scripts/host-setup.sh installs it")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return version


def _base_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "DOCKER_HOST": _NO_ENGINE}
    if "DOCKER_CONFIG" in os.environ:
        env["DOCKER_CONFIG"] = os.environ["DOCKER_CONFIG"]
    return env


def process_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment Compose runs with for a case: the reader must get the same."""
    return {**_base_env(), **(extra or {})}


def _template_name(key: str) -> bool:
    return bool(key) and key.isascii() and (key[0].isalpha() or key[0] == "_") and \
        all(ch.isalnum() or ch == "_" for ch in key)


def read(files: list[bytes], keys: list[str], environ: dict[str, str] | None = None) -> ComposeRead:
    """What Compose makes of ``files`` (given as --env-file in order; the last is also env_file:)."""
    keys = sorted({k for k in keys if _template_name(k)})
    with tempfile.TemporaryDirectory(prefix="difyops-dotenv-") as tmp:
        folder = Path(tmp)
        names = []
        for i, data in enumerate(files):
            (folder / f"case{i}.env").write_bytes(data)
            names.append(f"case{i}.env")
        lines = ["services:", "  p:", "    image: difyops-unused", "    environment:",
                 f'      {_DOLLAR_PROBE}: "$$"']
        lines += [f'      {k}: "${{{k}+1}}${{{k}}}"' for k in keys]
        lines += ["  f:", "    image: difyops-unused", f"    env_file: [{names[-1]}]", ""]
        (folder / "compose.yml").write_text("\n".join(lines))
        argv = ["docker", "compose"]
        for name in names:
            argv += ["--env-file", name]
        argv += ["-f", "compose.yml", "-p", "difyops-dotenv", "config", "--format", "json"]
        done = subprocess.run(argv, check=False, cwd=folder, capture_output=True, env=process_environment(environ),
                              timeout=60)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.decode("utf-8", "replace").splitlines() if "level=warning" not in ln]
        return ComposeRead(" ".join(lines).strip() or f"exit {done.returncode}", {}, {})
    services = json.loads(done.stdout)["services"]
    p_env = services["p"].get("environment") or {}
    # `config` writes every literal $ as $$ (2.2x and later); the probe says whether this one does.
    doubled = p_env.get(_DOLLAR_PROBE) == "$$"

    def unescape(value: str) -> str:
        return value.replace("$$", "$") if doubled else value

    project: dict[str, str | None] = {}
    for k in keys:
        marked = unescape(p_env.get(k) or "")
        project[k] = marked[1:] if marked.startswith("1") else None
    env_file = {k: unescape(v or "") for k, v in (services["f"].get("environment") or {}).items()}
    return ComposeRead(None, project, env_file)
