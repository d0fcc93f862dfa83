"""Settings in one place: the .env file (python-dotenv) plus invoke configuration.

Invoke configuration (``ns.configure`` defaults, overridable by invoke.yaml or INVOKE_DIFYOPS_*
variables) says *where* things are: the env file and the stack name. The .env file says *what*
the deployment is, in Dify's own variable names. No module reads os.environ on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dotenv import dotenv_values

from . import paths

# Invoke's defaults for the ``difyops`` config section (see tasks/__init__.py).
DEFAULTS: dict[str, Any] = {
    "env_file": str(paths.DEFAULT_ENV_FILE),
    # Prefix of every compose project, network and volume this deployment owns.
    "stack": None,  # None: DIFYOPS_STACK from .env, else "dify"
    "wait_timeout": 300,
}


@dataclass
class Settings:
    env_file: Path
    stack: str
    env: dict[str, str] = field(default_factory=dict)
    wait_timeout: int = 300

    def get(self, key: str, default: str = "") -> str:
        value = self.env.get(key)
        return default if value is None or value == "" else value


def _section(c: Any) -> Mapping[str, Any]:
    try:
        section = c.config.get("difyops") or {}
    except AttributeError:
        section = {}
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in dict(section).items() if v is not None})
    return merged


def read_env(path: Path) -> dict[str, str]:
    """Read a .env file as Compose does: KEY=VALUE lines, no variable expansion."""
    if not path.exists():
        return {}
    values = dotenv_values(path, interpolate=False)
    return {k: ("" if v is None else v) for k, v in values.items()}


def load_settings(c: Any = None, env_file: str | Path | None = None) -> Settings:
    section = _section(c)
    path = Path(env_file or section["env_file"]).expanduser()
    if not path.is_absolute():
        path = (paths.ROOT / path).resolve()
    env = read_env(path)
    stack = section.get("stack") or env.get("DIFYOPS_STACK") or "dify"
    return Settings(env_file=path, stack=stack, env=env, wait_timeout=int(section["wait_timeout"]))
