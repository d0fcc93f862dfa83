"""The development env files: var/dev/middleware.env, and Dify's api/.env and web/.env.local pointing at the middleware."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import dotenv, envfile
from ..devconfig import MIDDLEWARE_ENV_EXAMPLE, DevSettings
from .checkout import HOST


def ensure_middleware_env(ds: DevSettings, overrides: dict[str, str] | None = None) -> bool:
    """Write <dev_dir>/middleware.env (0600, secrets generated) if missing; apply overrides to an
    existing one, keeping a backup. Returns True when the file changed. Reloads ds.env."""
    overrides = dict(overrides or {})
    ds.state_dir.mkdir(parents=True, exist_ok=True)
    path = ds.env_file
    if not path.exists():
        dotenv.write_private(path, envfile.generate(MIDDLEWARE_ENV_EXAMPLE.read_text(), overrides))
        changed = True
    else:
        current = envfile.read(path)
        todo = {k: v for k, v in overrides.items() if current.get(k) != v}
        changed = bool(todo)
        if changed:
            dotenv.set_values(path, todo, comment="Set by dev.init --set")
    ds.env = envfile.read(path)
    return changed


@dataclass
class EnvMerge:
    path: Path
    created: bool = False
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    differing: tuple[str, ...] = ()  # connection keys the user set otherwise (kept)
    backup: Path | None = None


def api_env_values(ds: DevSettings) -> dict[str, str]:
    """What api/.env needs to reach the development middleware (Dify's variable names)."""
    pg, rd = ds.port("EXPOSE_POSTGRES_PORT", 5432), ds.port("EXPOSE_REDIS_PORT", 6379)
    api, web = ds.port("DEV_API_PORT", 5001), ds.port("DEV_WEB_PORT", 3000)
    ssrf = ds.port("EXPOSE_SSRF_PROXY_PORT", 3128)
    redis_pw = ds.get("REDIS_PASSWORD")
    api_url, web_url = f"http://localhost:{api}", f"http://localhost:{web}"
    return {
        "SECRET_KEY": ds.get("SECRET_KEY"),
        "CONSOLE_API_URL": api_url, "CONSOLE_WEB_URL": web_url, "SERVICE_API_URL": api_url,
        "APP_API_URL": api_url, "APP_WEB_URL": web_url, "FILES_URL": api_url,
        "DB_USERNAME": ds.get("DB_USERNAME", "postgres"), "DB_PASSWORD": ds.get("DB_PASSWORD"),
        "DB_HOST": HOST, "DB_PORT": str(pg), "DB_DATABASE": ds.get("DB_DATABASE", "dify"),
        "REDIS_HOST": HOST, "REDIS_PORT": str(rd), "REDIS_PASSWORD": redis_pw,
        "CELERY_BROKER_URL": f"redis://:{redis_pw}@{HOST}:{rd}/1",
        "VECTOR_STORE": ds.get("VECTOR_STORE", "pgvector"),
        "PGVECTOR_HOST": HOST, "PGVECTOR_PORT": str(pg), "PGVECTOR_USER": ds.get("DB_USERNAME", "postgres"),
        "PGVECTOR_PASSWORD": ds.get("DB_PASSWORD"), "PGVECTOR_DATABASE": ds.get("DB_DATABASE", "dify"),
        "CODE_EXECUTION_ENDPOINT": f"http://{HOST}:{ds.port('EXPOSE_SANDBOX_PORT', 8194)}",
        "CODE_EXECUTION_API_KEY": ds.get("SANDBOX_API_KEY"),
        "SSRF_PROXY_HTTP_URL": f"http://{HOST}:{ssrf}", "SSRF_PROXY_HTTPS_URL": f"http://{HOST}:{ssrf}",
        "PLUGIN_DAEMON_URL": f"http://{HOST}:{ds.port('EXPOSE_PLUGIN_DAEMON_PORT', 5002)}",
        "PLUGIN_DAEMON_KEY": ds.get("PLUGIN_DAEMON_KEY"),
        "INNER_API_KEY_FOR_PLUGIN": ds.get("PLUGIN_DIFY_INNER_API_KEY"),
        "PLUGIN_DIFY_INNER_API_KEY": ds.get("PLUGIN_DIFY_INNER_API_KEY"),
    }


def web_env_values(ds: DevSettings) -> dict[str, str]:
    api = ds.port("DEV_API_PORT", 5001)
    return {
        "NEXT_PUBLIC_API_PREFIX": f"http://localhost:{api}/console/api",
        "NEXT_PUBLIC_PUBLIC_API_PREFIX": f"http://localhost:{api}/api",
    }


# Keys whose value is never a user's choice when empty or one of Dify's public defaults.
_FILL_WHEN_UNSET = ("SECRET_KEY",)


# Keys that decide whether the app reaches the middleware at all: reported when they differ.
_CONNECTION_KEYS = ("DB_HOST", "DB_PORT", "DB_PASSWORD", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD",
                    "CELERY_BROKER_URL", "NEXT_PUBLIC_API_PREFIX")


def merge_app_env(path: Path, example: Path, wanted: dict[str, str], update_connection: bool = False) -> EnvMerge:
    """Create ``path`` from ``example`` with ``wanted`` set; on later runs add missing keys (ours
    and the example's) and keep every value the user has, after a backup."""
    result = EnvMerge(path)
    example_text = example.read_bytes() if example.is_file() else b""
    if not path.exists():
        dotenv.write_private(path, envfile.with_values(example_text, wanted, "Set by difyops dev.init", str(example)))
        result.created = True
        result.added = tuple(wanted)
        return result
    current = envfile.read(path)
    values: dict[str, str] = {}
    for key, value in envfile.values_of(example_text, str(example)).items():
        if key not in current:
            values[key] = wanted.get(key, value)
    for key, value in wanted.items():
        if key not in current:
            values[key] = value
        elif key in _FILL_WHEN_UNSET and (not current[key] or current[key] in dotenv.KNOWN_PUBLIC_DEFAULTS):
            values[key] = value
        elif current[key] != value and key in _CONNECTION_KEYS:
            if update_connection:
                values[key] = value
            else:
                result.differing += (key,)
    result.added = tuple(k for k in values if k not in current)
    result.updated = tuple(k for k in values if k in current)
    if values:
        result.backup = dotenv.set_values(path, values, comment=f"Added by difyops dev.init {time.strftime('%Y-%m-%d')}")
    return result


def app_env(src: Path) -> dict[str, str]:
    """The process environment for api commands: ours plus api/.env (Dify reads it too, but
    celery and flask subcommands then agree whatever loads it)."""
    env = dict(os.environ)
    path = src / "api" / ".env"
    if path.exists():
        env.update({k: v for k, v in envfile.read(path).items()})
    env.setdefault("FLASK_APP", "app.py")
    env["PYTHONUNBUFFERED"] = "1"
    return env
