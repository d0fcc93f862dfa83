"""Backups of one deployment: what a set holds, the commands that make, check and restore it, and
the retention policy.

A set is one folder under the backups folder, ``<stack>-<YYYYmmddTHHMMSSZ>``, holding:

- ``postgres-<db>.dump.zst.age``: pg_dump (custom format) of Dify's and the plugin daemon's
  databases, read online from DIFYOPS_BACKUP_DB_HOST (a replica when there is one);
- ``redis.rdb.zst.age``: a Redis snapshot taken over the replication protocol;
- ``storage.tar.zst.age``, ``plugin-storage.tar.zst.age``: the upload and plugin volumes;
- ``config.tar.zst.age``: the .env file and the certificates folder, if present;
- ``manifest.json``: versions, stack, sizes, per-table row counts, file and key counts;
- ``SHA256SUMS``: sha256 of every file above (``sha256sum -c SHA256SUMS`` works).

Every part is compressed with zstd and encrypted with age to DIFYOPS_BACKUP_AGE_RECIPIENT; only the
identity file (``backup.keygen``, mode 0600) opens them. A set is written as ``<id>.partial`` and
renamed when complete, so a set with its final name is always whole.

Every step runs in a one-shot container of the backup image (images/backup: pg_dump 17, redis-cli,
age, zstd, restic) on the stack's backend network; the step scripts are mounted read-only from
images/backup/bin. Secrets reach the containers through the environment (``docker run -e NAME``
with the value in the docker client's environment), never on a command line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import clusters as cl
from . import envfile, paths
from .config import Settings

FORMAT = "difyops-backup/1"
BIN_DIR = paths.IMAGES_DIR / "backup" / "bin"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
PARTIAL_SUFFIX = ".partial"
ASIDE_PREFIX = ".difyops-pre-restore-"

# Settings read from .env (documented in .env.example, section Backups).
DEFAULTS = {
    "DIFYOPS_BACKUP_DIR": "backups",
    "DIFYOPS_BACKUP_IMAGE": "difyops-local/backup:1",
    "DIFYOPS_BACKUP_AGE_IDENTITY": "backups/age-identity.key",
    "DIFYOPS_BACKUP_CERTS_DIR": "nginx/ssl",
    "DIFYOPS_BACKUP_KEEP_LAST": "7",
    "DIFYOPS_BACKUP_KEEP_DAILY": "7",
    "DIFYOPS_BACKUP_KEEP_WEEKLY": "4",
    "DIFYOPS_BACKUP_SCHEDULE": "17 3 * * *",
    "DIFYOPS_BACKUP_ZSTD_LEVEL": "3",
    "NODE_EXPORTER_TEXTFILE_DIR": "/var/lib/difyops/textfile",
}

# Volumes archived, in order: (part name, volume suffix as in clusters.VOLUMES).
# letsencrypt: certbot's account and certificates (the gateway cluster's volume, when it has one).
FILE_VOLUMES = (("storage", "storage"), ("plugin-storage", "plugin-storage"), ("letsencrypt", "letsencrypt"))

_SET_NAME = re.compile(r"^(?P<stack>[a-z0-9][a-z0-9_.-]*)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?$")
_AGE_RECIPIENT = re.compile(r"^age1[0-9a-z]{58}$")


class BackupError(Exception):
    """Something about a backup the user can fix; the message says what."""


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class BackupConfig:
    stack: str
    env_file: Path
    folder: Path
    image: str
    recipient: str
    identity: Path
    certs_dir: Path
    db_host: str  # where backups read from (a replica when there is one)
    db_port: str
    db_write_host: str  # where verify and restore write (DB_HOST: the primary or read-write endpoint)
    db_write_port: str
    db_user: str
    databases: tuple[str, ...]
    redis_host: str
    redis_port: str
    restic_repository: str
    keep_last: int
    keep_daily: int
    keep_weekly: int
    schedule: str
    zstd_level: str
    textfile_dir: Path

    @property
    def network(self) -> str:
        return f"{self.stack}-backend"


def _path(value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (paths.ROOT / path).resolve()


def _int_setting(settings: Settings, key: str) -> int:
    raw = settings.get(key, DEFAULTS[key])
    if not raw.strip().isdigit():
        raise BackupError(f"{key}={raw!r} is not a whole number: fix it in {settings.env_file.name}")
    return int(raw)


def config_from(settings: Settings) -> BackupConfig:
    """The backup settings of a deployment, from its .env, defaults filled in."""
    d = DEFAULTS
    return BackupConfig(
        stack=settings.stack,
        env_file=settings.env_file,
        folder=_path(settings.get("DIFYOPS_BACKUP_DIR", d["DIFYOPS_BACKUP_DIR"])),
        image=settings.get("DIFYOPS_BACKUP_IMAGE", d["DIFYOPS_BACKUP_IMAGE"]),
        recipient=settings.get("DIFYOPS_BACKUP_AGE_RECIPIENT"),
        identity=_path(settings.get("DIFYOPS_BACKUP_AGE_IDENTITY", d["DIFYOPS_BACKUP_AGE_IDENTITY"])),
        certs_dir=_path(settings.get("DIFYOPS_BACKUP_CERTS_DIR", d["DIFYOPS_BACKUP_CERTS_DIR"])),
        # A read replica when there is one (the HA overlay's read-only endpoint); else the primary.
        db_host=settings.get("DIFYOPS_BACKUP_DB_HOST") or settings.get("DB_HOST", "db_postgres"),
        db_port=settings.get("DIFYOPS_BACKUP_DB_PORT") or settings.get("DB_PORT", "5432"),
        db_write_host=settings.get("DB_HOST", "db_postgres"),
        db_write_port=settings.get("DB_PORT", "5432"),
        db_user=settings.get("DB_USERNAME", "postgres"),
        databases=tuple(dict.fromkeys((settings.get("DB_DATABASE", "dify"),
                                       settings.get("DB_PLUGIN_DATABASE", "dify_plugin")))),
        redis_host=settings.get("REDIS_HOST", "redis"),
        redis_port=settings.get("REDIS_PORT", "6379"),
        restic_repository=settings.get("DIFYOPS_BACKUP_RESTIC_REPOSITORY"),
        keep_last=_int_setting(settings, "DIFYOPS_BACKUP_KEEP_LAST"),
        keep_daily=_int_setting(settings, "DIFYOPS_BACKUP_KEEP_DAILY"),
        keep_weekly=_int_setting(settings, "DIFYOPS_BACKUP_KEEP_WEEKLY"),
        schedule=settings.get("DIFYOPS_BACKUP_SCHEDULE", d["DIFYOPS_BACKUP_SCHEDULE"]),
        zstd_level=settings.get("DIFYOPS_BACKUP_ZSTD_LEVEL", d["DIFYOPS_BACKUP_ZSTD_LEVEL"]),
        textfile_dir=_path(settings.get("NODE_EXPORTER_TEXTFILE_DIR", d["NODE_EXPORTER_TEXTFILE_DIR"])),
    )


def secret_env(settings: Settings) -> dict[str, str]:
    """Secrets the step containers need, passed by name (`-e NAME`) through the process environment."""
    env = {"PGPASSWORD": settings.get("DB_PASSWORD"), "REDISCLI_AUTH": settings.get("REDIS_PASSWORD")}
    if settings.get("DIFYOPS_BACKUP_RESTIC_PASSWORD"):
        env["RESTIC_PASSWORD"] = settings.get("DIFYOPS_BACKUP_RESTIC_PASSWORD")
    return env


def create_problems(cfg: BackupConfig) -> list[str]:
    """What stops a backup before it starts (empty = it can run)."""
    problems = []
    if not cfg.recipient:
        problems.append("DIFYOPS_BACKUP_AGE_RECIPIENT is empty: run `invoke backup.keygen` (it writes the key "
                        "and sets the recipient) or set an age public key (age1...)")
    elif not _AGE_RECIPIENT.match(cfg.recipient):
        problems.append(f"DIFYOPS_BACKUP_AGE_RECIPIENT={cfg.recipient[:12]}... is not an age public key "
                        "(age1 followed by 58 characters): run `invoke backup.keygen`")
    if cfg.folder.exists() and not cfg.folder.is_dir():
        problems.append(f"the backups folder {cfg.folder} is a file: set DIFYOPS_BACKUP_DIR to a folder")
    return problems


def identity_problems(cfg: BackupConfig) -> list[str]:
    if not cfg.identity.is_file():
        return [f"the age identity {cfg.identity} does not exist: restore it from where you keep it "
                "(DIFYOPS_BACKUP_AGE_IDENTITY), or run `invoke backup.keygen` for new backups"]
    return []


# ----------------------------------------------------------------------------- commands


def tool_argv(cfg: BackupConfig, script: str, *args: str, mounts: Iterable[tuple[str, str, bool]] = (),
              env: dict[str, str] | None = None, secrets: Iterable[str] = (), network: bool = True) -> list[str]:
    """`docker run` of one step script in the backup image.

    mounts: (host path or volume name, container path, read-only); env: plain values;
    secrets: variable names only, their values come from the docker client's environment.
    """
    argv = ["docker", "run", "--rm", "--label", f"{cl.STACK_LABEL}={cfg.stack}"]
    if network:
        argv += ["--network", cfg.network]
    argv += ["-v", f"{BIN_DIR}:/difyops:ro"]
    for source, target, read_only in mounts:
        argv += ["-v", f"{source}:{target}" + (":ro" if read_only else "")]
    for key, value in (env or {}).items():
        argv += ["-e", f"{key}={value}"]
    for key in secrets:
        argv += ["-e", key]
    return argv + [cfg.image, "bash", f"/difyops/{script}", *args]


def pg_env(cfg: BackupConfig, write: bool = False) -> dict[str, str]:
    """libpq settings: the backup source (read), or the primary (write: verify and restore)."""
    if write:
        return {"PGHOST": cfg.db_write_host, "PGPORT": cfg.db_write_port, "PGUSER": cfg.db_user}
    return {"PGHOST": cfg.db_host, "PGPORT": cfg.db_port, "PGUSER": cfg.db_user}


def psql_argv(cfg: BackupConfig, sql: str, database: str = "postgres", write: bool = True) -> list[str]:
    """psql in the backup image (no step script): tuples only, unaligned, stop at the first error."""
    argv = ["docker", "run", "--rm", "--label", f"{cl.STACK_LABEL}={cfg.stack}", "--network", cfg.network]
    for key, value in pg_env(cfg, write).items():
        argv += ["-e", f"{key}={value}"]
    return argv + ["-e", "PGPASSWORD", cfg.image, "psql", "-X", "-q", "-A", "-t", "-F", "\t",
                   "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql]


def part_file(part: str, kind: str) -> str:
    return {"postgres": f"{part}.dump.zst.age", "redis": f"{part}.rdb.zst.age"}.get(kind, f"{part}.tar.zst.age")


def pg_dump_argv(cfg: BackupConfig, set_dir: Path, database: str) -> list[str]:
    name = part_file(f"postgres-{database}", "postgres")
    return tool_argv(cfg, "pg-dump.sh", database, f"/set/{name}", mounts=[(str(set_dir), "/set", False)],
                     env={**pg_env(cfg), "AGE_RECIPIENT": cfg.recipient, "ZSTD_LEVEL": cfg.zstd_level},
                     secrets=["PGPASSWORD"])


def redis_dump_argv(cfg: BackupConfig, set_dir: Path) -> list[str]:
    return tool_argv(cfg, "redis-dump.sh", f"/set/{part_file('redis', 'redis')}",
                     mounts=[(str(set_dir), "/set", False)],
                     env={"REDIS_HOST": cfg.redis_host, "REDIS_PORT": cfg.redis_port,
                          "AGE_RECIPIENT": cfg.recipient, "ZSTD_LEVEL": cfg.zstd_level},
                     secrets=["REDISCLI_AUTH"])


def tar_argv(cfg: BackupConfig, set_dir: Path, part: str, sources: list[tuple[str, str]]) -> list[str]:
    """Archive read-only mounts (host path or volume, path under /src) into one part."""
    mounts = [(str(set_dir), "/set", False)] + [(src, f"/src/{sub}" if sub else "/src", True) for src, sub in sources]
    return tool_argv(cfg, "tar-dir.sh", "/src", f"/set/{part_file(part, 'tar')}", mounts=mounts,
                     env={"AGE_RECIPIENT": cfg.recipient, "ZSTD_LEVEL": cfg.zstd_level}, network=False)


def identity_mount(cfg: BackupConfig) -> tuple[str, str, bool]:
    return (str(cfg.identity), "/identity/key", True)


def check_part_argv(cfg: BackupConfig, set_dir: Path, name: str, kind: str) -> list[str]:
    extra = ["tar"] if kind == "tar" else []
    return tool_argv(cfg, "check-part.sh", f"/set/{name}", *extra,
                     mounts=[(str(set_dir), "/set", True), identity_mount(cfg)], network=False)


def pg_restore_argv(cfg: BackupConfig, set_dir: Path, name: str, new_database: str) -> list[str]:
    return tool_argv(cfg, "pg-restore.sh", f"/set/{name}", new_database,
                     mounts=[(str(set_dir), "/set", True), identity_mount(cfg)],
                     env=pg_env(cfg, write=True), secrets=["PGPASSWORD"])


def untar_argv(cfg: BackupConfig, set_dir: Path, name: str, volume: str, stamp: str) -> list[str]:
    return tool_argv(cfg, "untar-dir.sh", f"/set/{name}", "/target", stamp,
                     mounts=[(str(set_dir), "/set", True), identity_mount(cfg), (volume, "/target", False)],
                     network=False)


def redis_restore_argv(cfg: BackupConfig, set_dir: Path, name: str, volume: str, stamp: str) -> list[str]:
    return tool_argv(cfg, "redis-restore.sh", f"/set/{name}", "/target", stamp,
                     mounts=[(str(set_dir), "/set", True), identity_mount(cfg), (volume, "/target", False)],
                     network=False)


def restic_argv(cfg: BackupConfig, set_name: str) -> list[str]:
    """restic backup of one set. A local repository folder is mounted; a remote URL is passed as is."""
    repo = cfg.restic_repository
    mounts = [(str(cfg.folder), "/backups", True)]
    if "://" not in repo and not re.match(r"^[a-z0-9]+:", repo):
        mounts.append((str(_path(repo)), "/restic-repo", False))
        repo = "/restic-repo"
    return tool_argv(cfg, "restic-copy.sh", f"/backups/{set_name}", cfg.stack, mounts=mounts,
                     env={"RESTIC_REPOSITORY": repo}, secrets=["RESTIC_PASSWORD"], network=False)


def keygen_argv(cfg: BackupConfig) -> list[str]:
    return ["docker", "run", "--rm", "--network", "none", cfg.image, "age-keygen"]


# ----------------------------------------------------------------------------- pure helpers


def parse_tsv(text: str) -> dict[str, str]:
    out = {}
    for line in (text or "").splitlines():
        if "\t" in line:
            key, value = line.split("\t", 1)
            out[key.strip()] = value.strip()
    return out


def parse_counts(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in parse_tsv(text).items() if v.lstrip("-").isdigit()}


def set_name(stack: str, when: dt.datetime, existing: Iterable[str] = ()) -> str:
    base = f"{stack}-{when.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    taken = set(existing)
    name, n = base, 1
    while name in taken or name + PARTIAL_SUFFIX in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def set_time(name: str) -> dt.datetime | None:
    match = _SET_NAME.match(name)
    if not match:
        return None
    return dt.datetime.strptime(match.group("stamp"), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sums_text(entries: dict[str, str]) -> str:
    """sha256sum's format: '<hex>  <name>' per line."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items()))


def parse_sums(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        match = re.match(r"^([0-9a-f]{64}) [ *](.+)$", line.strip())
        if match:
            out[match.group(2)] = match.group(1)
    return out


@dataclass
class BackupSet:
    name: str
    path: Path
    complete: bool

    @property
    def created(self) -> dt.datetime | None:
        return set_time(self.name.removesuffix(PARTIAL_SUFFIX))

    def manifest(self) -> dict:
        return json.loads((self.path / MANIFEST).read_text())


def list_sets(folder: Path, stack: str | None = None) -> list[BackupSet]:
    """Sets in the backups folder, oldest first (partial ones too, marked)."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        if not entry.is_dir():
            continue
        complete = not entry.name.endswith(PARTIAL_SUFFIX)
        match = _SET_NAME.match(entry.name.removesuffix(PARTIAL_SUFFIX))
        if not match or (stack and match.group("stack") != stack):
            continue
        found.append(BackupSet(entry.name, entry, complete))
    return sorted(found, key=lambda s: (s.created or dt.datetime.min.replace(tzinfo=dt.timezone.utc), s.name))


def find_set(folder: Path, name: str | None, stack: str) -> BackupSet:
    """A complete set by name or path, or the newest of the stack when name is empty."""
    if name:
        candidate = Path(name)
        path = candidate if candidate.is_absolute() or "/" in name else folder / name
        path = path.resolve()
        if not path.is_dir():
            raise BackupError(f"no backup set {name} in {folder}: `invoke backup.list` shows them")
        if path.name.endswith(PARTIAL_SUFFIX):
            raise BackupError(f"{path.name} is an unfinished set (its backup did not complete): choose another")
        return BackupSet(path.name, path, True)
    sets = [s for s in list_sets(folder, stack) if s.complete]
    if not sets:
        raise BackupError(f"no backup set of stack {stack} in {folder}: run `invoke backup.create` first")
    return sets[-1]


def check_set(path: Path, expected_stack: str | None = None) -> tuple[dict | None, list[str]]:
    """Checksums, completeness and identity of a set, without decrypting: (manifest, problems).

    Refuses: a missing or unreadable manifest or SHA256SUMS, a file missing, truncated or changed
    (size or sha256 differ), a file nobody listed, a manifest of another format or another stack.
    """
    problems: list[str] = []
    sums_path, manifest_path = path / SUMS, path / MANIFEST
    if not sums_path.is_file():
        return None, [f"{path.name}: {SUMS} is missing: the set is incomplete or damaged"]
    sums = parse_sums(sums_path.read_text(errors="replace"))
    if MANIFEST not in sums:
        problems.append(f"{path.name}: {SUMS} does not list {MANIFEST}")
    if not manifest_path.is_file():
        return None, problems + [f"{path.name}: {MANIFEST} is missing"]
    if MANIFEST in sums and sha256_file(manifest_path) != sums[MANIFEST]:
        problems.append(f"{path.name}: {MANIFEST} does not match its checksum (changed after the backup)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None, problems + [f"{path.name}: {MANIFEST} is not valid JSON"]
    if manifest.get("format") != FORMAT:
        problems.append(f"{path.name}: format {manifest.get('format')!r} is not {FORMAT}")
    if expected_stack and manifest.get("stack") != expected_stack:
        problems.append(f"{path.name} is a backup of stack {manifest.get('stack')!r}, not {expected_stack!r}")
    parts = manifest.get("parts") or {}
    if not parts:
        problems.append(f"{path.name}: the manifest lists no parts")
    for part, info in parts.items():
        name = info.get("file", "")
        file = path / name
        if not name or not file.is_file():
            problems.append(f"{part}: {name or 'its file'} is missing")
            continue
        size = file.stat().st_size
        if size != info.get("bytes"):
            problems.append(f"{part}: {name} is {size} bytes, the manifest says {info.get('bytes')} (truncated?)")
            continue
        digest = sha256_file(file)
        if digest != info.get("sha256") or digest != sums.get(name):
            problems.append(f"{part}: {name} does not match its sha256 (changed or corrupted)")
    listed = {info.get("file") for info in parts.values()} | {MANIFEST}
    for name in sums:
        if name not in listed:
            problems.append(f"{path.name}: {SUMS} lists {name}, which the manifest does not")
    return manifest, problems


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    """One line per table whose count differs, is missing or is unexpected."""
    lines = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            lines.append(f"{table}: missing after restore (expected {expected[table]} rows)")
        elif table not in expected:
            lines.append(f"{table}: not in the manifest ({actual[table]} rows)")
        elif expected[table] != actual[table]:
            lines.append(f"{table}: {actual[table]} rows, the manifest says {expected[table]}")
    return lines


def retention(sets: list[BackupSet], keep_last: int, keep_daily: int, keep_weekly: int) -> set[str]:
    """Names of the sets a policy keeps: the newest keep_last, the newest of each of the last
    keep_daily days that have a set, and the newest of each of the last keep_weekly ISO weeks."""
    dated = sorted((s for s in sets if s.complete and s.created), key=lambda s: s.created, reverse=True)
    keep = {s.name for s in dated[:keep_last]}
    for limit, key in ((keep_daily, lambda t: t.date()), (keep_weekly, lambda t: tuple(t.isocalendar())[:2])):
        seen: list = []
        for s in dated:
            bucket = key(s.created)
            if bucket in seen:
                continue
            if len(seen) >= limit:
                break
            seen.append(bucket)
            keep.add(s.name)
    return keep


def textfile_metric(stack: str, when: float) -> str:
    return ("# HELP difyops_backup_last_success_timestamp_seconds Unix time of the last backup that completed.\n"
            "# TYPE difyops_backup_last_success_timestamp_seconds gauge\n"
            f'difyops_backup_last_success_timestamp_seconds{{stack="{stack}",kind="full"}} {when:.0f}\n')


def write_textfile(cfg: BackupConfig, when: float) -> Path:
    """The metric node_exporter's textfile collector reads, written atomically (a rename)."""
    cfg.textfile_dir.mkdir(parents=True, exist_ok=True)
    target = cfg.textfile_dir / f"difyops_backup_{cfg.stack}.prom"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(textfile_metric(cfg.stack, when))
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target


def cron_entry(cfg: BackupConfig, repo: Path = paths.ROOT, log: str = "/var/log/difyops-backup.log") -> str:
    """An /etc/cron.d file: create (and copy off the host when configured), then prune, daily."""
    fields = cfg.schedule.split()
    if len(fields) != 5:
        raise BackupError(f"DIFYOPS_BACKUP_SCHEDULE={cfg.schedule!r} is not a 5-field cron time such as '17 3 * * *'")
    command = (f"cd {shlex.quote(str(repo))} && export INVOKE_DIFYOPS_ENV_FILE={shlex.quote(str(cfg.env_file))} "
               f"&& (scripts/backup.sh create && scripts/backup.sh prune) >> {log} 2>&1")
    return ("# difyops: scheduled backup of stack " + cfg.stack + " (written by `invoke backup.schedule`)\n"
            "SHELL=/bin/bash\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"{cfg.schedule} root {command}\n")


def set_env_values(path: Path, values: dict[str, str]) -> Path | None:
    """Set keys in an existing .env (replacing their lines, appending the others), after a
    timestamped copy of the file; returns the copy (None when nothing changed)."""
    lines = path.read_text().splitlines()
    pending = dict(values)
    out = []
    for line in lines:
        match = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if match and match.group(1) in pending:
            out.append(f"{match.group(1)}={pending.pop(match.group(1))}")
        else:
            out.append(line)
    if pending:
        out += ["", "# Set by backup.keygen"] + [f"{k}={v}" for k, v in pending.items()]
    text = "\n".join(out) + "\n"
    if text == path.read_text():
        return None
    copy = envfile.backup(path)
    envfile.write_private(path, text)
    return copy


def restore_names(databases: Iterable[str], stamp: str) -> list[tuple[str, str, str]]:
    """(database, restore into, move the current one to) for each database."""
    return [(db, f"{db}_restore_{stamp}", f"{db}_old_{stamp}") for db in databases]


def swap_sql(names: list[tuple[str, str, str]]) -> str:
    """One transaction: every current database renamed aside, every restored one into its place."""
    statements = ["BEGIN;"]
    for db, _new, _old in names:
        statements.append(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          f"WHERE datname = '{db}' AND pid <> pg_backend_pid();")
    for db, new, old in names:
        statements.append(f'ALTER DATABASE "{db}" RENAME TO "{old}";')
        statements.append(f'ALTER DATABASE "{new}" RENAME TO "{db}";')
    statements.append("COMMIT;")
    return " ".join(statements)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def remove_set(path: Path) -> None:
    shutil.rmtree(path)


@dataclass
class Part:
    """One file of a set being written, and what its step reported."""

    name: str
    kind: str  # postgres, redis, tar
    file: str
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- running the steps
# Each function below runs commands through an invoke context c (MockContext in unit tests) and
# reports through `say` (a print-like callable). Failures raise BackupError with one line.


def _last_line(result) -> str:
    for text in (result.stderr, result.stdout):
        lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:300]
    return f"exit {result.exited}"


def run_step(c: Any, argv: list[str], what: str, secrets: dict[str, str] | None = None) -> str:
    """Run one step; its stdout, or BackupError naming the step and its last line of output."""
    result = c.run(shlex.join(argv), env=secrets or {}, hide=True, warn=True, in_stream=False)
    if not result.ok:
        raise BackupError(f"{what} failed: {_last_line(result)}")
    return result.stdout


def image_present(c: Any, cfg: BackupConfig) -> bool:
    return c.run(shlex.join(["docker", "image", "inspect", "--format", "{{.Id}}", cfg.image]),
                 hide=True, warn=True).ok


def volume_exists(c: Any, volume: str) -> bool:
    return c.run(shlex.join(["docker", "volume", "inspect", volume]), hide=True, warn=True).ok


def build_default_image(c: Any, cfg: BackupConfig) -> bool:
    """Build the default backup image from images/backup when it is missing (it has no official
    image to pull); True when it is there afterwards. Needs the Debian base image."""
    from . import images  # noqa: PLC0415

    if cfg.image != DEFAULTS["DIFYOPS_BACKUP_IMAGE"]:
        return False
    plan = images.plan_build(images.find("backup"))
    return c.run(shlex.join(plan.argv), hide=True, warn=True).ok and image_present(c, cfg)


def preflight(c: Any, cfg: BackupConfig) -> list[str]:
    if not c.run("docker info --format '{{.ServerVersion}}'", hide=True, warn=True).ok:
        return ["the Docker daemon is not reachable: start it (systemctl start docker) and retry"]
    if not image_present(c, cfg) and not build_default_image(c, cfg):
        return [f"the backup image {cfg.image} is missing: run `invoke images.build-local --only backup` "
                "(or set DIFYOPS_BACKUP_IMAGE)"]
    if not c.run(shlex.join(["docker", "network", "inspect", cfg.network]), hide=True, warn=True).ok:
        return [f"network {cfg.network} does not exist: is stack {cfg.stack} deployed? (invoke prod.deploy)"]
    return []


def create(c: Any, settings: Settings, say=print, now: dt.datetime | None = None) -> Path:
    """Make one complete set; returns its folder. Online: nothing is stopped."""
    import time

    cfg = config_from(settings)
    problems = create_problems(cfg) or preflight(c, cfg)
    if problems:
        raise BackupError("; ".join(problems))
    secrets = secret_env(settings)
    started = time.monotonic()
    now = now or dt.datetime.now(dt.timezone.utc)
    cfg.folder.mkdir(parents=True, exist_ok=True)
    name = set_name(cfg.stack, now, (p.name for p in cfg.folder.iterdir()))
    work = cfg.folder / (name + PARTIAL_SUFFIX)
    work.mkdir(mode=0o700)
    try:
        parts: list[Part] = []
        listing = run_step(c, psql_argv(cfg, "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
                                        write=False), f"listing the databases on {cfg.db_host}", secrets)
        present = set(listing.split())
        server = run_step(c, psql_argv(cfg, "SHOW server_version", write=False), "asking PostgreSQL its version",
                          secrets).strip()
        for db in cfg.databases:
            if db not in present:
                say(f"  postgres {db}: no such database on {cfg.db_host}, skipped")
                continue
            part = Part(f"postgres-{db}", "postgres", part_file(f"postgres-{db}", "postgres"), {"database": db})
            step = time.monotonic()
            out = run_step(c, pg_dump_argv(cfg, work, db), f"pg_dump of {db}", secrets)
            part.info["seconds"] = round(time.monotonic() - step, 2)
            part.info["tables"] = parse_counts(out)
            parts.append(part)
            say(f"  postgres {db}: {len(part.info['tables'])} tables, "
                f"{sum(part.info['tables'].values())} rows (from {cfg.db_host}) in {part.info['seconds']:.1f}s")
        part = Part("redis", "redis", part_file("redis", "redis"))
        info = parse_tsv(run_step(c, redis_dump_argv(cfg, work), "the Redis snapshot", secrets))
        part.info.update(keys=int(info.get("keys", "0") or 0), redis_version=info.get("redis_version", ""))
        parts.append(part)
        say(f"  redis: {part.info['keys']} keys")
        for part_name, suffix in FILE_VOLUMES:
            volume = cl.volume_name(settings, suffix)
            if not volume_exists(c, volume):
                say(f"  {part_name}: volume {volume} does not exist, skipped")
                continue
            info = parse_counts(run_step(c, tar_argv(cfg, work, part_name, [(volume, "")]),
                                         f"archiving volume {volume}"))
            parts.append(Part(part_name, "tar", part_file(part_name, "tar"),
                              {"volume": suffix, "files": info.get("files", 0), "content_bytes": info.get("bytes", 0)}))
            say(f"  {part_name}: {info.get('files', 0)} files, {human_bytes(info.get('bytes', 0))}")
        sources = [(str(cfg.env_file), ".env")]
        if cfg.certs_dir.is_dir():
            sources.append((str(cfg.certs_dir), "certs"))
        info = parse_counts(run_step(c, tar_argv(cfg, work, "config", sources), "archiving the configuration"))
        parts.append(Part("config", "tar", part_file("config", "tar"),
                          {"entries": [sub for _src, sub in sources], "files": info.get("files", 0)}))
        say(f"  config: {', '.join(sub for _src, sub in sources)}")

        sums = {}
        manifest_parts = {}
        for part in parts:
            path = work / part.file
            sums[part.file] = sha256_file(path)
            manifest_parts[part.name] = {"kind": part.kind, "file": part.file, "bytes": path.stat().st_size,
                                         "sha256": sums[part.file], **part.info}
        from . import __version__ as difyops_version  # noqa: PLC0415

        manifest = {
            "format": FORMAT,
            "id": name,
            "stack": cfg.stack,
            "created_at": now.astimezone(dt.timezone.utc).isoformat(timespec="seconds"),
            "duration_seconds": round(time.monotonic() - started, 1),
            "versions": {"difyops": difyops_version, "dify": settings.get("DIFY_VERSION", "1.13.3"),
                         "postgres": server, "redis": parts_info(parts, "redis").get("redis_version", ""),
                         "images": {k: v for k, v in sorted(settings.env.items()) if k.endswith("_IMAGE") and v}},
            "source": {"db_host": cfg.db_host, "db_port": cfg.db_port, "redis_host": cfg.redis_host},
            "encryption": {"tool": "age", "recipient": cfg.recipient},
            "compression": "zstd",
            "parts": manifest_parts,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        sums[MANIFEST] = sha256_file(work / MANIFEST)
        (work / SUMS).write_text(sums_text(sums))
        final = cfg.folder / name
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def parts_info(parts: list[Part], name: str) -> dict:
    return next((p.info for p in parts if p.name == name), {})


def copy_off_host(c: Any, settings: Settings, set_dir: Path) -> str:
    cfg = config_from(settings)
    if not settings.get("DIFYOPS_BACKUP_RESTIC_PASSWORD"):
        raise BackupError("DIFYOPS_BACKUP_RESTIC_PASSWORD is empty: run `invoke backup.keygen` (it generates one) "
                          "or set it")
    out = run_step(c, restic_argv(cfg, set_dir.name), f"copying {set_dir.name} to {cfg.restic_repository}",
                   secret_env(settings))
    return out


def check_parts(c: Any, cfg: BackupConfig, backup: BackupSet, manifest: dict) -> list[str]:
    """Decrypt and decompress every part (nothing written): the identity opens it and it is whole;
    tar parts hold as many files as the manifest says."""
    problems = []
    for part, info in manifest["parts"].items():
        kind = "tar" if info["kind"] == "tar" else info["kind"]
        result = c.run(shlex.join(check_part_argv(cfg, backup.path, info["file"], kind)), hide=True, warn=True,
                       in_stream=False)
        if not result.ok:
            problems.append(f"{part}: {info['file']} does not decrypt and decompress: {_last_line(result)}")
            continue
        if kind == "tar":
            files = parse_counts(result.stdout).get("files")
            if files != info.get("files"):
                problems.append(f"{part}: the archive holds {files} files, the manifest says {info.get('files')}")
    return problems


def drop_database_argv(cfg: BackupConfig, database: str) -> list[str]:
    return psql_argv(cfg, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def restore_database(c: Any, cfg: BackupConfig, backup: BackupSet, info: dict, new_database: str,
                     secrets: dict[str, str]) -> list[str]:
    """Restore one dump into new_database; the differences from the manifest's counts (empty = equal).
    The new database is dropped again when the restore fails."""
    result = c.run(shlex.join(pg_restore_argv(cfg, backup.path, info["file"], new_database)), env=secrets,
                   hide=True, warn=True, in_stream=False)
    if not result.ok:
        c.run(shlex.join(drop_database_argv(cfg, new_database)), env=secrets, hide=True, warn=True)
        raise BackupError(f"restoring {info['file']} into {new_database} failed: {_last_line(result)}")
    return compare_counts(info.get("tables") or {}, parse_counts(result.stdout))


def stamp_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")


def verify(c: Any, settings: Settings, name: str | None, say=print) -> tuple[BackupSet, list[str]]:
    """Checksums, then decrypt every part, then restore each database into a scratch database on
    the server and compare it table by table with the manifest; the scratch databases are dropped."""
    cfg = config_from(settings)
    backup = find_set(cfg.folder, name, cfg.stack)
    manifest, problems = check_set(backup.path)
    if problems or manifest is None:
        return backup, problems
    say(f"  checksums: {len(manifest['parts'])} parts and the manifest match {SUMS}")
    problems = identity_problems(cfg) or preflight(c, cfg)
    if problems:
        raise BackupError("; ".join(problems))
    problems = check_parts(c, cfg, backup, manifest)
    if problems:
        return backup, problems
    say("  decryption: every part opens with the identity and decompresses whole")
    secrets = secret_env(settings)
    stamp = stamp_now()
    for part, info in manifest["parts"].items():
        if info["kind"] != "postgres":
            continue
        scratch = f"{info['database']}_verify_{stamp}"
        try:
            diffs = restore_database(c, cfg, backup, info, scratch, secrets)
        finally:
            c.run(shlex.join(drop_database_argv(cfg, scratch)), env=secrets, hide=True, warn=True)
        problems += [f"{part}: {line}" for line in diffs]
        say(f"  {part}: restored into a scratch database, {len(info.get('tables') or {})} tables "
            + ("match the manifest" if not diffs else f"DIFFER ({len(diffs)})"))
    return backup, problems


def restore(c: Any, settings: Settings, name: str | None, other_stack: bool = False, config: bool = False,
            say=print) -> dict:
    """Restore a set; refuses a damaged or mismatched set before anything is changed.

    Order: check (checksums, stack, decrypt every part) -> restore each database into a new one and
    compare its counts (the running stack is untouched so far) -> stop api, worker and the plugin
    daemon -> swap the databases in one transaction (current ones kept as <db>_old_<stamp>) -> put
    the files and the Redis snapshot in place (current content kept aside in each volume) -> start
    the clusters again.
    """
    import time

    from . import stack as st  # noqa: PLC0415

    cfg = config_from(settings)
    backup = find_set(cfg.folder, name, cfg.stack)
    manifest, problems = check_set(backup.path, None if other_stack else cfg.stack)
    if problems or manifest is None:
        raise BackupError(f"refusing {backup.name}: {'; '.join(problems)}. Nothing was changed")
    problems = identity_problems(cfg) or preflight(c, cfg)
    if problems:
        raise BackupError("; ".join(problems) + ". Nothing was changed")
    problems = check_parts(c, cfg, backup, manifest)
    if problems:
        raise BackupError(f"refusing {backup.name}: {'; '.join(problems)}. Nothing was changed")
    say(f"  {backup.name}: checksums match and every part decrypts")
    secrets = secret_env(settings)
    stamp = stamp_now()
    pg_parts = [(p, i) for p, i in manifest["parts"].items() if i["kind"] == "postgres"]
    names = restore_names([i["database"] for _p, i in pg_parts], stamp)
    created: list[str] = []
    try:
        for (part, info), (_db, new, _old) in zip(pg_parts, names):
            created.append(new)
            step = time.monotonic()
            diffs = restore_database(c, cfg, backup, info, new, secrets)
            if diffs:
                raise BackupError(f"{part} restored into {new} differs from the manifest: {'; '.join(diffs[:5])}")
            say(f"  {part}: restored into {new} in {time.monotonic() - step:.1f}s, "
                f"{len(info.get('tables') or {})} tables match the manifest")
    except BaseException:
        for db in created:
            c.run(shlex.join(drop_database_argv(cfg, db)), env=secrets, hide=True, warn=True)
        raise

    # From here on the running stack changes.
    restart = (cl.CLUSTERS["support"], cl.CLUSTERS["api"], cl.CLUSTERS["worker"])
    for cluster_name, services in (("api", ()), ("worker", ()), ("support", ("plugin_daemon",))):
        st.run_compose(c, settings, cl.CLUSTERS[cluster_name], "stop", "--timeout", "60", *services,
                       hide=True, warn=True)
    say("  stopped api, worker and plugin_daemon")
    present = set(run_step(c, psql_argv(cfg, "SELECT datname FROM pg_database"), "listing databases", secrets).split())
    swaps = [(db, new, old) for db, new, old in names if db in present]
    fresh = [(db, new, old) for db, new, old in names if db not in present]
    sql = swap_sql(swaps) if swaps else ""
    sql += " ".join(f'ALTER DATABASE "{new}" RENAME TO "{db}";' for db, new, _old in fresh)
    if sql:
        for attempt in range(5):  # a client may reconnect between terminate and rename: retry, bounded
            result = c.run(shlex.join(psql_argv(cfg, sql)), env=secrets, hide=True, warn=True, in_stream=False)
            if result.ok:
                break
            if attempt == 4:
                for cluster in restart:  # the current databases are untouched: serve them again
                    st.up(c, settings, cluster)
                raise BackupError(f"switching to the restored databases failed: {_last_line(result)}; the current "
                                  f"databases are unchanged and served again, the restored ones are "
                                  f"{', '.join(created)}")
            time.sleep(1)  # terminated sessions take a moment to end
    say("  databases switched: " + ", ".join(f"{db} (previous kept as {old})" for db, _n, old in swaps)
        + "".join(f", {db} (new)" for db, _n, _o in fresh))
    aside = {"databases": [old for _db, _n, old in swaps], "volumes": {}}
    for part, info in manifest["parts"].items():
        if info["kind"] != "tar" or part == "config":
            continue
        volume = cl.volume_name(settings, info["volume"])
        if not volume_exists(c, volume):
            c.run(shlex.join(cl.volume_create_argv(settings, info["volume"])), hide=True)
        out = parse_tsv(run_step(c, untar_argv(cfg, backup.path, info["file"], volume, stamp),
                                 f"restoring volume {volume}"))
        aside["volumes"][volume] = _in_volume(out.get("aside", ""))
        say(f"  {part}: {info.get('files')} files restored into {volume} "
            f"(previous content in {aside['volumes'][volume]} inside it)")
    if "redis" in manifest["parts"]:
        info = manifest["parts"]["redis"]
        data = cl.CLUSTERS["data"]
        st.run_compose(c, settings, data, "stop", "--timeout", "30", "redis", hide=True, warn=True)
        volume = cl.volume_name(settings, "redisdata")
        out = parse_tsv(run_step(c, redis_restore_argv(cfg, backup.path, info["file"], volume, stamp),
                                 "restoring the Redis snapshot"))
        aside["volumes"][volume] = _in_volume(out.get("aside", ""))
        st.up(c, settings, data)
        say(f"  redis: snapshot restored ({info.get('keys')} keys; previous data in {aside['volumes'][volume]} "
            "inside its volume)")
    if config and "config" in manifest["parts"]:
        aside["env_file"] = restore_config(c, cfg, backup, manifest["parts"]["config"], stamp)
        say(f"  config: .env restored (previous kept as {aside['env_file']})")
    for cluster in restart:
        st.up(c, settings, cluster)
    say("  support, api and worker are healthy again")
    return aside


def _in_volume(path: str) -> str:
    """A step's /target/... path as a path inside the volume."""
    return path.removeprefix("/target/") or path


def restore_config(c: Any, cfg: BackupConfig, backup: BackupSet, info: dict, stamp: str) -> str:
    """Put the backed-up .env in place (the current one is copied beside it first)."""
    staging = cfg.folder / f".config-{stamp}"
    staging.mkdir(mode=0o700)
    try:
        argv = tool_argv(cfg, "untar-dir.sh", f"/set/{info['file']}", "/target", stamp,
                         mounts=[(str(backup.path), "/set", True), identity_mount(cfg), (str(staging), "/target", False)],
                         network=False)
        run_step(c, argv, "extracting the configuration")
        restored = staging / ".env"
        if not restored.is_file():
            raise BackupError("the configuration part holds no .env")
        copy = envfile.backup(cfg.env_file) if cfg.env_file.exists() else None
        envfile.write_private(cfg.env_file, restored.read_text())
        return str(copy)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
