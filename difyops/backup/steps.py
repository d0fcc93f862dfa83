"""The steps' commands: one-shot containers of the backup image (pg_dump, redis, tar, age, restic) and running them."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..report import failure_line
from .. import clusters as cl
from .config import BIN_DIR, DEFAULTS, BackupConfig, BackupError, _path


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


def aside_argv(cfg: BackupConfig, action: str, volume: str, name: str, keep: str | None = None) -> list[str]:
    """aside.sh: check, put back or drop what a restore kept aside in a volume (folder `name`)."""
    return tool_argv(cfg, "aside.sh", action, "/target", name, *([keep] if keep else []),
                     mounts=[(volume, "/target", action == "check")], network=False)


def role_passwords_argv(cfg: BackupConfig, roles: list[tuple[str, str]]) -> list[str]:
    """role-passwords.sh: each (role, variable) gets the password in that variable, one transaction.
    Only the variables' names are on the command line; their values come from the environment."""
    return tool_argv(cfg, "role-passwords.sh", *[f"{role}={variable}" for role, variable in roles],
                     env=pg_env(cfg, write=True), secrets=["PGPASSWORD", *[v for _r, v in roles]])


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


def parse_tsv(text: str) -> dict[str, str]:
    out = {}
    for line in (text or "").splitlines():
        if "\t" in line:
            key, value = line.split("\t", 1)
            out[key.strip()] = value.strip()
    return out


def parse_counts(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in parse_tsv(text).items() if v.lstrip("-").isdigit()}


@dataclass
class Part:
    """One file of a set being written, and what its step reported."""

    name: str
    kind: str  # postgres, redis, tar
    file: str
    info: dict[str, Any] = field(default_factory=dict)


def run_step(c: Any, argv: list[str], what: str, secrets: dict[str, str] | None = None) -> str:
    """Run one step; its stdout, or BackupError naming the step and its last line of output."""
    result = c.run(shlex.join(argv), env=secrets or {}, hide=True, warn=True, in_stream=False)
    if not result.ok:
        raise BackupError(f"{what} failed: {failure_line(result)}")
    return result.stdout


def image_present(c: Any, cfg: BackupConfig) -> bool:
    return c.run(shlex.join(["docker", "image", "inspect", "--format", "{{.Id}}", cfg.image]),
                 hide=True, warn=True).ok


def volume_exists(c: Any, volume: str) -> bool:
    return c.run(shlex.join(["docker", "volume", "inspect", volume]), hide=True, warn=True).ok


def build_default_image(c: Any, cfg: BackupConfig) -> bool:
    """Build the default backup image from images/backup when it is missing (it has no official
    image to pull); True when it is there afterwards. Needs the Debian base image."""
    from .. import images  # noqa: PLC0415

    if cfg.image != DEFAULTS["DIFYOPS_BACKUP_IMAGE"]:
        return False
    plan = images.plan_build(images.find("backup"))
    return c.run(shlex.join(plan.argv), hide=True, warn=True).ok and image_present(c, cfg)


def preflight(c: Any, cfg: BackupConfig, network: bool = True) -> list[str]:
    """Docker answers, the backup image is there (built when it is the default), and (network) the
    stack's backend network exists."""
    if not c.run("docker info --format '{{.ServerVersion}}'", hide=True, warn=True).ok:
        return ["the Docker daemon is not reachable: start it (systemctl start docker) and retry"]
    if not image_present(c, cfg) and not build_default_image(c, cfg):
        return [f"the backup image {cfg.image} is missing: run `invoke images.build-local --only backup` "
                "(or set DIFYOPS_BACKUP_IMAGE)"]
    if network and not c.run(shlex.join(["docker", "network", "inspect", cfg.network]), hide=True, warn=True).ok:
        return [f"network {cfg.network} does not exist: is stack {cfg.stack} deployed? (invoke prod.deploy)"]
    return []


def drop_database_argv(cfg: BackupConfig, database: str) -> list[str]:
    return psql_argv(cfg, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
