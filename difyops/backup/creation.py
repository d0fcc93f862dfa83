"""backup.create: one online set (databases, Redis, volumes, configuration), copied off the host when asked."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

from .. import clusters as cl
from ..config import Settings
from ..digests import file_sha256, sums_text
from ..report import Say, quiet
from .config import (
    FILE_VOLUMES,
    FORMAT,
    MANIFEST,
    PARTIAL_SUFFIX,
    SUMS,
    BackupError,
    config_from,
    create_problems,
    dir_size,
    human_bytes,
    secret_env,
)
from .schedule import write_textfile
from .sets import set_name
from .steps import (
    Part,
    parse_counts,
    parse_tsv,
    part_file,
    pg_dump_argv,
    preflight,
    psql_argv,
    redis_dump_argv,
    restic_argv,
    run_step,
    tar_argv,
    volume_exists,
)


def create(c: Any, settings: Settings, say: Say = quiet, now: dt.datetime | None = None) -> Path:
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
        redis_info = parse_tsv(run_step(c, redis_dump_argv(cfg, work), "the Redis snapshot", secrets))
        part.info.update(keys=int(redis_info.get("keys", "0") or 0), redis_version=redis_info.get("redis_version", ""))
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
            sums[part.file] = file_sha256(path)
            manifest_parts[part.name] = {"kind": part.kind, "file": part.file, "bytes": path.stat().st_size,
                                         "sha256": sums[part.file], **part.info}
        from .. import __version__ as difyops_version  # noqa: PLC0415

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
        sums[MANIFEST] = file_sha256(work / MANIFEST)
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


def create_and_record(c: Any, settings: Settings, copy: bool | None = None, say: Say = quiet) -> Path:
    """backup.create: one set (create), copied off the host with restic when asked or configured,
    and the success metric for node_exporter. Returns the set's folder."""
    cfg = config_from(settings)
    started = time.monotonic()
    say(f"backing up stack {cfg.stack} into {cfg.folder} (the stack keeps serving)")
    try:
        set_dir = create(c, settings, say=say)
    except BackupError as exc:
        raise BackupError(f"{exc}; no set was written") from None
    seconds = time.monotonic() - started
    say(f"backup {set_dir.name}: {human_bytes(dir_size(set_dir))} in {seconds:.1f}s, encrypted to "
        f"{cfg.recipient[:16]}..., sha256 sums in {set_dir / SUMS}")
    if copy or (copy is None and cfg.restic_repository):
        try:
            copy_off_host(c, settings, set_dir)
        except BackupError as exc:
            raise BackupError(f"{exc} (the local set {set_dir.name} is complete)") from None
        say(f"copied off the host to {cfg.restic_repository} (restic)")
    say(f"metric written to {write_textfile(cfg, time.time())}")
    return set_dir
