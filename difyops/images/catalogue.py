"""The image catalogue: every image the bundle runs, its variable, official default (Dify's from the release set) and local build; resolved against a .env."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .. import paths, release_sets
from ..errors import DifyopsError

# The Dify release a fresh deployment runs, and the pins of Dify's own images: from the release
# sets (difyops/release_sets), the one place they live.
_RELEASE = release_sets.default()


DEFAULT_DIFY_VERSION = _RELEASE.release


# Settings read from .env (names introduced by difyops, documented in .env.example).
MIRROR_SETTING = "DIFYOPS_IMAGE_MIRROR"


CA_BUNDLE_SETTING = "DIFYOPS_BUILD_CA_BUNDLE"


DEBIAN_MIRROR_SETTING = "DIFYOPS_DEBIAN_MIRROR"


# The base of every local build: a minbase debootstrap of Debian 13 with the files of BASE_ROOTFS
# added, imported (no registry). The tag's suffix is the revision of those files: bump it whenever
# they change, so a host that has an older base makes the new one instead of building on the old.
BASE_IMAGE = "difyops/debian:trixie-2"


# Added to the debootstrapped root file system: /usr/sbin/policy-rc.d (no service starts in
# builds) and /usr/local/sbin/difyops-extra-ca (the extra CA bundle step of every Dockerfile).
BASE_ROOTFS = paths.IMAGES_DIR / "base" / "rootfs"


DEBIAN_SUITE = "trixie"


DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"


# The same base from Debian 12, made the same way (same files, same revision suffix): PostgreSQL 15,
# what Dify's official bundle runs, is packaged by bookworm only. Only images built on request use it
# (ON_REQUEST below: the adopt tests' PostgreSQL 15); the bundle itself runs nothing on it.
BOOKWORM_BASE_IMAGE = "difyops/debian:bookworm-2"


BASE_SUITES = {BASE_IMAGE: DEBIAN_SUITE, BOOKWORM_BASE_IMAGE: "bookworm"}


# A PEM bundle copied under this name into a build context is added to the image's trust store.
EXTRA_CA_FILE = "extra-ca.crt"


@dataclass(frozen=True)
class LocalBuild:
    """How an image is built on this machine: a folder of the repository and the tag it gets, with
    the stage of its Dockerfile and the build args when the folder builds several images."""

    context: str  # folder, relative to the repository root
    tag: str
    target: str | None = None  # stage of a multi-target Dockerfile
    build_args: tuple[tuple[str, str], ...] = ()
    test_double: bool = False  # a stand-in for tests, never something to run in production
    base_image: str = BASE_IMAGE  # the Debian base it builds FROM (BASE_SUITES)

    def context_dir(self, root: Path = paths.ROOT) -> Path:
        return root / self.context


@dataclass(frozen=True)
class ImageSpec:
    name: str  # short name, as `--only` takes it
    variable: str  # the .env / compose variable
    default: str  # the official image; "{dify_version}" is DIFY_VERSION
    local: LocalBuild
    stands_for: str = ""  # what the default is, in a few words
    release_key: str = ""  # a Dify-made image: its key in the release sets (api, plugin_daemon, ...)

    def official(self, dify_version: str = DEFAULT_DIFY_VERSION) -> str:
        """The official image for a Dify release: the release set's pin when the release has a set
        and this image (a 1.13.3 deployment runs plugin daemon 0.5.3), else the default release's
        (the api, web and agent images with the release as their tag)."""
        version = dify_version or DEFAULT_DIFY_VERSION
        image = _release_image(self.release_key, version)
        return image.ref if image is not None else self.default.format(dify_version=version)

    def in_release(self, dify_version: str = DEFAULT_DIFY_VERSION) -> bool:
        """False for a Dify image the release (when it has a set) does not run (the agent images
        before 1.16): a deployment of it neither pulls nor lists it."""
        if not self.release_key:
            return True
        try:
            rs = release_sets.for_version(dify_version)
        except release_sets.ReleaseSetError:
            return True
        return self.release_key in rs.images


def _release_image(key: str, version: str) -> "release_sets.Image | None":
    if not key:
        return None
    try:
        return release_sets.for_version(version).images.get(key)
    except release_sets.ReleaseSetError:
        return None


def release_of(env: Mapping[str, str]) -> "release_sets.ReleaseSet | None":
    """The release set a .env deploys (None for a DIFY_VERSION without one: pre-flight refuses it)."""
    try:
        return release_sets.for_env(env)
    except release_sets.ReleaseSetError:
        return None


def _standin(target: str, image: str) -> LocalBuild:
    return LocalBuild(
        context="tests/standin",
        tag=f"difyops-standin/{image}:v1",
        target=target,
        build_args=(("STANDIN_VERSION", "v1"),),
        test_double=True,
    )


# The seven monitoring images share one Dockerfile; each is a stage of it (--target, named as the
# image) built with the build args below.
PROMETHEUS_FAMILY = "images/prometheus-family"


def _prometheus_family(name: str, variable: str, default: str, version: str, stands_for: str,
                       entrypoint: str, port: int, *, data_dir: str = "", tools: tuple[str, ...] = (),
                       version_word: str = "version") -> ImageSpec:
    """A monitoring image, difyops-local/<name>:<version>, from the Debian package prometheus-<name>
    (prometheus itself: prometheus): the package's binary linked at the official entrypoint path,
    tools linked into /bin, a check that `<entrypoint> --version` says "<version_word> <version>.",
    the port, a data folder owned by nobody, and labels naming what it stands for (default)."""
    package = name if name == "prometheus" else f"prometheus-{name}"
    links = {entrypoint: f"/usr/bin/{package}", **{f"/bin/{tool}": f"/usr/bin/{tool}" for tool in tools}}
    args = {
        "PACKAGE": package,
        "LINKS": " ".join(f"{link}={target}" for link, target in links.items()),
        "BINARY": entrypoint,
        "VERSION_REGEX": rf"{version_word} v?{re.escape(version)}\.",
        "DATA_DIR": data_dir,
        "PORT": str(port),
        "TITLE": f"difyops-local/{name}",
        "STANDS_FOR": default,
    }
    build = LocalBuild(PROMETHEUS_FAMILY, f"difyops-local/{name}:{version}", target=name,
                       build_args=tuple((key, value) for key, value in args.items() if value))
    return ImageSpec(name, variable, default, build, stands_for)


def _dify(name: str, key: str, standin_target: str, stands_for: str, follows_version: bool,
          standin: LocalBuild | None = None) -> ImageSpec:
    """A Dify-made image, pinned by the release set of DIFY_VERSION (ImageSpec.official). For a
    release without a set the api, web and agent images follow DIFY_VERSION (their tag is the
    release); the sandbox and plugin daemon keep the default release's pins, as the compose files'
    defaults do."""
    image = _RELEASE.image(key)
    default = f"{image.repository}:{{dify_version}}" if follows_version else image.ref
    return ImageSpec(name, image.variable, default, standin or _standin(standin_target, name), stands_for, key)


def _standin_v3(target: str, image: str) -> LocalBuild:
    """The New Agent's stand-ins exist in v3 only (tests/standin/build.sh v3: Dify 1.16.1)."""
    return LocalBuild(context="tests/standin", tag=f"difyops-standin/{image}:v3", target=target,
                      build_args=(("STANDIN_VERSION", "v3"),), test_double=True)


# Order: as the compose files meet them (Dify first, then the middleware).
CATALOGUE: tuple[ImageSpec, ...] = (
    _dify("dify-api", "api", "api", "Dify API, worker and beat", follows_version=True),
    _dify("dify-web", "web", "web", "Dify web front end", follows_version=True),
    _dify("dify-sandbox", "sandbox", "sandbox", "code sandbox", follows_version=False),
    _dify("dify-plugin-daemon", "plugin_daemon", "plugin-daemon", "plugin daemon", follows_version=False),
    ImageSpec("postgres", "POSTGRES_IMAGE", "pgvector/pgvector:0.8.0-pg17",
              LocalBuild("images/postgres", "difyops-local/postgres:17"), "PostgreSQL 17 with pgvector"),
    ImageSpec("redis", "REDIS_IMAGE", "redis:6-alpine",
              LocalBuild("images/redis", "difyops-local/redis:8"), "Redis"),
    ImageSpec("nginx", "NGINX_IMAGE", "nginx:1.27.5",
              LocalBuild("images/nginx", "difyops-local/nginx:1.26"), "nginx gateway"),
    ImageSpec("squid", "SSRF_PROXY_IMAGE", "ubuntu/squid:6.6-24.04_beta",
              LocalBuild("images/squid", "difyops-local/squid:6"), "Squid SSRF proxy"),
    # Dify 1.16+: the New Agent (compose/support.agent.yml), in the releases that have it.
    _dify("dify-agent-backend", "agent_backend", "agent-backend", "Dify agent backend (New Agent)",
          follows_version=True, standin=_standin_v3("agent-backend", "dify-agent-backend")),
    _dify("dify-agent-local-sandbox", "local_sandbox", "local-sandbox", "Dify agent local sandbox (New Agent)",
          follows_version=True, standin=_standin_v3("local-sandbox", "dify-agent-local-sandbox")),
    # The monitoring cluster (compose/monitoring.yml): targets of one Dockerfile, built from the
    # Debian package prometheus-<name> (see _prometheus_family). Grafana and cAdvisor have no
    # Debian package: they are not built here (Grafana's files are validated statically).
    _prometheus_family("prometheus", "PROMETHEUS_IMAGE", "prom/prometheus:v2.55.1", "2", "Prometheus",
                       "/bin/prometheus", 9090, data_dir="/prometheus", tools=("promtool",)),
    _prometheus_family("alertmanager", "ALERTMANAGER_IMAGE", "prom/alertmanager:v0.28.1", "0.28", "Alertmanager",
                       "/bin/alertmanager", 9093, data_dir="/alertmanager", tools=("amtool",)),
    _prometheus_family("node-exporter", "NODE_EXPORTER_IMAGE", "prom/node-exporter:v1.9.0", "1",
                       "host metrics exporter", "/bin/node_exporter", 9100),
    _prometheus_family("postgres-exporter", "POSTGRES_EXPORTER_IMAGE", "prometheuscommunity/postgres-exporter:v0.17.1",
                       "0.17", "PostgreSQL metrics exporter", "/bin/postgres_exporter", 9187),
    # Its --version says "Redis Metrics Exporter 1.69.0".
    _prometheus_family("redis-exporter", "REDIS_EXPORTER_IMAGE", "oliver006/redis_exporter:v1.69.0-alpine", "1",
                       "Redis and Celery queue metrics exporter", "/redis_exporter", 9121, version_word="Exporter"),
    _prometheus_family("nginx-exporter", "NGINX_EXPORTER_IMAGE", "nginx/nginx-prometheus-exporter:1.4.1", "1",
                       "nginx stub_status exporter", "/usr/bin/nginx-prometheus-exporter", 9113),
    _prometheus_family("blackbox-exporter", "BLACKBOX_EXPORTER_IMAGE", "prom/blackbox-exporter:v0.26.0", "0.26",
                       "HTTP probes through the gateway", "/bin/blackbox_exporter", 9115),
    # Backup tools (difyops/backup.py). No official image exists: the default is the local build.
    ImageSpec("backup", "DIFYOPS_BACKUP_IMAGE", "difyops-local/backup:1",
              LocalBuild("images/backup", "difyops-local/backup:1"),
              "backup tools: pg_dump 17, redis-cli, age, zstd, restic"),
    # HA data layer (compose/data-ha.yml, docs/ha.md). Patroni has no single official image:
    # Zalando's Spilo (Patroni + PostgreSQL + pgvector) is the pinned default, untested here.
    ImageSpec("patroni", "PATRONI_IMAGE", "ghcr.io/zalando/spilo-17:4.0-p2",
              LocalBuild("images/patroni", "difyops-local/patroni:4"), "Patroni + PostgreSQL 17 + pgvector"),
    ImageSpec("etcd", "ETCD_IMAGE", "quay.io/coreos/etcd:v3.5.16",
              LocalBuild("images/etcd", "difyops-local/etcd:3.5"), "etcd, Patroni's store"),
    ImageSpec("haproxy", "HAPROXY_IMAGE", "haproxy:3.0.10",
              LocalBuild("images/haproxy", "difyops-local/haproxy:3.0"), "HAProxy: read-write and read-only fronts"),
    # Development middleware's opt-in database viewer (compose/dev/middleware.yml, profile viewer).
    ImageSpec("adminer", "ADMINER_IMAGE", "adminer:5.3.0",
              LocalBuild("images/adminer", "difyops-local/adminer:5"), "Adminer database viewer (development)"),
)


# Built only when named (`invoke images.build-local --only postgres15`): never part of the bundle's
# images (not pulled, listed or built by default). PostgreSQL 15 plays the official bundle's
# postgres:15-alpine in the adopt tests (tests/adopt), where an official install is moved over.
ON_REQUEST: tuple[ImageSpec, ...] = (
    ImageSpec("postgres15", "ADOPT_POSTGRES15_IMAGE", "postgres:15-alpine",
              LocalBuild("images/postgres", "difyops-local/postgres:15",
                         build_args=(("PG_MAJOR", "15"), ("PGVECTOR", "false"), ("STANDS_FOR", "postgres:15-alpine")),
                         base_image=BOOKWORM_BASE_IMAGE),
              "PostgreSQL 15, as Dify's official bundle runs (adopt tests)"),
)


# Prefixes of images that only ever exist because they were built on this machine.
LOCAL_PREFIXES = ("difyops-local/", "difyops-standin/", "difyops/")


def local_images(catalogue: Iterable[ImageSpec] = CATALOGUE) -> list[ImageSpec]:
    """The images built from images/ (not the test doubles)."""
    return [spec for spec in catalogue if not spec.local.test_double]


def standin_images(catalogue: Iterable[ImageSpec] = CATALOGUE) -> list[ImageSpec]:
    return [spec for spec in catalogue if spec.local.test_double]


def find(key: str, catalogue: Iterable[ImageSpec] = CATALOGUE + ON_REQUEST) -> ImageSpec:
    """An image by short name (postgres), variable (POSTGRES_IMAGE) or local tag."""
    wanted = key.strip()
    specs = list(catalogue)
    for spec in specs:
        if wanted.lower() in (spec.name, spec.variable.lower()) or wanted == spec.local.tag:
            return spec
    names = ", ".join(spec.name for spec in specs)
    raise DifyopsError(f"unknown image {key!r}: choose from {names}")


def select(only: Iterable[str] | None, standins: bool = False) -> list[ImageSpec]:
    """What `build-local` builds: the named images, else images/* (plus the test doubles if asked)."""
    names = [part for item in (only or []) for part in re.split(r"[,\s]+", item) if part]
    if names:
        chosen = [find(name) for name in names]
        if standins:
            chosen += standin_images()
    else:
        chosen = local_images() + (standin_images() if standins else [])
    unique: list[ImageSpec] = []
    for spec in chosen:
        if spec not in unique:
            unique.append(spec)
    return unique


@dataclass(frozen=True)
class ResolvedImage:
    spec: ImageSpec
    ref: str
    from_env: bool  # True when .env names the image, False for the official default

    @property
    def variable(self) -> str:
        return self.spec.variable

    @property
    def is_local_build(self) -> bool:
        return is_local_ref(self.ref)


def dify_version(env: Mapping[str, str]) -> str:
    return (env.get("DIFY_VERSION") or "").strip() or DEFAULT_DIFY_VERSION


def resolve_ref(spec: ImageSpec, env: Mapping[str, str]) -> ResolvedImage:
    """The ref Compose will use for spec's variable: the .env value, or the official default."""
    value = (env.get(spec.variable) or "").strip()
    if value:
        return ResolvedImage(spec, value, True)
    return ResolvedImage(spec, spec.official(dify_version(env)), False)


def resolve(env: Mapping[str, str], catalogue: Iterable[ImageSpec] = CATALOGUE) -> list[ResolvedImage]:
    """Every image the deployment of ``env`` runs (a Dify image its release has not: left out)."""
    version = dify_version(env)
    return [resolve_ref(spec, env) for spec in catalogue if spec.in_release(version)]


def local_env_lines(specs: Iterable[ImageSpec]) -> list[str]:
    """The .env lines that point the bundle at the local builds of specs."""
    return [f"{spec.variable}={spec.local.tag}" for spec in specs]


def is_local_ref(ref: str) -> bool:
    """True for images that exist only because this machine built them (never pulled)."""
    name = ref.strip()
    local_tags = {spec.local.tag for spec in CATALOGUE + ON_REQUEST} | set(BASE_SUITES)
    return name in local_tags or name.startswith(LOCAL_PREFIXES)
