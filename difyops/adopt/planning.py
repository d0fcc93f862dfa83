"""adopt.plan: the whole move planned and checked, read only, and its record (var/<stack>/adopt.json)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import clusters as cl
from .. import envfile, paths
from ..config import Settings
from ..release_sets import ReleaseSetError
from .disk import (
    DB_MBPS,
    FILES_MBPS,
    START_SECONDS,
    Disk,
    Part,
    certs_source,
    database_parts,
    disk_needs,
    docker_root,
    downtime_seconds,
    file_parts,
    human,
    probe_volumes,
    redis_dataset_bytes,
    redis_part,
    tree_bytes,
)
from .install import (
    PUBLIC_DEFAULTS,
    READ_LIVE,
    SECRET_KEY_TABLES,
    AdoptError,
    Install,
    find_install,
    install_problems,
    release_for,
    sealed_privkeys,
)
from .mapping import (
    Setting,
    map_settings,
    public_secrets,
    target_base_text,
    vector_database_name,
    vector_plan,
)


@dataclass
class Plan:
    install: Install
    release: str | None
    parts: list[Part]
    disks: list[Disk]
    settings: list[Setting]
    vector: str
    flags: list[str]  # public default secrets, with what rotating each breaks
    not_carried: list[str]  # what cannot be carried, and why
    problems: list[str]  # refusals (one line each)
    warnings: list[str]
    downtime: float
    target_holds: list[str]  # this stack's volumes that already hold data
    moved_databases: dict[str, str] = field(default_factory=dict)  # "server/db" -> target database name
    privkeys: list[str] = field(default_factory=list)  # tenants with a private key in the storage
    sealed: list[str] = field(default_factory=list)  # of those, sealed with SECRET_KEY

    @property
    def stops(self) -> list[str]:
        return [s for s in self.install.running if s not in READ_LIVE]


def make_plan(c: Any, settings: Settings, folder: str | Path, image: str, stage_dir: Path) -> Plan:
    """Everything adopt.plan prints and adopt.run checks first; changes nothing."""
    install = find_install(c, folder)
    problems = install_problems(install)
    release = None
    if install.version is None:
        problems.append(f"cannot tell the Dify version of {install.dir}: its api image "
                        f"{install.services['api'].image!r} (docker-compose.yaml: {install.declared_api_image!r}) "
                        "names no release")
    else:
        try:
            release = release_for(install.version)
        except (AdoptError, ReleaseSetError) as exc:
            problems.append(str(exc))
    vector, vector_problems = vector_plan(install)
    problems += vector_problems
    parts = database_parts(install) + [redis_part(install)] + file_parts(install)
    if "redis" in install.running:  # its snapshot on disk may be old or absent: ask it what it holds
        parts[len(database_parts(install))].bytes = max(parts[len(database_parts(install))].bytes,
                                                        redis_dataset_bytes(c, install, image))
    certs = certs_source(install)
    if certs is not None:
        parts.append(Part("certificates", "certs", certs, "", tree_bytes(certs),
                          detail=str(ssl_dir(settings))))
    suffixes = sorted({p.volume for p in parts if p.volume})
    probes = probe_volumes(c, settings, image, suffixes)
    holds = [f"{settings.stack}-{s}" for s, (_free, held) in probes.items() if held]
    existing_parent = next(p for p in (stage_dir, *stage_dir.parents) if p.exists())
    disks = disk_needs(parts, {s: free for s, (free, _h) in probes.items()}, docker_root(c),
                       (str(stage_dir), shutil.disk_usage(existing_parent).free), settings.stack)
    for disk in disks:
        if not disk.enough:
            problems.append(f"too little disk: {disk.where} has {human(disk.free)} free, the move needs "
                            f"{human(disk.needs)} ({', '.join(disk.parts)}, with room for WAL and temporary files)")
    target_env = envfile.values_of(target_base_text(settings), str(settings.env_file))
    largest, _source = envfile.largest_upload_bytes({**target_env, **install.env})
    vector_db = vector_database_name(install)
    rows = map_settings(install.env, target_env, release=release or "?", vector_database=vector_db,
                        rotate_secret_key=install.env.get("SECRET_KEY") in PUBLIC_DEFAULTS, largest_upload=largest,
                        weaviate_data=any(p.volume == "weaviate-0" for p in parts))
    not_carried = [f"{row.key}: {row.why}" for row in rows if row.action == "not carried"]
    not_carried += not_carried_parts(install)
    warnings = []
    if install.env.get("SECRET_KEY") in PUBLIC_DEFAULTS:
        warnings.append("SECRET_KEY is Dify's public example value: adopt.run replaces it if no stored data depends on "
                        f"it ({', '.join(SECRET_KEY_TABLES)} empty, no sealed private key), else refuses")
    if not install.env.get("SECRET_KEY"):
        problems.append("the install's .env has no SECRET_KEY: its sessions and stored settings cannot be carried")
    moved = {}
    main = install.db_service
    if main is None:
        raise AdoptError("the official install has no PostgreSQL service (db_postgres or db)")
    moved[f"{main.name}/*"] = "same names (dify, dify_plugin, and any other database of the server)"
    if vector_db:
        moved[f"pgvector/{install.env.get('PGVECTOR_DATABASE') or 'dify'}"] = vector_db
    storage = next((p.source for p in parts if p.name == "storage"), None)
    privkeys = sorted(p.parent.name for p in (storage / "privkeys").glob("*/private.pem")) if storage else []
    sealed = sealed_privkeys(storage)
    if sealed and install.env.get("SECRET_KEY") in PUBLIC_DEFAULTS:
        problems.append(f"SECRET_KEY is Dify's public example value and {len(sealed)} workspaces' private keys are "
                        "sealed with it: this project refuses public secrets and replacing it would lose every stored "
                        "credential; rotate it on the official install with Dify's own tools first")
    return Plan(install, release, parts, disks, rows, vector, public_secrets(install.env), not_carried, problems,
                warnings, downtime_seconds(parts), holds, moved, privkeys, sealed)


def ssl_dir(settings: Settings) -> Path:
    """Where this stack's gateway reads certificate files (NGINX_SSL_DIR, relative to compose/)."""
    value = settings.get("NGINX_SSL_DIR", "../nginx/ssl")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (paths.COMPOSE_DIR / path).resolve()


def not_carried_parts(install: Install) -> list[str]:
    out = []
    sandbox = install.services.get("sandbox")
    conf = sandbox.mount_for("/conf") if sandbox else None
    if conf is not None and conf.source.is_dir():
        out.append(f"{conf.source}: the official sandbox's config.yaml, part of the bundle; this project's sandbox "
                   "runs with its image's own configuration and the SANDBOX_* settings")
    out.append("PostgreSQL roles and grants other than the database owner: every moved object belongs to "
               "DB_USERNAME, the user Dify connects as (pg_dump per database carries no roles)")
    out.append("the official containers and their logs: they stay, stopped, for adopt.rollback")
    return out


def plan_lines(plan: Plan, settings: Settings) -> list[str]:
    """The plan, as adopt.plan prints it (no secret value ever appears)."""
    inst = plan.install
    lines = [f"install: {inst.dir} (compose project {inst.project}; files {', '.join(p.name for p in inst.compose_files)}; "
             f"settings {', '.join(str(p.relative_to(inst.dir)) for p in inst.env_files) or 'none'})",
             f"Dify version: {inst.version or 'unknown'} (api image {inst.services['api'].image}"
             + (f", docker-compose.yaml says {inst.declared_api_image}" if inst.declared_api_image != inst.services['api'].image else "")
             + ")",
             f"services running: {', '.join(inst.running) or 'none'}"]
    stopped = sorted(set(inst.states) - set(inst.running))
    if stopped:
        lines.append(f"services not running: {', '.join(stopped)}")
    lines.append(f"release set: {plan.release or '-'}" + (
        f" (the install runs {inst.version}: the release's migrations carry its database forward)"
        if plan.release and inst.version and plan.release != inst.version else ""))
    lines.append(f"target: stack {settings.stack} (.env {settings.env_file}"
                 + ("" if settings.env_file.is_file() else ", created by env.init rules") + ")")
    lines.append("what moves where:")
    for part in plan.parts:
        where = (f"volume {settings.stack}-{part.volume}" if part.volume else part.detail)
        how = {"postgres": "dump and restore into PostgreSQL 17, every table's rows and content hash compared",
               "redis": "snapshot (RDB) into the new Redis, every key's type and value compared",
               "files": "copied, every file's sha256 compared" + (f", owner set to {part.owner}" if part.owner else ""),
               "certs": "copied, sha256 compared"}[part.kind]
        lines.append(f"  {part.name}: {part.source} ({human(part.bytes)}) -> {where}: {how}")
    for source, target in plan.moved_databases.items():
        lines.append(f"  databases {source} -> {target}")
    lines.append("disk:")
    for disk in plan.disks:
        lines.append(f"  {disk.where}: {human(disk.free)} free, needs {human(disk.needs)} "
                     f"({'enough' if disk.enough else 'NOT ENOUGH'})")
    lines.append(f"vector store: {plan.vector}")
    if plan.target_holds:
        lines.append(f"this stack already holds data in {', '.join(plan.target_holds)}: adopt.run refuses without "
                     "--force (which takes a backup first)")
    by_cluster: dict[str, list[str]] = {}
    for row in plan.settings:
        if row.action == "carried":
            by_cluster.setdefault(row.cluster, []).append(row.key)
    lines.append("settings carried over (same names):")
    for name in list(cl.CLUSTERS):
        keys = by_cluster.get(name)
        if keys:
            lines.append(f"  {name}: {', '.join(keys)}")
    lines.append("settings that change:")
    for row in plan.settings:
        if row.action in ("changed", "generated", "rotated", "kept"):
            value = "" if row.secret or row.value is None else f" -> {row.value or '(empty)'}"
            lines.append(f"  {row.key} ({row.cluster}){value}: {row.why}")
    lines.append("secrets stored data depends on:")
    secret_row = next((r for r in plan.settings if r.key == "SECRET_KEY"), None)
    if secret_row is not None and secret_row.action == "rotated":
        lines.append(f"  SECRET_KEY: {secret_row.why}, unless the run finds rows in {', '.join(SECRET_KEY_TABLES)}")
    elif secret_row is not None:
        lines.append(f"  SECRET_KEY: {secret_row.why}")
    lines.append(f"  private keys: {len(plan.privkeys)} workspaces' privkeys/<tenant>/private.pem move byte for byte with "
                 "the storage (only they decrypt the provider credentials stored for the workspace)"
                 + (f"; {len(plan.sealed)} are sealed with SECRET_KEY" if plan.sealed else ""))
    if plan.flags:
        lines.append("public default secrets of the official example:")
        lines += [f"  {flag}" for flag in plan.flags]
    lines.append("cannot be carried:")
    lines += [f"  {item}" for item in plan.not_carried]
    lines.append(f"downtime: about {max(1, round(plan.downtime / 60))} min ({plan.downtime:.0f} s): the official stack's "
                 f"{len(plan.stops)} app services stop, the data moves and is verified, the clusters start "
                 f"(at ~{DB_MBPS:g} MB/s for the databases, ~{FILES_MBPS:g} MB/s for files, {START_SECONDS:.0f} s to start)")
    for warning in plan.warnings:
        lines.append(f"note: {warning}")
    if plan.problems:
        lines.append("adopt.run would refuse:")
        lines += [f"  {problem}" for problem in plan.problems]
    else:
        lines.append("adopt.run can go ahead" + (" (with --stop: the install is running)" if inst.running else ""))
    return lines


def state_path(settings: Settings) -> Path:
    from .. import releases  # noqa: PLC0415

    return releases.state_dir(settings) / "adopt.json"


def load_state(settings: Settings) -> dict:
    path = state_path(settings)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {}


def save_state(settings: Settings, state: dict) -> Path:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path
