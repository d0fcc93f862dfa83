"""Settings in one place: the .env file (read as Compose reads it) plus invoke configuration.

Invoke configuration (``ns.configure`` defaults, overridable by invoke.yaml or INVOKE_DIFYOPS_*
variables) says *where* things are: the env file and the stack name. The .env file says *what*
the deployment is, in Dify's own variable names. No module reads os.environ on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import dotenv, envfile, paths

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
    # Both of Compose's readings of env_file (None when there is no file): `env` is the project
    # reading (what `${KEY}` means in the compose files) restricted to the file's keys.
    compose: dotenv.ComposeEnv | None = None
    # The keys whose two readings disagree (dotenv.disagreements), one line each.
    disagreements: list[str] = field(default_factory=list)

    def get(self, key: str, default: str = "") -> str:
        value = self.env.get(key)
        return default if value is None or value == "" else value

    def dify_values(self) -> dict[str, str]:
        """What a service with `env_file: .env` gets (api, worker and beat get these, less
        difyops' own: clusters.dify_env_file)."""
        return dict(self.compose.env_file) if self.compose is not None else {}


def _section(c: Any) -> Mapping[str, Any]:
    try:
        section = c.config.get("difyops") or {}
    except AttributeError:
        section = {}
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in dict(section).items() if v is not None})
    return merged


def process_environment() -> dict[str, str]:
    """What Compose runs with besides the files (the tasks' own process environment)."""
    return dict(os.environ)


def read_compose(path: Path, environ: Mapping[str, str], text: str | bytes | None = None) -> dotenv.ComposeEnv | None:
    """.env as the compose commands read it: after compose/sizes/<DIFYOPS_SIZE>.env when that
    preset is chosen (clusters.size_env_args). ``text``: the file's content when it is not (yet)
    at ``path``. None for a missing file; DotenvError for one Compose refuses."""
    if text is None:
        if not path.exists():
            return None
        text = dotenv.read(path, environ).text
    composed = dotenv.from_texts([text], environ, [str(path)])
    size = envfile.project_values(composed).get("DIFYOPS_SIZE", "")
    preset = paths.COMPOSE_DIR / "sizes" / f"{size}.env"
    if size and "/" not in size and preset.is_file():
        composed = dotenv.from_texts([preset.read_bytes(), text], environ, [str(preset), str(path)])
    return composed


def env_path(c: Any = None, env_file: str | Path | None = None) -> Path:
    """Where the env file is: the argument, else invoke configuration (relative to the checkout)."""
    path = Path(env_file or _section(c)["env_file"]).expanduser()
    return path if path.is_absolute() else (paths.ROOT / path).resolve()


def settings_for(path: Path, stack: str | None = None, wait_timeout: int = 300,
                 text: str | bytes | None = None) -> Settings:
    """The settings of the env file at ``path`` (or of ``text``, as if it were there); the stack is
    ``stack``, else the file's DIFYOPS_STACK, else dify. DotenvError for a file Compose refuses."""
    environ = process_environment()
    composed = read_compose(path, environ, text)
    env = envfile.project_values(composed) if composed is not None else {}
    return Settings(env_file=path, stack=stack or env.get("DIFYOPS_STACK") or "dify", env=env,
                    wait_timeout=int(wait_timeout), compose=composed,
                    disagreements=dotenv.disagreements(composed, environ) if composed else [])


def load_settings(c: Any = None, env_file: str | Path | None = None) -> Settings:
    """The settings of a task. A .env Compose refuses raises DotenvError (one line naming the line)."""
    section = _section(c)
    return settings_for(env_path(c, env_file), section.get("stack"), section["wait_timeout"])
