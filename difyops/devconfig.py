"""Settings of the development environment: where the Dify checkout is, where dev state lives.

Invoke configuration (``difyops.*``, overridable by invoke.yaml or INVOKE_DIFYOPS_* variables)
says where things are; the generated middleware env file (``<dev_dir>/middleware.env``) says
what the middleware is (secrets, ports, images). DIFY_SRC is also read from the process
environment here, the one place that does, because Dify's own docs and scripts use that name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import envfile, paths

DEV_DEFAULTS: dict[str, Any] = {
    # A Dify checkout with api/ and web/. None: DIFY_SRC (environment, then middleware.env).
    "dify_src": None,
    # Cloned when no checkout is found (tag DIFY_VERSION).
    "dify_repo": "https://github.com/langgenius/dify.git",
    # State of the development environment: middleware.env, pid files, logs, a clone.
    "dev_dir": str(paths.ROOT / "var" / "dev"),
    # Compose project of the development middleware: <dev_stack>-middleware.
    "dev_stack": "difydev",
}

MIDDLEWARE_FILE = paths.COMPOSE_DIR / "dev" / "middleware.yml"
MIDDLEWARE_ENV_EXAMPLE = paths.COMPOSE_DIR / "dev" / "middleware.env.example"


@dataclass
class DevSettings:
    state_dir: Path
    stack: str
    dify_src: Path | None
    dify_repo: str
    env: dict[str, str] = field(default_factory=dict)
    wait_timeout: int = 300

    @property
    def env_file(self) -> Path:
        return self.state_dir / "middleware.env"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def project(self) -> str:
        return f"{self.stack}-middleware"

    def get(self, key: str, default: str = "") -> str:
        value = self.env.get(key)
        return default if value is None or value == "" else value

    def port(self, key: str, default: int) -> int:
        raw = self.get(key, str(default))
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            from .errors import fail

            raise fail(f"{key}={raw!r} in {self.env_file} is not a port number: fix it")
        return int(raw)


def _section(c: Any) -> dict[str, Any]:
    try:
        section = dict(c.config.get("difyops") or {})
    except AttributeError:
        section = {}
    merged = dict(DEV_DEFAULTS)
    merged.update({k: v for k, v in section.items() if k in DEV_DEFAULTS and v not in (None, "")})
    merged["wait_timeout"] = int(section.get("wait_timeout") or 300)
    return merged


def load_dev(c: Any = None, src: str | None = None, environ: Mapping[str, str] | None = None) -> DevSettings:
    """Dev settings; the checkout is --src, else difyops.dify_src, else DIFY_SRC (environment,
    then middleware.env). It is not checked here: see dev.find_source."""
    section = _section(c)
    state = Path(section["dev_dir"]).expanduser()
    if not state.is_absolute():
        state = (paths.ROOT / state).resolve()
    env = envfile.read(state / "middleware.env")
    source_env: Mapping[str, str] = os.environ if environ is None else environ
    chosen = src or section.get("dify_src") or source_env.get("DIFY_SRC") or env.get("DIFY_SRC") or None
    return DevSettings(
        state_dir=state,
        stack=section["dev_stack"],
        dify_src=Path(chosen).expanduser().resolve() if chosen else None,
        dify_repo=section["dify_repo"],
        env=env,
        wait_timeout=section["wait_timeout"],
    )
