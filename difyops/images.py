"""The bundle's images: which ones, where they come from, and the docker commands that get them.

- The catalogue: every image variable of the compose files (docs/CONVENTIONS.md), its official
  default, and the local build that stands in for it when no registry is reachable.
- Resolution: the ref each variable has for a deployment, from its .env (empty = the default,
  as Compose's ``${VAR:-default}`` does).
- Registry mirrors: ``DIFYOPS_IMAGE_MIRROR=registry.example.cn/dockerhub`` pulls
  ``registry.example.cn/dockerhub/library/redis:6-alpine`` and tags it ``redis:6-alpine``, so the
  compose files never change.
- Command lines (argv lists) for ``docker pull``, ``docker tag``, ``docker image inspect``,
  ``docker build`` (with an optional extra CA bundle) and the Debian base image.

Everything here is pure, except :func:`stage_build_context` and :func:`install_base_files` (copy
files) and :func:`pull_one` (runs the commands it builds through an invoke context).
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import paths
from .errors import DifyopsError

DEFAULT_DIFY_VERSION = "1.13.3"

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

# A PEM bundle copied under this name into a build context is added to the image's trust store.
EXTRA_CA_FILE = "extra-ca.crt"

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


@dataclass(frozen=True)
class LocalBuild:
    """How an image is built on this machine: a folder of the repository and the tag it gets, with
    the stage of its Dockerfile and the build args when the folder builds several images."""

    context: str  # folder, relative to the repository root
    tag: str
    target: str | None = None  # stage of a multi-target Dockerfile
    build_args: tuple[tuple[str, str], ...] = ()
    test_double: bool = False  # a stand-in for tests, never something to run in production

    def context_dir(self, root: Path = paths.ROOT) -> Path:
        return root / self.context


@dataclass(frozen=True)
class ImageSpec:
    name: str  # short name, as `--only` takes it
    variable: str  # the .env / compose variable
    default: str  # the official image; "{dify_version}" is DIFY_VERSION
    local: LocalBuild
    stands_for: str = ""  # what the default is, in a few words

    def official(self, dify_version: str = DEFAULT_DIFY_VERSION) -> str:
        return self.default.format(dify_version=dify_version or DEFAULT_DIFY_VERSION)


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


# Order: as the compose files meet them (Dify first, then the middleware).
CATALOGUE: tuple[ImageSpec, ...] = (
    ImageSpec("dify-api", "DIFY_API_IMAGE", "langgenius/dify-api:{dify_version}",
              _standin("api", "dify-api"), "Dify API, worker and beat"),
    ImageSpec("dify-web", "DIFY_WEB_IMAGE", "langgenius/dify-web:{dify_version}",
              _standin("web", "dify-web"), "Dify web front end"),
    ImageSpec("dify-sandbox", "DIFY_SANDBOX_IMAGE", "langgenius/dify-sandbox:0.2.14",
              _standin("sandbox", "dify-sandbox"), "code sandbox"),
    ImageSpec("dify-plugin-daemon", "DIFY_PLUGIN_DAEMON_IMAGE", "langgenius/dify-plugin-daemon:0.5.3-local",
              _standin("plugin-daemon", "dify-plugin-daemon"), "plugin daemon"),
    ImageSpec("postgres", "POSTGRES_IMAGE", "pgvector/pgvector:0.8.0-pg17",
              LocalBuild("images/postgres", "difyops-local/postgres:17"), "PostgreSQL 17 with pgvector"),
    ImageSpec("redis", "REDIS_IMAGE", "redis:6-alpine",
              LocalBuild("images/redis", "difyops-local/redis:8"), "Redis"),
    ImageSpec("nginx", "NGINX_IMAGE", "nginx:1.27.5",
              LocalBuild("images/nginx", "difyops-local/nginx:1.26"), "nginx gateway"),
    ImageSpec("squid", "SSRF_PROXY_IMAGE", "ubuntu/squid:6.6-24.04_beta",
              LocalBuild("images/squid", "difyops-local/squid:6"), "Squid SSRF proxy"),
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

# Prefixes of images that only ever exist because they were built on this machine.
LOCAL_PREFIXES = ("difyops-local/", "difyops-standin/", "difyops/")


# ----------------------------------------------------------------------------- catalogue lookups


def local_images(catalogue: Iterable[ImageSpec] = CATALOGUE) -> list[ImageSpec]:
    """The images built from images/ (not the test doubles)."""
    return [spec for spec in catalogue if not spec.local.test_double]


def standin_images(catalogue: Iterable[ImageSpec] = CATALOGUE) -> list[ImageSpec]:
    return [spec for spec in catalogue if spec.local.test_double]


def find(key: str, catalogue: Iterable[ImageSpec] = CATALOGUE) -> ImageSpec:
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


# ----------------------------------------------------------------------------- resolution


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
    return [resolve_ref(spec, env) for spec in catalogue]


def local_env_lines(specs: Iterable[ImageSpec]) -> list[str]:
    """The .env lines that point the bundle at the local builds of specs."""
    return [f"{spec.variable}={spec.local.tag}" for spec in specs]


def is_local_ref(ref: str) -> bool:
    """True for images that exist only because this machine built them (never pulled)."""
    name = ref.strip()
    local_tags = {spec.local.tag for spec in CATALOGUE} | {BASE_IMAGE}
    return name in local_tags or name.startswith(LOCAL_PREFIXES)


# ----------------------------------------------------------------------------- refs and mirrors


@dataclass(frozen=True)
class ImageRef:
    registry: str  # docker.io, ghcr.io, registry.example.cn:5000, ...
    path: str  # library/redis, langgenius/dify-api, ...
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.path}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def suffix(self) -> str:
        """":tag", "@digest" or both, as written after the repository."""
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")


def parse_ref(ref: str) -> ImageRef:
    """Split an image reference as Docker does (docker.io and library/ implied; tag latest)."""
    text = (ref or "").strip()
    if not text or any(ch.isspace() for ch in text):
        raise DifyopsError(f"{ref!r} is not an image reference")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise DifyopsError(f"{ref!r}: {digest!r} is not a digest (algorithm:hex)")
    first, sep, rest = text.partition("/")
    # Docker's rule: the first component is a registry when it has a dot or a port, or is localhost.
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, remainder = first, rest
    else:
        registry, remainder = DOCKER_HUB, text
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not _TAG.match(tag):
            raise DifyopsError(f"{ref!r}: {tag!r} is not a valid tag")
    if not remainder or not all(_PATH_COMPONENT.match(part) for part in remainder.split("/")):
        raise DifyopsError(f"{ref!r}: repository names are lower case letters, digits and . _ - separators")
    if registry == DOCKER_HUB and "/" not in remainder:
        remainder = f"library/{remainder}"
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry, remainder, tag, digest)


def normalize_ref(ref: str) -> str:
    """The fully qualified form: redis -> docker.io/library/redis:latest."""
    return str(parse_ref(ref))


def normalize_mirror(mirror: str | None) -> str:
    """registry.example.cn/dockerhub from any of: a bare host/prefix, a URL, a trailing slash."""
    text = (mirror or "").strip()
    text = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", text)
    return text.strip("/")


def mirror_ref(ref: str, mirror: str | None) -> str:
    """Where to pull ref from through a Docker Hub mirror or prefix.

    Docker Hub images get the mirror in front of their full path (official images keep their
    ``library/`` part, which pull-through caches need): with mirror ``registry.example.cn/dockerhub``,
    ``redis:6-alpine`` -> ``registry.example.cn/dockerhub/library/redis:6-alpine``. Images of other
    registries, local builds, and an empty mirror leave ref unchanged.
    """
    prefix = normalize_mirror(mirror)
    if not prefix or is_local_ref(ref):
        return ref
    parsed = parse_ref(ref)
    if parsed.registry != DOCKER_HUB:
        return ref
    return f"{prefix}/{parsed.path}{parsed.suffix}"


# ----------------------------------------------------------------------------- docker command lines


def pull_argv(ref: str) -> list[str]:
    return ["docker", "pull", ref]


def tag_argv(source: str, target: str) -> list[str]:
    return ["docker", "tag", source, target]


def inspect_argv(ref: str) -> list[str]:
    """Succeeds (exit 0, prints the id) only when ref is present locally."""
    return ["docker", "image", "inspect", "--format", "{{.Id}}", ref]


def pull_commands(ref: str, mirror: str | None) -> list[list[str]]:
    """The commands that make ref present: a pull, and a tag when it came through a mirror."""
    source = mirror_ref(ref, mirror)
    if source == ref:
        return [pull_argv(ref)]
    return [pull_argv(source), tag_argv(source, ref)]


@dataclass(frozen=True)
class PullResult:
    ref: str
    source: str  # what was pulled (the mirrored ref, or ref itself)
    ok: bool
    error: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def pull_one(c: Any, ref: str, mirror: str | None = None) -> PullResult:
    """Pull ref (through mirror, then tagged as ref). Runs through c; never raises on failure."""
    source = mirror_ref(ref, mirror)
    for argv in pull_commands(ref, mirror):
        result = c.run(shlex.join(argv), hide=True, warn=True)
        if not result.ok:
            error = _last_line(result.stderr) or _last_line(result.stdout) or f"exit {result.exited}"
            return PullResult(ref, source, False, f"{argv[1]} failed: {error}")
    return PullResult(ref, source, True)


# ----------------------------------------------------------------------------- local builds


def ca_bundle_path(value: str | Path | None, root: Path = paths.ROOT) -> Path | None:
    """The extra CA bundle for builds (DIFYOPS_BUILD_CA_BUNDLE), checked; None when not set.

    A relative path is taken from the repository root, as the .env file's other paths are.
    """
    if value is None or not str(value).strip():
        return None
    path = Path(str(value).strip()).expanduser()
    if not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise DifyopsError(
            f"{CA_BUNDLE_SETTING}={value} is not a file: point it at a PEM bundle "
            "(for example /etc/ssl/certs/ca-certificates.crt) or leave it empty"
        )
    head = path.read_bytes()[:1 << 20]
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise DifyopsError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----): use a PEM bundle")
    return path


@dataclass(frozen=True)
class BuildPlan:
    """One `docker build`: its argv, and the copy to make first when a CA bundle is added."""

    spec: ImageSpec
    argv: list[str]
    context: Path  # what docker build reads
    source: Path  # the repository folder
    ca_bundle: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def staged(self) -> bool:
        return self.context != self.source


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plan_build(
    spec: ImageSpec,
    *,
    root: Path = paths.ROOT,
    ca_bundle: Path | None = None,
    staging_dir: Path | None = None,
    base_image: str = BASE_IMAGE,
    no_cache: bool = False,
    ca_digest: str | None = None,
) -> BuildPlan:
    """The `docker build` of spec's local image.

    Without a CA bundle the repository folder is the build context and nothing else changes. With
    one, the context is a copy of that folder in staging_dir with the bundle added as extra-ca.crt
    (see :func:`stage_build_context`), so the repository itself is never written to; the image gets
    a label with the bundle's sha256 (ca_digest, computed from the file when not given).
    """
    build = spec.local
    source = build.context_dir(root)
    labels: dict[str, str] = {}
    context = source
    if ca_bundle is not None:
        if staging_dir is None:
            raise ValueError("a CA bundle needs a staging_dir for the copied build context")
        context = staging_dir / spec.name
        labels["io.difyops.extra-ca.sha256"] = ca_digest or file_sha256(ca_bundle)
    argv = ["docker", "build", "--tag", build.tag, "--file", str(context / "Dockerfile")]
    if build.target:
        argv += ["--target", build.target]
    if not build.test_double:
        argv += ["--build-arg", f"BASE_IMAGE={base_image}"]
    for key, value in build.build_args:
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    if no_cache:
        argv.append("--no-cache")
    argv.append(str(context))
    return BuildPlan(spec, argv, context, source, ca_bundle, labels)


def stage_build_context(plan: BuildPlan) -> None:
    """Make the copied build context a plan with a CA bundle needs (no-op otherwise)."""
    if not plan.staged or plan.ca_bundle is None:
        return
    if plan.context.exists():
        shutil.rmtree(plan.context)
    shutil.copytree(plan.source, plan.context, symlinks=True)
    shutil.copyfile(plan.ca_bundle, plan.context / EXTRA_CA_FILE)


def debian_mirror(env: Mapping[str, str]) -> str:
    return (env.get(DEBIAN_MIRROR_SETTING) or "").strip() or DEFAULT_DEBIAN_MIRROR


def debootstrap_argv(rootfs: Path, mirror: str = DEFAULT_DEBIAN_MIRROR, suite: str = DEBIAN_SUITE) -> list[str]:
    return ["debootstrap", "--variant=minbase", suite, str(rootfs), mirror]


def install_base_files(rootfs: Path, overlay: Path = BASE_ROOTFS) -> list[str]:
    """Copy every file under overlay into rootfs at the same path: mode 0755 when the file is
    executable in the repository, else 0644 (whatever the checkout's umask). Returns the paths."""
    installed = []
    for source in sorted(p for p in overlay.rglob("*") if p.is_file()):
        relative = source.relative_to(overlay)
        target = rootfs / relative
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o755 if source.stat().st_mode & 0o111 else 0o644)
        installed.append("/" + relative.as_posix())
    return installed


def base_import_command(rootfs: Path, image: str = BASE_IMAGE) -> str:
    """tar of the root file system piped into `docker import` (a shell pipeline, for c.run)."""
    return shlex.join(["tar", "-C", str(rootfs), "-c", "."]) + " | " + shlex.join(["docker", "import", "-", image])


def base_image_problems(euid: int, debootstrap_path: str | None) -> list[str]:
    """Why the Debian base image cannot be made on this host (empty = it can)."""
    problems = []
    if debootstrap_path is None:
        problems.append(
            f"{BASE_IMAGE} is missing and debootstrap is not installed: "
            "run scripts/host-setup.sh (or apt-get install debootstrap)"
        )
    if euid != 0:
        problems.append(f"{BASE_IMAGE} is missing and debootstrap needs root: run this task as root once")
    return problems
