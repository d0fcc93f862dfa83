"""The .env file: generate it from .env.example with fresh secrets, and check it.

Secrets are generated here and written only to the file (mode 0600); they are never printed.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import ha

PLACEHOLDER = "!!!GENERATED!!!"

# Public strings from Dify's own example file and docs: never acceptable as secrets.
KNOWN_PUBLIC_DEFAULTS = {
    "difyai123456",
    "dify-sandbox",
    "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U",
    "lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi",
    "QaHbTe77CtuXmsfyhR7+vRjI/+XbV1AaFy691iy+kGDv2Jvy0/eAh8Y1",
    "WVF5YThaHlkYwhGUSmCRgsX3tD5ngdN8pkih",
}

# Every secret the deployment needs, generated independently.
SECRET_KEYS = (
    "SECRET_KEY",
    "DB_PASSWORD",
    "REDIS_PASSWORD",
    "SANDBOX_API_KEY",
    "PLUGIN_DAEMON_KEY",
    "PLUGIN_DIFY_INNER_API_KEY",
)

# Secrets that two services must share: (follower, leader). The follower is written equal
# to the leader by env.init and compared by env.check. A condition, when given, says when
# the pair is coupled at all.
COUPLED = (
    ("CODE_EXECUTION_API_KEY", "SANDBOX_API_KEY", None),
    ("PGVECTOR_PASSWORD", "DB_PASSWORD", lambda env: env.get("PGVECTOR_HOST") == env.get("DB_HOST")),
)

REQUIRED = SECRET_KEYS + ("CODE_EXECUTION_API_KEY", "CELERY_BROKER_URL", "DB_HOST", "REDIS_HOST")

UPLOAD_LIMITS_MB = (
    "UPLOAD_FILE_SIZE_LIMIT",
    "UPLOAD_IMAGE_FILE_SIZE_LIMIT",
    "UPLOAD_VIDEO_FILE_SIZE_LIMIT",
    "UPLOAD_AUDIO_FILE_SIZE_LIMIT",
)

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


class EnvFileError(ValueError):
    """The file is not a valid .env; the message names the line."""


@dataclass
class Entry:
    lineno: int
    key: str | None  # None for comments and blank lines
    value: str
    raw: str


def _unquote(value: str, lineno: int) -> str:
    value = value.strip()
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        if end == -1:
            raise EnvFileError(f"line {lineno}: unterminated {quote} quote")
        return value[1:end]
    # An unquoted value ends at an inline comment.
    return re.split(r"\s+#", value, maxsplit=1)[0].strip()


def parse(text: str) -> list[Entry]:
    """Parse .env text strictly: every line is blank, a comment, or KEY=VALUE."""
    entries = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            entries.append(Entry(lineno, None, "", raw))
            continue
        match = _LINE.match(raw)
        if not match:
            raise EnvFileError(f"line {lineno}: expected KEY=VALUE, found {stripped[:40]!r}")
        entries.append(Entry(lineno, match.group(1), _unquote(match.group(2), lineno), raw))
    return entries


def as_dict(entries: list[Entry]) -> dict[str, str]:
    return {e.key: e.value for e in entries if e.key}


def read(path: Path) -> dict[str, str]:
    return as_dict(parse(path.read_text()))


def new_secret() -> str:
    """32 random bytes, hex: safe inside URLs, shells and Compose interpolation."""
    return secrets.token_hex(32)


def broker_password(url: str) -> str | None:
    """The password inside a redis:// or rediss:// CELERY_BROKER_URL, if that is its form."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("redis", "rediss"):
        return None
    return parts.password or ""


def with_broker_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "redis"
    port = f":{parts.port}" if parts.port else ""
    user = parts.username or ""
    return f"{parts.scheme}://{user}:{password}@{host}{port}{parts.path}"


def generated_keys(entries: list[Entry]) -> list[str]:
    """Keys the example marks with the placeholder and that get a fresh secret of their own
    (followers of coupled pairs and the broker URL are derived instead)."""
    derived = {follower for follower, _, _ in COUPLED} | {"CELERY_BROKER_URL"}
    return [e.key for e in entries if e.key and PLACEHOLDER in e.value and e.key not in derived]


def generate(example_text: str, overrides: dict[str, str] | None = None) -> str:
    """Render .env text from the example: placeholders replaced, coupled secrets equal.

    ``overrides`` set values of existing keys (or append new ones) before coupling, so a
    caller can choose, say, the images or the port while the secrets stay generated.
    """
    entries = parse(example_text)
    overrides = dict(overrides or {})
    values = as_dict(entries)
    for key in generated_keys(entries):
        values[key] = new_secret()
    values.update(overrides)
    for follower, leader, condition in COUPLED:
        if follower not in overrides and (condition is None or condition(values)):
            values[follower] = values[leader]
    broker = values.get("CELERY_BROKER_URL", "")
    if "CELERY_BROKER_URL" not in overrides and broker_password(broker.replace(PLACEHOLDER, "x")) is not None:
        values["CELERY_BROKER_URL"] = with_broker_password(broker.replace(PLACEHOLDER, "x"), values["REDIS_PASSWORD"])
    # DIFYOPS_DATA_HA=true: Dify's sentinel settings follow (docs/ha.md); explicit --set values win.
    ha_values = {k: v for k, v in ha.dify_settings(values).items() if k not in overrides}
    values.update(ha_values)

    lines = []
    seen = set()
    for entry in entries:
        if entry.key is None:
            lines.append(entry.raw)
        else:
            seen.add(entry.key)
            lines.append(f"{entry.key}={values[entry.key]}")
    extra = [k for k in overrides if k not in seen]
    if extra:
        lines.append("")
        lines.append("# Set by env.init --set")
        lines.extend(f"{k}={overrides[k]}" for k in extra)
    derived = [k for k in ha_values if k not in seen]
    if derived:
        lines.append("")
        lines.append(f"# Set by env.init for {ha.HA_SETTING}=true")
        lines.extend(f"{k}={values[k]}" for k in derived)
    return "\n".join(lines) + "\n"


def parse_size(text: str) -> int | None:
    """nginx size syntax (100M, 1g, 512k, 1048576) in bytes; 0 means unlimited; None if invalid."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", text or "")
    if not match:
        return None
    number, unit = int(match.group(1)), match.group(2).lower()
    return number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def largest_upload_bytes(env: dict[str, str]) -> tuple[int, str]:
    """The largest upload Dify accepts under this env, in bytes, and the setting that allows it."""
    best = (0, "")
    for key in UPLOAD_LIMITS_MB:
        raw = env.get(key, "")
        if raw.strip().isdigit():
            best = max(best, (int(raw) * 1024**2, key))
    raw = env.get("PLUGIN_MAX_PACKAGE_SIZE", "")
    if raw.strip().isdigit():
        best = max(best, (int(raw), "PLUGIN_MAX_PACKAGE_SIZE"))
    return best


def check(env: dict[str, str]) -> list[str]:
    """Every problem with a parsed env, one message each; empty when it is fine."""
    problems = ha.problems(env, PLACEHOLDER)
    for key in REQUIRED:
        value = env.get(key, "")
        if not value:
            problems.append(f"{key} is missing or empty: run `invoke env.init` or set it")
        elif PLACEHOLDER in value:
            problems.append(f"{key} is still the placeholder {PLACEHOLDER}: run `invoke env.init`")
    for key, value in sorted(env.items()):
        if value in KNOWN_PUBLIC_DEFAULTS:
            problems.append(f"{key} is a public default from Dify's example file: generate a new one")
    for follower, leader, condition in COUPLED:
        if condition is not None and not condition(env):
            continue
        if env.get(follower) and env.get(leader) and env[follower] != env[leader]:
            problems.append(f"{follower} differs from {leader}: the two services could not talk")
    broker = env.get("CELERY_BROKER_URL", "")
    password = broker_password(broker)
    if password is not None and PLACEHOLDER not in broker and env.get("REDIS_PASSWORD"):
        host = urlsplit(broker).hostname
        if host == env.get("REDIS_HOST", "redis") and password != env["REDIS_PASSWORD"]:
            problems.append("CELERY_BROKER_URL does not carry REDIS_PASSWORD: workers could not reach the broker")
    body = env.get("NGINX_CLIENT_MAX_BODY_SIZE", "")
    if body:
        limit = parse_size(body)
        largest, source = largest_upload_bytes(env)
        if limit is None:
            problems.append(f"NGINX_CLIENT_MAX_BODY_SIZE={body!r} is not an nginx size such as 100M")
        elif limit != 0 and limit < largest:
            problems.append(
                f"NGINX_CLIENT_MAX_BODY_SIZE={body} is below {source} ({largest // 1024**2} MB): uploads "
                "would fail with 413; raise it or leave it empty to derive it"
            )
    for key in UPLOAD_LIMITS_MB + ("PLUGIN_MAX_PACKAGE_SIZE",):
        raw = env.get(key, "")
        if raw and not raw.strip().isdigit():
            problems.append(f"{key}={raw!r} is not a whole number")
    return problems


def backup(path: Path) -> Path:
    """Copy a file beside itself with a timestamp, keeping its mode; return the copy."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.bak.{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.bak.{stamp}.{n}")
        n += 1
    shutil.copy2(path, target)
    os.chmod(target, 0o600)
    return target


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically (never a moment world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
