"""The official install: its folder, compose files, settings and services, read without changing anything."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import composeps, envfile, release_sets
from ..errors import DifyopsError

COMPOSE_FILES = ("docker-compose.yaml", "docker-compose.yml")


OVERRIDE_FILES = ("docker-compose.override.yaml", "docker-compose.override.yml")


# Services that hold data and are read while they run (PostgreSQL over the wire, Redis with --rdb);
# every other service of the official stack is stopped first.
DB_SERVICES = ("db_postgres", "db")  # db: the name before Dify 1.x renamed it


READ_LIVE = (*DB_SERVICES, "redis", "pgvector")


# Where each part of the official install lands: (part, service, path in its container, volume of
# this stack, owner to set or None to keep the source's). The api and worker run as uid 1001 since
# Dify 1.10 (the official bundle's init_permissions chowns the storage for them); the plugin
# daemon, the sandbox and Weaviate run as root and keep what they wrote.
FILE_PARTS = (
    ("storage", "api", "/app/api/storage", "storage", "1001:1001"),
    ("plugin storage", "plugin_daemon", "/app/storage", "plugin-storage", None),
    ("sandbox dependencies", "sandbox", "/dependencies", "sandbox-dependencies", None),
    ("certbot certificates", "certbot", "/etc/letsencrypt", "letsencrypt", None),
    ("certbot webroot", "certbot", "/var/www/html", "certbot-www", None),
    ("weaviate", "weaviate", "/var/lib/weaviate", "weaviate-0", None),
)


# Fallback sources (relative to the install) when the service is not in the active profiles.
FILE_DEFAULTS = {
    "storage": "volumes/app/storage",
    "plugin storage": "volumes/plugin_daemon",
    "sandbox dependencies": "volumes/sandbox/dependencies",
    "certbot certificates": "volumes/certbot/conf",
    "certbot webroot": "volumes/certbot/www",
    "weaviate": "volumes/weaviate",
}


PG_DATA = "/var/lib/postgresql/data"


# Public values from Dify's docker/.env.example (1.13.3) and compose template (envfile keeps the list).
PUBLIC_DEFAULTS = envfile.KNOWN_PUBLIC_DEFAULTS


# Rows encrypted with SECRET_KEY itself (SystemOAuthEncrypter): replacing the key makes them unreadable.
SECRET_KEY_TABLES = ("public.tool_oauth_system_clients", "public.trigger_oauth_system_clients")


SEALED_PRIVKEY_PREFIX = b"ENCPK1:"  # later releases seal private keys with a key derived from SECRET_KEY


# The official stack's wiring that this project replaces with its own: (key, why).
LAYOUT = {
    "DB_HOST": "the data cluster's PostgreSQL is db_postgres on the stack's backend network",
    "DB_PORT": "the data cluster's PostgreSQL port",
    "REDIS_HOST": "the data cluster's Redis",
    "REDIS_PORT": "the data cluster's Redis port",
    "CELERY_BROKER_URL": "the data cluster's Redis, with this stack's REDIS_PASSWORD",
    "CODE_EXECUTION_ENDPOINT": "the support cluster's sandbox",
    "PLUGIN_DAEMON_URL": "the support cluster's plugin daemon",
    "PLUGIN_DIFY_INNER_API_URL": "the api cluster, as the plugin daemon reaches it",
    "PLUGIN_DAEMON_PORT": "the plugin daemon's port inside the stack",
    "SSRF_PROXY_HTTP_URL": "the support cluster's SSRF proxy",
    "SSRF_PROXY_HTTPS_URL": "the support cluster's SSRF proxy",
    "SANDBOX_HTTP_PROXY": "the support cluster's SSRF proxy",
    "SANDBOX_HTTPS_PROXY": "the support cluster's SSRF proxy",
    "SANDBOX_PORT": "the sandbox's port inside the stack",
    "SSRF_HTTP_PORT": "the SSRF proxy's port inside the stack",
    "SSRF_REVERSE_PROXY_PORT": "the SSRF proxy's port inside the stack",
    "SSRF_SANDBOX_HOST": "the support cluster's sandbox",
    "WEAVIATE_ENDPOINT": "the Weaviate overlay's nodes (alias weaviate)",
    "MIGRATION_ENABLED": "migrations run once, as a one-shot job, before the api starts (not in every replica)",
    "DIFY_BIND_ADDRESS": "the api's address inside its container",
    "DIFY_PORT": "the api's port inside the stack",
    "NGINX_PORT": "the gateway's port inside its container",
    "NGINX_SSL_PORT": "the gateway's TLS port inside its container",
    "INTERNAL_FILES_URL": "the api as the stack's own services reach it",
    "DB_USERNAME": "the data cluster's user: every moved object belongs to it",
}


_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


_IMAGE_TAG = re.compile(r":v?(\d+\.\d+\.\d+)(?:[-@].*)?$")


_INTERPOLATED_DEFAULT = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-v?(\d+\.\d+\.\d+)\}")


class AdoptError(DifyopsError):
    """Something about the install or the target the user can fix; the message is one line."""


def version_tuple(version: str) -> tuple[int, int, int]:
    match = _VERSION.fullmatch(version.strip())
    if not match:
        raise AdoptError(f"{version!r} is not a version such as 1.13.3")
    return tuple(int(x) for x in match.groups())  # type: ignore[return-value]


def version_of_image(image: str) -> str | None:
    """The release an image reference names (langgenius/dify-api:1.13.3 -> 1.13.3), if it does."""
    match = _IMAGE_TAG.search(image or "") or _INTERPOLATED_DEFAULT.search(image or "")
    return match.group(1) if match else None


def release_for(version: str, supported: list[str] | None = None) -> str:
    """The release set an install of `version` maps to: its own when supported, else the oldest
    supported newer one (its migrations carry the database forward). Refuses older than the oldest
    supported (upgrade with the official bundle first) and newer than the newest (a downgrade)."""
    supported = supported if supported is not None else release_sets.supported()
    if not supported:
        raise AdoptError("no release set is installed (difyops/release_sets is empty)")
    wanted = version_tuple(version)
    oldest, newest = supported[0], supported[-1]
    if wanted < version_tuple(oldest):
        raise AdoptError(f"Dify {version} is older than {oldest}, the oldest release this project supports: "
                         f"upgrade the install with the official bundle to {oldest} or newer first, then adopt it")
    if wanted > version_tuple(newest):
        raise AdoptError(f"Dify {version} is newer than {newest}, the newest release this project supports: "
                         "adopting it would run an older Dify on a newer database; update difyops first")
    for candidate in supported:
        if version_tuple(candidate) >= wanted:
            return candidate
    return newest  # unreachable: newest >= wanted


@dataclass
class Mount:
    source: Path  # on the host
    target: str  # in the container
    read_only: bool = False


@dataclass
class Service:
    name: str
    image: str
    mounts: list[Mount]
    environment: dict[str, str]
    networks: list[str]  # Docker network names
    command: list[str]
    profiles: list[str]

    def mount_for(self, target: str) -> Mount | None:
        for mount in self.mounts:
            if mount.target.rstrip("/") == target.rstrip("/"):
                return mount
        return None


@dataclass
class Install:
    dir: Path
    compose_files: list[Path]
    project: str
    env: dict[str, str]
    env_files: list[Path]
    services: dict[str, Service]
    declared_api_image: str
    version: str | None
    states: dict[str, str] = field(default_factory=dict)  # service -> state, from compose ps
    containers: dict[str, str] = field(default_factory=dict)  # service -> container name

    @property
    def running(self) -> list[str]:
        return sorted(s for s, state in self.states.items() if state == "running")

    @property
    def db_service(self) -> Service | None:
        return next((self.services[name] for name in DB_SERVICES if name in self.services), None)

    def compose_argv(self, *args: str) -> list[str]:
        argv = ["docker", "compose", "--project-directory", str(self.dir)]
        for file in self.compose_files:
            argv += ["-f", str(file)]
        if self.project:  # unknown until Compose has named it (config)
            argv += ["-p", self.project]
        return argv + list(args)

    @property
    def vector_store(self) -> str:
        return (self.env.get("VECTOR_STORE") or "weaviate").strip().lower()


def dir_problems(folder: Path) -> list[str]:
    """Why a folder is not an official install, before Compose is asked (empty: it may be one)."""
    if not folder.is_dir():
        return [f"{folder} is not an official Dify install: no such folder"]
    if not any((folder / name).is_file() for name in COMPOSE_FILES):
        return [f"{folder} is not an official Dify install: it has no docker-compose.yaml "
                "(point --from at the docker/ folder of Dify's bundle)"]
    if not (folder / ".env").is_file() and not (folder / "envs").is_dir():
        return [f"{folder} is not an official Dify install: it has no .env (nor envs/) with its settings"]
    return []


def compose_files(folder: Path) -> list[Path]:
    """docker-compose.yaml and the override Compose would also read, as Compose picks them."""
    files = [next(folder / n for n in COMPOSE_FILES if (folder / n).is_file())]
    files += [folder / n for n in OVERRIDE_FILES if (folder / n).is_file()][:1]
    return files


def official_env(folder: Path) -> tuple[dict[str, str], list[Path]]:
    """The install's settings: envs/**/*.env (1.14 and later; examples left out) in Dify's order
    (envfile.read_split_layout), .env last."""
    return envfile.read_split_layout(folder)


def declared_api_image(files: list[Path]) -> str:
    """The api image docker-compose.yaml itself names (before overrides): what the bundle is."""
    try:
        doc = yaml.safe_load(files[0].read_text()) or {}
    except yaml.YAMLError as exc:
        raise AdoptError(f"{files[0]} is not valid YAML: {str(exc).splitlines()[0]}") from None
    services = doc.get("services") or {}
    api = services.get("api") or {}
    return str(api.get("image") or "")


def parse_config(text: str, folder: Path) -> tuple[str, dict[str, Service]]:
    """`docker compose config --format json`: the project name and every active service."""
    doc = json.loads(text)
    networks = {key: (value or {}).get("name") or key for key, value in (doc.get("networks") or {}).items()}
    services = {}
    for name, svc in (doc.get("services") or {}).items():
        mounts = []
        for vol in svc.get("volumes") or []:
            if vol.get("type") == "bind" and vol.get("source"):
                source = Path(vol["source"])
                if not source.is_absolute():
                    source = (folder / source).resolve()
                mounts.append(Mount(source, vol.get("target", ""), bool(vol.get("read_only"))))
        env = {k: "" if v is None else str(v) for k, v in (svc.get("environment") or {}).items()}
        nets = svc.get("networks") or {"default": None}
        command = svc.get("command") or []
        if isinstance(command, str):
            command = shlex.split(command)
        services[name] = Service(name, str(svc.get("image") or ""), mounts, env,
                                 [networks.get(n, f"{doc.get('name')}_{n}") for n in nets],
                                 [str(x) for x in command], list(svc.get("profiles") or []))
    return str(doc.get("name") or ""), services


def shape_problems(folder: Path, services: dict[str, Service]) -> list[str]:
    """Why the services Compose found are not the official bundle's."""
    missing = [name for name in ("api", "worker", "redis") if name not in services]
    if not any(name in services for name in DB_SERVICES):
        missing.append("db_postgres")
    if missing:
        return [f"{folder} is not an official Dify install: its compose project has no {', '.join(missing)} "
                "service (for a PostgreSQL install COMPOSE_PROFILES must include postgresql)"]
    storage = services["api"].mount_for("/app/api/storage")
    if storage is None:
        return [f"{folder} is not an official Dify install: the api service mounts nothing at /app/api/storage"]
    return []


def find_install(c: Any, folder: str | Path) -> Install:
    """The official install in folder, as Compose sees it (read only). Raises AdoptError."""
    path = Path(folder).expanduser().resolve()
    problems = dir_problems(path)
    if problems:
        raise AdoptError(problems[0])
    files = compose_files(path)
    env, env_files = official_env(path)
    declared = declared_api_image(files)
    install = Install(path, files, "", env, env_files, {}, declared, None)
    result = c.run(shlex.join(install.compose_argv("config", "--format", "json")), hide=True, warn=True, in_stream=False)
    if not result.ok:
        lines = [ln for ln in (result.stderr or "").strip().splitlines() if ln.strip()]
        raise AdoptError(f"{path} is not an official Dify install Compose can read: "
                         f"{lines[-1] if lines else 'docker compose config failed'}")
    try:
        install.project, install.services = parse_config(result.stdout, path)
    except (ValueError, AttributeError) as exc:
        raise AdoptError(f"docker compose config of {path} printed no JSON: {exc}") from None
    problems = shape_problems(path, install.services)
    if problems:
        raise AdoptError(problems[0])
    api = install.services["api"]
    install.version = version_of_image(api.image) or version_of_image(declared)
    ps = c.run(shlex.join(install.compose_argv("ps", "-a", "--format", "json")), hide=True, warn=True, in_stream=False)
    if ps.ok:
        install.states, install.containers, _ = composeps.by_service(composeps.records(ps.stdout))
    return install


def install_problems(install: Install) -> list[str]:
    """What this project cannot take over at all (one line each)."""
    problems = []
    if (install.env.get("DB_TYPE") or "postgresql").strip().lower() not in ("postgresql", "postgres"):
        problems.append(f"DB_TYPE={install.env.get('DB_TYPE')}: this project runs PostgreSQL and Dify has no "
                        "migration from another database; adopt supports PostgreSQL installs only")
    db_host = (install.env.get("DB_HOST") or "db_postgres").strip()
    if install.db_service is None or db_host not in install.services:
        problems.append(f"DB_HOST={db_host} is not a service of the install: its database is elsewhere, and adopt "
                        "moves only the bundle's own PostgreSQL")
    redis_host = (install.env.get("REDIS_HOST") or "redis").strip()
    if redis_host not in install.services:
        problems.append(f"REDIS_HOST={redis_host} is not a service of the install: adopt moves only the bundle's Redis")
    return problems


def sealed_privkeys(storage: Path | None) -> list[str]:
    """Private keys sealed with SECRET_KEY (a later release's format): replacing SECRET_KEY loses them."""
    if storage is None or not (storage / "privkeys").is_dir():
        return []
    sealed = []
    for path in sorted((storage / "privkeys").glob("*/private.pem")):
        try:
            with open(path, "rb") as handle:
                if handle.read(len(SEALED_PRIVKEY_PREFIX)) == SEALED_PRIVKEY_PREFIX:
                    sealed.append(path.parent.name)
        except OSError:
            continue
    return sealed
