"""Sizes, disk and downtime: what the move copies, where it lands, how long it takes (measured rates)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import clusters as cl
from ..config import Settings
from .install import FILE_DEFAULTS, FILE_PARTS, PG_DATA, AdoptError, Install, Service

# For the downtime estimate, from what tests/adopt measures on a 2-core host (kept below it): MB/s
# of the database move (dump, restore, index builds, both fingerprints: 17 to 23 MB/s measured), of
# file copies (copy and both sha256 passes), and the fixed part (stop the official services, start
# the data cluster, snapshot Redis, switch, start every cluster: about 35 s measured).
DB_MBPS = 15.0


FILES_MBPS = 60.0


START_SECONDS = 45.0


# Room the move needs beyond the data itself: WAL and temporary files, a new cluster's catalogue.
HEADROOM_BYTES = 256 * 1024 * 1024


HEADROOM_RATIO = 0.2


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under path (symlinks not followed); 0 when it does not exist."""
    if not path.exists():
        return 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += info.st_size
    return total


@dataclass
class Part:
    """One thing that moves: where from, where to, how big."""

    name: str  # "database dify", "storage", ...
    kind: str  # postgres, redis, files, certs
    source: Path | None
    volume: str  # volume suffix of this stack ("" for host files)
    bytes: int
    owner: str | None = None
    detail: str = ""


def file_parts(install: Install) -> list[Part]:
    """The folders that move into this stack's volumes (those that exist and are not empty)."""
    parts = []
    for name, service, target, volume, owner in FILE_PARTS:
        if name == "weaviate" and install.vector_store != "weaviate":
            continue
        svc = install.services.get(service)
        mount = svc.mount_for(target) if svc else None
        source = mount.source if mount else install.dir / FILE_DEFAULTS[name]
        if name == "certbot webroot" and mount is None and "nginx" in install.services:
            nginx_mount = install.services["nginx"].mount_for("/var/www/html")
            source = nginx_mount.source if nginx_mount else source
        if name == "certbot certificates" and mount is None and "nginx" in install.services:
            nginx_mount = install.services["nginx"].mount_for("/etc/letsencrypt")
            source = nginx_mount.source if nginx_mount else source
        if not source.is_dir() or not any(source.iterdir()):
            continue
        parts.append(Part(name, "files", source, volume, tree_bytes(source), owner))
    return parts


def certs_source(install: Install) -> Path | None:
    nginx = install.services.get("nginx")
    mount = nginx.mount_for("/etc/ssl") if nginx else None
    source = mount.source if mount else install.dir / "nginx" / "ssl"
    if source.is_dir() and any(p.is_file() for p in source.iterdir()):
        return source
    return None


def pg_data_dir(service: Service | None) -> Path | None:
    if service is None:
        return None
    mount = service.mount_for(PG_DATA)
    return mount.source if mount else None


@dataclass
class Disk:
    where: str  # what it is: "Docker's volumes (/var/lib/docker)", "volume dify-pgdata", ...
    free: int
    needs: int
    parts: list[str]

    @property
    def enough(self) -> bool:
        return self.free >= self.needs


def with_headroom(n: int) -> int:
    return int(n * (1 + HEADROOM_RATIO)) + HEADROOM_BYTES


def disk_needs(parts: list[Part], existing: Mapping[str, int], docker_root: tuple[str, int] | None,
               stage: tuple[str, int], stack: str) -> list[Disk]:
    """Free space against need, per place: each existing target volume on its own (it may be a
    mount of its own), every volume still to create on Docker's root, the host staging folder.
    `existing` maps volume suffixes to their free bytes."""
    groups: dict[str, Disk] = {}
    for part in parts:
        if part.kind == "certs":
            continue
        size = part.bytes * (2 if part.kind == "redis" else 1)  # Redis: dump.rdb and its append-only base
        if part.kind == "redis":
            key = f"host staging {stage[0]}"
            groups.setdefault(key, Disk(key, stage[1], 0, [])).needs += part.bytes
            groups[key].parts.append(part.name)
        if part.volume in existing:
            key = f"volume {stack}-{part.volume}"
            disk = groups.setdefault(key, Disk(key, existing[part.volume], 0, []))
        elif docker_root is not None:
            key = f"Docker's volumes ({docker_root[0]})"
            disk = groups.setdefault(key, Disk(key, docker_root[1], 0, []))
        else:
            continue
        disk.needs += size
        disk.parts.append(part.name)
    for disk in groups.values():
        disk.needs = with_headroom(disk.needs)
    return list(groups.values())


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def downtime_seconds(parts: list[Part]) -> float:
    db = sum(p.bytes for p in parts if p.kind == "postgres")
    files = sum(p.bytes for p in parts if p.kind in ("files", "redis", "certs"))
    return db / (DB_MBPS * 1024 * 1024) + files / (FILES_MBPS * 1024 * 1024) + START_SECONDS


def docker_root(c: Any) -> tuple[str, int] | None:
    result = c.run("docker info --format '{{.DockerRootDir}}'", hide=True, warn=True)
    root = (result.stdout or "").strip() if result.ok else ""
    if root and Path(root).exists():
        return root, shutil.disk_usage(root).free
    return None


def volume_probe_argv(image: str, volume: str) -> list[str]:
    """Free bytes of a volume's file system and whether it holds anything (read only)."""
    return ["docker", "run", "--rm", "--network", "none", "-v", f"{volume}:/v:ro", image, "sh", "-c",
            "df -P -B1 /v | awk 'NR==2 {print \"free\\t\" $4}'; "
            "find /v -mindepth 1 -maxdepth 1 ! -name '.difyops-*' | head -n 1 | sed 's/^/holds\\t/'"]


def probe_volumes(c: Any, settings: Settings, image: str, suffixes: Iterable[str]) -> dict[str, tuple[int, bool]]:
    """For each of this stack's volumes that exists: (free bytes, holds data)."""
    out = {}
    for suffix in suffixes:
        name = cl.volume_name(settings, suffix)
        if not c.run(shlex.join(["docker", "volume", "inspect", name]), hide=True, warn=True).ok:
            continue
        result = c.run(shlex.join(volume_probe_argv(image, name)), hide=True, warn=True)
        free, holds = 0, False
        for line in (result.stdout or "").splitlines():
            key, _, value = line.partition("\t")
            if key == "free" and value.strip().isdigit():
                free = int(value)
            elif key == "holds":
                holds = True
        out[suffix] = (free, holds)
    return out


def database_parts(install: Install) -> list[Part]:
    """The PostgreSQL servers that move (their data folders' sizes: an upper bound of the databases)."""
    parts = []
    main = install.db_service
    if main is None:
        raise AdoptError("the official install has no PostgreSQL service (db_postgres or db)")
    folder = pg_data_dir(main)
    parts.append(Part(f"PostgreSQL ({main.name})", "postgres", folder, "pgdata", tree_bytes(folder) if folder else 0,
                      detail=main.name))
    if install.vector_store == "pgvector" and "pgvector" in install.services:
        folder = pg_data_dir(install.services["pgvector"])
        parts.append(Part("pgvector", "postgres", folder, "pgdata", tree_bytes(folder) if folder else 0,
                          detail="pgvector"))
    return parts


def redis_part(install: Install) -> Part:
    svc = install.services["redis"]
    mount = svc.mount_for("/data")
    folder = mount.source if mount else install.dir / "volumes/redis/data"
    rdb = folder / "dump.rdb"
    size = rdb.stat().st_size if rdb.is_file() else tree_bytes(folder)
    return Part("Redis", "redis", folder, "redisdata", size)


def redis_dataset_bytes(c: Any, install: Install, image: str) -> int:
    """What a running official Redis holds (INFO memory's used_memory_dataset), 0 when unknown."""
    svc = install.services["redis"]
    password = svc.environment.get("REDISCLI_AUTH") or install.env.get("REDIS_PASSWORD", "")
    argv = ["docker", "run", "--rm", "--network", svc.networks[0], "-e", "REDISCLI_AUTH", image, "redis-cli", "-h",
            install.containers.get("redis") or "redis", "--no-auth-warning", "info", "memory"]
    result = c.run(shlex.join(argv), env={"REDISCLI_AUTH": password}, hide=True, warn=True)
    match = re.search(r"^used_memory_dataset:(\d+)", result.stdout or "", re.M) if result.ok else None
    return int(match.group(1)) if match else 0
