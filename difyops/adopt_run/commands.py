"""The run's small commands: one-shot step containers, the official servers as sources, digests of what moved."""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass
from typing import Any

from ..report import failure_line
from .. import adopt as ad
from .. import backup as bk
from .. import pgmove
from ..errors import DifyopsError

LABEL = "io.difyops.adopt"


class RunError(DifyopsError):
    """A step failed; the message says which and what state things are in."""


def stamp_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")


def run(c: Any, argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    result = c.run(shlex.join(argv), env=env or {}, hide=True, warn=True, in_stream=False)
    if not result.ok:
        raise RunError(f"{what} failed: {failure_line(result)}")
    return result.stdout or ""


def tool_argv(image: str, network: str | None, mounts: list[tuple[str, str, bool]], env: dict[str, str],
              secrets: tuple[str, ...], *command: str) -> list[str]:
    """A one-shot container of the backup image with the step scripts at /difyops."""
    argv = ["docker", "run", "--rm", "--label", f"{LABEL}=step", "--network", network or "none",
            "-v", f"{bk.BIN_DIR}:/difyops:ro"]
    for source, target, read_only in mounts:
        argv += ["-v", f"{source}:{target}" + (":ro" if read_only else "")]
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    for key in secrets:
        argv += ["-e", key]
    return argv + [image, *command]


@dataclass(frozen=True)
class Source:
    """A PostgreSQL server or Redis of the official install, as a container on its network sees it."""

    service: str
    host: str
    port: str
    user: str
    password: str
    network: str


def pg_source(service: ad.Service) -> Source:
    env = service.environment
    return Source(service.name, service.name, "5432", env.get("POSTGRES_USER") or "postgres",
                  env.get("POSTGRES_PASSWORD", ""), service.networks[0])


def redis_source(install: ad.Install) -> Source:
    svc = install.services["redis"]
    password = svc.environment.get("REDISCLI_AUTH", "")
    if "--requirepass" in svc.command:
        index = svc.command.index("--requirepass")
        if index + 1 < len(svc.command):
            password = svc.command[index + 1]
    return Source("redis", "redis", "6379", "", password or install.env.get("REDIS_PASSWORD", ""), svc.networks[0])


USER_TABLES_SQL = ("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                   "AND n.nspname NOT LIKE 'pg_toast%'")


def list_databases_sql() -> str:
    return "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY datname"


def source_psql_argv(image: str, source: Source, sql: str, database: str = "postgres") -> list[str]:
    return tool_argv(image, source.network, [], {"PGHOST": source.host, "PGPORT": source.port, "PGUSER": source.user},
                     ("PGPASSWORD",), "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql)


def redis_version_of_image(c: Any, ref: str) -> tuple[int, ...] | None:
    result = c.run(shlex.join(["docker", "run", "--rm", "--network", "none", "--entrypoint", "redis-server", ref,
                               "--version"]), hide=True, warn=True)
    return _redis_version(result.stdout if result.ok else "")


def _redis_version(text: str) -> tuple[int, ...] | None:
    import re  # noqa: PLC0415

    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", text or "") or re.search(r"^(\d+)\.(\d+)\.(\d+)$", (text or "").strip())
    return tuple(int(x) for x in match.groups()) if match else None


def parse_digest(text: str) -> tuple[dict[str, tuple[int, int, str]], str, str]:
    """redis-digest.sh: ({db: (keys, short_lived, sha1)}, redis_version, cutoff)."""
    dbs, version, cutoff = {}, "", ""
    for line in (text or "").splitlines():
        parts = line.split("\t")
        if parts[0] == "redis_version" and len(parts) == 2:
            version = parts[1]
        elif parts[0] == "cutoff" and len(parts) == 2:
            cutoff = parts[1]
        elif len(parts) == 4 and parts[0].isdigit():
            dbs[parts[0]] = (int(parts[1]), int(parts[2]), parts[3])
    return dbs, version, cutoff


def compare_digests(source: dict[str, tuple[int, int, str]], target: dict[str, tuple[int, int, str]]) -> list[str]:
    lines = []
    for db in sorted(set(source) | set(target), key=int):
        a = source.get(db, (0, 0, ""))
        b = target.get(db, (0, 0, ""))
        if a[0] == 0 and b[0] == 0:
            continue
        if a[0] != b[0]:
            lines.append(f"Redis db {db}: {b[0]} keys after the move, {a[0]} in the source")
        elif a[2] != b[2]:
            lines.append(f"Redis db {db}: the same {a[0]} keys, different values")
    return lines


def parse_tree(text: str) -> dict[str, Any]:
    """stage-tree.sh copy: files (path -> (sha256, size)), links, and both digests."""
    out: dict[str, Any] = {"files": {}, "links": {}, "source_digest": "", "copy_digest": ""}
    for line in (text or "").splitlines():
        parts = line.split("\t")
        if parts[0] == "file" and len(parts) == 4:
            out["files"][parts[3]] = (parts[1], int(parts[2]) if parts[2].isdigit() else 0)
        elif parts[0] == "link" and len(parts) == 3:
            out["links"][parts[2]] = parts[1]
        elif parts[0] in ("source_digest", "copy_digest") and len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def plugin_packages(files: dict[str, tuple[str, int]]) -> int:
    """Installed plugins and cached packages in the plugin daemon's storage (plugin/, plugin_packages/)."""
    return sum(1 for path in files if path.startswith(("./plugin/", "./plugin_packages/")))


def mbps(n_bytes: int, seconds: float) -> float:
    return n_bytes / 1024 / 1024 / seconds if seconds > 0 else 0.0


def secret_key_problem(secret: str, moved: list[pgmove.Moved]) -> str | None:
    """A public example SECRET_KEY is replaced only when no stored row is encrypted with it."""
    if secret not in ad.PUBLIC_DEFAULTS:
        return None
    dependent = [(table, n) for m in moved for table, n in m.tables.items() if table in ad.SECRET_KEY_TABLES and n > 0]
    if not dependent:
        return None
    return ("SECRET_KEY is Dify's public example value and " + ", ".join(f"{n} rows of {t}" for t, n in dependent)
            + " are encrypted with it: this project refuses public secrets and replacing it would lose them; "
              "rotate it on the official install first (and enter those settings again)")
