"""Backup settings from .env (BackupConfig), their checks, and the set format's names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import digests, dotenv, envfile, paths
from ..config import Settings
from ..errors import DifyopsError

FORMAT = "difyops-backup/1"


BIN_DIR = paths.IMAGES_DIR / "backup" / "bin"


MANIFEST = "manifest.json"


SUMS = digests.SUMS


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


_AGE_RECIPIENT = re.compile(r"^age1[0-9a-z]{58}$")


class BackupError(DifyopsError):
    """Something about a backup the user can fix; the message says what."""


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


def set_env_values(path: Path, values: dict[str, str]) -> Path | None:
    """Set keys in an existing .env (where they are, appending the others), after a timestamped
    copy of the file; returns the copy (None when nothing changed)."""
    current = envfile.read(path)
    if all(current.get(key) == value for key, value in values.items()):
        return None
    return dotenv.set_values(path, values, comment="Set by backup.keygen")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
