"""Move PostgreSQL databases between servers of different major versions, verified table by table.

The one place that knows how a database goes from one PostgreSQL major version to another. Used by
`invoke adopt.run` (the official bundle's PostgreSQL 15 into the data cluster's 17) and meant for
this project's own major upgrades later (17 into 18: a new data volume and server beside the old
one, every database moved with :func:`move`, the old volume kept for the way back; see README).

Dump and restore, not pg_upgrade:

- pg_upgrade needs the old and the new server binaries in one file system, and the official image
  (postgres:15-alpine, musl) is not the new one (Debian, glibc): its text indexes were built with
  another C library's collation, which pg_upgrade would carry over as they are (wrong order, so
  wrong answers from unique and b-tree indexes on text). A restore rebuilds every index under the
  new server's collation.
- extensions move by name, at the version the new server has (pgvector 0.8 on 17, whatever the
  old one had), where pg_upgrade needs the same extension version on both sides.
- the old data folder is never opened by another server: the way back is to start the old one.
- the price is time (indexes rebuilt, about what a restore of a backup takes) and a second copy of
  the data while both servers exist; pg_upgrade --link would need neither, and would give up the
  way back.

Each move (images/backup/bin/pg-move.sh, in the backup image: pg_dump/pg_restore 17, which read
servers from 9.2 on) reads the source in one exported snapshot: the fingerprint of every table
(row count and a content hash, images/backup/bin/fingerprint.sql) and the dump see the same data;
the restore goes into a NEW database; then the target is fingerprinted the same way and
:func:`compare` says whether they are equal. Nothing is renamed into place here: the caller does
that once everything it moves has been verified.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from . import paths
from .errors import DifyopsError

BIN_DIR = paths.IMAGES_DIR / "backup" / "bin"


class MoveError(DifyopsError):
    """A move failed or its result differs from its source; the message says which and why."""


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server as a container on a Docker network sees it."""

    host: str
    port: str
    user: str
    network: str
    password_env: str  # the variable that carries its password (SRC_PGPASSWORD or DST_PGPASSWORD)


@dataclass
class Moved:
    """What one move read, wrote and measured."""

    source_database: str
    target_database: str
    source: dict[str, tuple[str, str]] = field(default_factory=dict)  # "table name" -> (rows, hash)
    target: dict[str, tuple[str, str]] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def tables(self) -> dict[str, int]:
        return {k.split(" ", 1)[1]: int(v[0]) for k, v in self.source.items() if k.startswith("table ")}

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    @property
    def source_bytes(self) -> int:
        return int(self.meta.get("source_bytes") or 0)

    def ms(self, key: str) -> int:
        value = self.meta.get(f"{key}_ms", "")
        return int(value) if value.isdigit() else 0


def _env_args(prefix: str, server: Server) -> list[str]:
    return ["-e", f"{prefix}_PGHOST={server.host}", "-e", f"{prefix}_PGPORT={server.port}",
            "-e", f"{prefix}_PGUSER={server.user}", "-e", f"{prefix}_PGPASSWORD"]


def move_argvs(image: str, name: str, source: Server, target: Server, database: str, new_database: str,
               labels: dict[str, str] | None = None) -> list[list[str]]:
    """The commands of one move: create the step container on the source's network, attach it to
    the target's, start it attached (its output is the fingerprints), remove it.

    Passwords go by name only (``-e SRC_PGPASSWORD``): their values come from the docker client's
    environment, never a command line.
    """
    create = ["docker", "create", "--name", name, "--network", source.network]
    for key, value in (labels or {}).items():
        create += ["--label", f"{key}={value}"]
    create += ["-v", f"{BIN_DIR}:/difyops:ro", *_env_args("SRC", source), *_env_args("DST", target),
               image, "bash", "/difyops/pg-move.sh", database, new_database]
    argvs = [create]
    if target.network != source.network:
        argvs.append(["docker", "network", "connect", target.network, name])
    argvs.append(["docker", "start", "--attach", name])
    return argvs


def remove_argv(name: str) -> list[str]:
    return ["docker", "rm", "--force", name]


def parse(text: str, source_database: str, target_database: str) -> Moved:
    """pg-move.sh's output: "source|target<TAB>kind<TAB>name<TAB>a<TAB>b" and "meta<TAB>key<TAB>value"."""
    moved = Moved(source_database, target_database)
    for line in (text or "").splitlines():
        parts = line.split("\t")
        if parts[0] in ("source", "target") and len(parts) == 5:
            side = moved.source if parts[0] == "source" else moved.target
            side[f"{parts[1]} {parts[2]}"] = (parts[3], parts[4])
        elif parts[0] == "meta" and len(parts) == 3:
            moved.meta[parts[1]] = parts[2]
    return moved


def compare(moved: Moved) -> list[str]:
    """One line per table or sequence that is missing, extra, or differs (empty: identical)."""
    lines = []
    for key in sorted(set(moved.source) | set(moved.target)):
        kind, name = key.split(" ", 1)
        where = f"{moved.source_database}: {kind} {name}"
        if key not in moved.target:
            lines.append(f"{where} is missing after the move")
        elif key not in moved.source:
            lines.append(f"{where} appeared in the move (not in the source)")
        elif moved.source[key] != moved.target[key]:
            (rows, digest), (rows2, digest2) = moved.source[key], moved.target[key]
            if kind == "table" and rows != rows2:
                lines.append(f"{where}: {rows2} rows after the move, {rows} in the source")
            elif kind == "table":
                lines.append(f"{where}: the same {rows} rows, different content (hash {digest2} vs {digest})")
            else:
                lines.append(f"{where}: last value {rows2} after the move, {rows} in the source")
    if not moved.source:
        lines.append(f"{moved.source_database}: the source fingerprint is empty (pg-move.sh printed none)")
    return lines


def _last_line(result) -> str:
    """The line that says what went wrong: PostgreSQL's last ERROR/FATAL (its CONTEXT and DETAIL
    lines follow it), else the last line of output."""
    for text in (result.stderr, result.stdout):
        lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.startswith(("source\t", "target\t", "meta\t"))]
        errors = [ln for ln in lines if "ERROR:" in ln or "FATAL:" in ln or "error:" in ln]
        if errors or lines:
            return (errors or lines)[-1][:300]
    return f"exit {result.exited}"


def move(c: Any, image: str, source: Server, target: Server, database: str, new_database: str,
         secrets: dict[str, str], name: str, labels: dict[str, str] | None = None) -> Moved:
    """Move one database into a new one on the target and compare both sides.

    Raises MoveError when the move fails (the new database may exist, half restored: the caller
    drops it) or when any table or sequence differs.
    """
    started = time.monotonic()
    env = {source.password_env: secrets[source.password_env], target.password_env: secrets[target.password_env]}
    result = None
    try:
        for argv in move_argvs(image, name, source, target, database, new_database, labels):
            result = c.run(shlex.join(argv), env=env, hide=True, warn=True, in_stream=False)
            if not result.ok:
                raise MoveError(f"moving database {database} failed: {_last_line(result)}")
    finally:
        c.run(shlex.join(remove_argv(name)), hide=True, warn=True)
    moved = parse(result.stdout if result is not None else "", database, new_database)
    moved.seconds = time.monotonic() - started
    problems = compare(moved)
    if problems:
        raise MoveError(f"database {database} differs after the move: " + "; ".join(problems[:5])
                        + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    return moved


def drop_sql(database: str) -> str:
    return f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'


def rename_sql(renames: list[tuple[str, str | None, str]]) -> str:
    """One transaction that puts moved databases in place: for each (name, aside, moved) the current
    database `name` (when aside is given) becomes `aside`, then `moved` becomes `name`."""
    statements = ["BEGIN;"]
    for name, aside, _moved in renames:
        if aside:
            statements.append(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              f"WHERE datname = '{name}' AND pid <> pg_backend_pid();")
    for name, aside, moved in renames:
        if aside:
            statements.append(f'ALTER DATABASE "{name}" RENAME TO "{aside}";')
        statements.append(f'ALTER DATABASE "{moved}" RENAME TO "{name}";')
    statements.append("COMMIT;")
    return " ".join(statements)
