"""Dify release sets: what each supported Dify release is made of, as Dify's own files say.

One YAML file per release (``dify-<version>.yaml`` beside this module) records the upstream facts
the bundle depends on: the image of every Dify service with the interface the bundle relies on
(user, entrypoint, command, the paths its user writes), the services and the cluster each lives
in, the variables the bundle must give each one, Celery's queues, how long a workflow run may
last, how the migration command behaves, the gateway's routes, and the Compose floor. Every fact
names the upstream file it was read from (``sources``: repository, path, commit), or says that
the file is not stored at that version, what was read instead (``read_at``) and what the fact
was inferred from.

The compose files, the nginx templates, .env.example, the worker groups and the image catalogue
are checked against this data (tests/unit/test_contract.py); code that needs a fact of a release
(its queues, its images, its start commands) reads it from here, through :func:`for_version`
(the deployment's DIFY_VERSION) or :func:`default` (the newest supported release). When a
release changes, this is the one place to update.

Later releases add services (their ``overlays``: the bundle's compose files that add them to a
cluster, Dify's own ``profiles`` recorded beside), secrets with the form each service accepts
(``secrets``), networks of their own (``networks``), and rename variables (``variables_renamed``,
old name -> new name). The compose files' defaults are the newest release's; a deployment of an
older release passes that release's images and gateway upstreams (:func:`release_variables`) and
adds only that release's overlays (:func:`overlay_files`).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets as _secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import DifyopsError

HERE = Path(__file__).resolve().parent
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_QUEUE = re.compile(r"^[a-z][a-z0-9_]*$")
_VARIABLE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_USER = re.compile(r"^(\d+)(?::(\d+))?$")
_OVERLAY = re.compile(r"^[a-z]+\.[a-z0-9.-]+\.yml$")
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")
# The tools a healthcheck may run in an image (tests/unit/test_contract.py checks each probe).
TOOLS = ("curl", "wget", "python3", "celery", "squid", "sh", "bash")


class ReleaseSetError(DifyopsError):
    """A release set file is malformed, or a release is not supported."""


@dataclass(frozen=True)
class Source:
    key: str
    repo: str
    path: str
    commit: str | None  # None when the file is not stored at the version needed
    inferred_from: str = ""  # when commit is None: what the fact was inferred from
    read_at: str | None = None  # when commit is None: the commit of another version that was read
    note: str = ""


@dataclass(frozen=True)
class Image:
    key: str  # api, web, sandbox, plugin_daemon, ...
    ref: str  # the official image of this release
    variable: str  # the .env / compose variable that overrides it
    user: str  # "uid:gid" the image runs as ("" for root)
    entrypoint: tuple[str, ...]
    command: tuple[str, ...]
    source: str
    writes: tuple[str, ...] = ()  # paths its (non-root) user writes: what is mounted there must be its own
    tools: tuple[str, ...] = ()  # programs in the image a healthcheck may use (curl, python3, ...)

    @property
    def repository(self) -> str:
        """The ref without its tag: langgenius/dify-api."""
        name = self.ref.split("@", 1)[0]
        return name[: name.rfind(":")] if name.rfind(":") > name.rfind("/") else name

    @property
    def tag(self) -> str:
        name = self.ref.split("@", 1)[0]
        return name[name.rfind(":") + 1:] if name.rfind(":") > name.rfind("/") else "latest"

    @property
    def runs_as_root(self) -> bool:
        return self.user in ("", "0", "0:0", "root")

    @property
    def start_command(self) -> tuple[str, ...]:
        """What the container runs when the service sets neither entrypoint nor command."""
        return self.entrypoint + self.command


@dataclass(frozen=True)
class Service:
    name: str  # Dify's own service name
    cluster: str  # the difyops cluster it lives in
    image: str | None  # key of `images`, or None for a non-Dify image (squid, nginx)
    variables: tuple[str, ...]  # what the bundle must set on it
    source: str
    port: int | None = None
    profiles: tuple[str, ...] = ()  # Dify's own compose profiles for it (the bundle uses overlays)
    mode: str | None = None  # the api image's MODE for this service (api, worker, beat)
    health: "Health | None" = None
    peers: tuple[str, ...] | None = None  # when set: the only services it may share a network with
    env_files: tuple[str, ...] = ()  # Dify's own env files for it, in the order Compose reads them


@dataclass(frozen=True)
class Health:
    """How a service shows it serves: upstream's own healthcheck, or the bundle's probe where
    upstream has none."""
    path: str | None  # HTTP path probed (None: a probe of its own kind, e.g. squid -k check)
    port: int | None
    upstream: bool  # True: Dify's compose has this check; False: the bundle's own probe
    source: str


@dataclass(frozen=True)
class Route:
    prefix: str
    to: str  # the Dify service it reaches
    websocket: bool
    source: str
    upstream_variable: str | None = None  # the gateway variable naming its upstream (host:port)
    when: str | None = None  # the setting that switches the route's answers on (the gateway routes it anyway)


@dataclass(frozen=True)
class Secret:
    """A secret a release needs, the form the services that read it accept, and who reads it."""
    name: str  # the .env variable
    form: str  # "base64url32": unpadded base64url of exactly 32 bytes; "token": any non-empty string
    consumers: dict[str, str]  # service -> the variable it reads the secret as
    source: str
    public_defaults: tuple[str, ...] = ()  # upstream's published defaults: never acceptable
    required: bool = True

    def problem(self, value: str | None) -> str | None:
        """Why value is not acceptable for this secret (None: it is). Never echoes the value."""
        text = (value or "").strip()
        if not text:
            return f"{self.name} is empty" + (": the services that read it refuse to start" if self.required else "")
        if text in self.public_defaults:
            return f"{self.name} is Dify's published development default: generate a new one"
        if self.form == "base64url32":
            if not _BASE64URL.fullmatch(text):
                return (f"{self.name} must be unpadded base64url text (A-Z, a-z, 0-9, - and _; no '=', '+' "
                        "or '/')")
            try:
                decoded = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
            except binascii.Error:
                return f"{self.name} must be unpadded base64url text"
            if len(decoded) != 32:
                return f"{self.name} must decode to exactly 32 bytes (it decodes to {len(decoded)})"
        return None

    def generate(self) -> str:
        """A fresh value in the form the services accept."""
        if self.form == "base64url32":
            return base64.urlsafe_b64encode(_secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
        return _secrets.token_hex(32)


SECRET_FORMS = ("base64url32", "token")


@dataclass(frozen=True)
class Network:
    """A network a release's services need beyond the bundle's backend, ssrf and app."""
    name: str  # the key in the compose files (the Docker name is <stack>-<name with - for _>)
    internal: bool
    members: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class WorkflowRuns:
    """Where workflow runs execute and how long one may last (what a worker drain must wait for)."""
    queue: str  # the Celery queue runs are published on
    limit_variables: tuple[str, ...]  # .env variables that cap a run, in seconds
    default_seconds: int  # their default in the release's .env.example
    source: str


@dataclass(frozen=True)
class Migrations:
    """How the migration command of the api image behaves, and how to ask where the schema is."""
    command: tuple[str, ...]  # flask command MODE=migration runs
    lock: str  # the Redis lock it takes
    lock_ttl_seconds: int
    skipped_message: str  # what it prints (exit 0) when another holds the lock
    current_command: tuple[str, ...]  # flask command that prints the applied revision
    head_marker: str  # what that command prints after the revision when it is the image's head
    source: str


@dataclass(frozen=True)
class ReleaseSet:
    release: str
    compose_min: tuple[int, ...]
    sources: dict[str, Source]
    images: dict[str, Image]
    services: dict[str, Service]
    queues: tuple[str, ...]
    queues_source: str
    routes: tuple[Route, ...]
    workflow_runs: WorkflowRuns | None = None
    migrations: Migrations | None = None
    variables_renamed: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)  # upstream defaults the bundle keeps
    overlays: dict[str, tuple[str, ...]] = field(default_factory=dict)  # cluster -> compose files it adds
    secrets: dict[str, Secret] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    renamed_sources: dict[str, str] = field(default_factory=dict)  # old name -> source key
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def image(self, key: str) -> Image:
        return self.images[key]

    def image_by_variable(self, variable: str) -> Image | None:
        return next((img for img in self.images.values() if img.variable == variable), None)

    def image_by_ref(self, ref: str) -> Image | None:
        return next((img for img in self.images.values() if img.ref == ref), None)

    def queue_list(self) -> str:
        """The queues as Celery's -Q takes them."""
        return ",".join(self.queues)


def _require(doc: dict, key: str, where: str) -> Any:
    if not isinstance(doc, dict):
        raise ReleaseSetError(f"{where}: not a mapping")
    if key not in doc:
        raise ReleaseSetError(f"{where}: `{key}` is missing")
    return doc[key]


def _source_ref(value: Any, sources: dict[str, Source], where: str) -> str:
    if value not in sources:
        raise ReleaseSetError(f"{where}: source {value!r} is not one of `sources`")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReleaseSetError(f"{where}: must be a list of strings")
    return tuple(value)


def _sources(doc: dict, where: str) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    for key, item in (_require(doc, "sources", where) or {}).items():
        here = f"{where}: sources.{key}"
        commit = item.get("commit")
        read_at = item.get("read_at")
        if commit is not None and not _COMMIT.match(str(commit)):
            raise ReleaseSetError(f"{here}: commit must be 40 hex digits (or null with inferred_from)")
        if commit is None and not item.get("inferred_from"):
            raise ReleaseSetError(f"{here}: a source without a commit must say what it was inferred_from")
        if read_at is not None and (commit is not None or not _COMMIT.match(str(read_at))):
            raise ReleaseSetError(f"{here}: read_at (40 hex digits) goes with commit: null only")
        sources[key] = Source(key, str(_require(item, "repo", here)), str(_require(item, "path", here)),
                              commit, str(item.get("inferred_from") or ""), read_at, str(item.get("note") or ""))
    return sources


def _images(doc: dict, sources: dict[str, Source], where: str) -> dict[str, Image]:
    images: dict[str, Image] = {}
    for key, item in (_require(doc, "images", where) or {}).items():
        here = f"{where}: images.{key}"
        user = str(item.get("user") or "")
        if user and not _USER.match(user):
            raise ReleaseSetError(f"{here}: user {user!r} must be numeric, uid or uid:gid (\"\" for root)")
        writes = _strings(item.get("writes"), f"{here}.writes")
        if any(not path.startswith("/") for path in writes):
            raise ReleaseSetError(f"{here}.writes: paths must be absolute")
        tools = _strings(item.get("tools"), f"{here}.tools")
        unknown = [t for t in tools if t not in TOOLS]
        if unknown:
            raise ReleaseSetError(f"{here}.tools: {', '.join(unknown)} not one of {', '.join(TOOLS)}")
        images[key] = Image(key, str(_require(item, "ref", here)), str(_require(item, "variable", here)), user,
                            _strings(item.get("entrypoint"), f"{here}.entrypoint"),
                            _strings(item.get("command"), f"{here}.command"),
                            _source_ref(_require(item, "source", here), sources, here), writes, tools)
        if not images[key].start_command:
            raise ReleaseSetError(f"{here}: an image runs something: give its entrypoint or command")
    return images


def _services(doc: dict, images: dict[str, Image], sources: dict[str, Source], where: str) -> dict[str, Service]:
    services: dict[str, Service] = {}
    for name, item in (_require(doc, "services", where) or {}).items():
        here = f"{where}: services.{name}"
        image = item.get("image")
        if image is not None and image not in images:
            raise ReleaseSetError(f"{here}: image {image!r} is not one of `images`")
        variables = _strings(item.get("variables"), f"{here}.variables")
        bad = [v for v in variables if not _VARIABLE.match(v)]
        if bad:
            raise ReleaseSetError(f"{here}.variables: {', '.join(bad)} are not variable names")
        health = None
        if item.get("health") is not None:
            h = item["health"]
            health = Health(h.get("path"), h.get("port"), bool(_require(h, "upstream", f"{here}.health")),
                            _source_ref(_require(h, "source", f"{here}.health"), sources, f"{here}.health"))
        peers = item.get("peers")
        services[name] = Service(name, str(_require(item, "cluster", here)), image, variables,
                                 _source_ref(_require(item, "source", here), sources, here),
                                 item.get("port"), _strings(item.get("profiles"), f"{here}.profiles"),
                                 item.get("mode"), health,
                                 None if peers is None else _strings(peers, f"{here}.peers"),
                                 _strings(item.get("env_files"), f"{here}.env_files"))
    for name, service in services.items():
        strangers = [p for p in service.peers or () if p not in services]
        if strangers:
            raise ReleaseSetError(f"{where}: services.{name}.peers: {', '.join(strangers)} are not `services`")
    return services


def _overlays(doc: dict, services: dict[str, Service], where: str) -> dict[str, tuple[str, ...]]:
    overlays: dict[str, tuple[str, ...]] = {}
    clusters = {s.cluster for s in services.values()}
    for cluster, files in (doc.get("overlays") or {}).items():
        here = f"{where}: overlays.{cluster}"
        if cluster not in clusters:
            raise ReleaseSetError(f"{here}: no service of the release lives in cluster {cluster!r}")
        names = _strings(files, here)
        bad = [f for f in names if not _OVERLAY.match(f) or not f.startswith(f"{cluster}.")]
        if bad:
            raise ReleaseSetError(f"{here}: {', '.join(bad)} must be files named {cluster}.<what>.yml")
        overlays[str(cluster)] = names
    return overlays


def _secrets_of(doc: dict, services: dict[str, Service], sources: dict[str, Source], where: str) -> dict[str, Secret]:
    found: dict[str, Secret] = {}
    for name, item in (doc.get("secrets") or {}).items():
        here = f"{where}: secrets.{name}"
        if not _VARIABLE.match(str(name)):
            raise ReleaseSetError(f"{here}: not a variable name")
        form = str(_require(item, "form", here))
        if form not in SECRET_FORMS:
            raise ReleaseSetError(f"{here}: form {form!r} is not one of {', '.join(SECRET_FORMS)}")
        consumers = _require(item, "consumers", here) or {}
        if not isinstance(consumers, dict) or not consumers:
            raise ReleaseSetError(f"{here}: consumers must map service: VARIABLE")
        for service, variable in consumers.items():
            if service not in services or not _VARIABLE.match(str(variable)):
                raise ReleaseSetError(f"{here}: consumer {service}: {variable} is not a service and a variable")
        found[str(name)] = Secret(str(name), form, {str(k): str(v) for k, v in consumers.items()},
                                  _source_ref(_require(item, "source", here), sources, here),
                                  _strings(item.get("public_defaults"), f"{here}.public_defaults"),
                                  bool(item.get("required", True)))
    return found


def _networks(doc: dict, services: dict[str, Service], sources: dict[str, Source], where: str) -> dict[str, Network]:
    found: dict[str, Network] = {}
    for name, item in (doc.get("networks") or {}).items():
        here = f"{where}: networks.{name}"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(name)):
            raise ReleaseSetError(f"{here}: a network key is lower case letters, digits and _")
        members = _strings(_require(item, "members", here), f"{here}.members")
        strangers = [m for m in members if m not in services]
        if strangers:
            raise ReleaseSetError(f"{here}.members: {', '.join(strangers)} are not `services`")
        found[str(name)] = Network(str(name), bool(_require(item, "internal", here)), members,
                                   _source_ref(_require(item, "source", here), sources, here))
    return found


def _queues(doc: dict, sources: dict[str, Source], where: str) -> tuple[tuple[str, ...], str]:
    queues_doc = _require(doc, "queues", where)
    queues = _strings(_require(queues_doc, "names", f"{where}: queues"), f"{where}: queues.names")
    if not queues:
        raise ReleaseSetError(f"{where}: queues.names is empty")
    if len(set(queues)) != len(queues):
        raise ReleaseSetError(f"{where}: queues.names lists a queue twice")
    bad = [q for q in queues if not _QUEUE.match(q)]
    if bad:
        raise ReleaseSetError(f"{where}: queues.names: {', '.join(bad)} are not queue names")
    return queues, _source_ref(_require(queues_doc, "source", f"{where}: queues"), sources, f"{where}: queues")


def _workflow_runs(doc: dict, queues: tuple[str, ...], sources: dict[str, Source], where: str) -> WorkflowRuns | None:
    item = doc.get("workflow_runs")
    if item is None:
        return None
    here = f"{where}: workflow_runs"
    queue = str(_require(item, "queue", here))
    if queue not in queues:
        raise ReleaseSetError(f"{here}: queue {queue!r} is not one of queues.names")
    seconds = _require(item, "default_seconds", here)
    if not isinstance(seconds, int) or seconds <= 0:
        raise ReleaseSetError(f"{here}: default_seconds must be a positive whole number")
    return WorkflowRuns(queue, _strings(_require(item, "limit_variables", here), f"{here}.limit_variables"),
                        seconds, _source_ref(_require(item, "source", here), sources, here))


def _migrations(doc: dict, sources: dict[str, Source], where: str) -> Migrations | None:
    item = doc.get("migrations")
    if item is None:
        return None
    here = f"{where}: migrations"
    return Migrations(_strings(_require(item, "command", here), f"{here}.command"), str(_require(item, "lock", here)),
                      int(_require(item, "lock_ttl_seconds", here)), str(_require(item, "skipped_message", here)),
                      _strings(_require(item, "current_command", here), f"{here}.current_command"),
                      str(_require(item, "head_marker", here)),
                      _source_ref(_require(item, "source", here), sources, here))


def parse(doc: dict, where: str) -> ReleaseSet:
    """A release set from its YAML document; every problem is one line naming the place."""
    if not isinstance(doc, dict):
        raise ReleaseSetError(f"{where}: not a mapping")
    release = str(_require(doc, "release", where))
    if not _VERSION.match(release):
        raise ReleaseSetError(f"{where}: release {release!r} is not a version such as 1.13.3")
    sources = _sources(doc, where)
    images = _images(doc, sources, where)
    services = _services(doc, images, sources, where)
    queues, queues_source = _queues(doc, sources, where)
    routes = []
    for i, item in enumerate(_require(doc, "routes", where) or []):
        here = f"{where}: routes[{i}]"
        to = str(_require(item, "to", here))
        if to not in services:
            raise ReleaseSetError(f"{here}: `to` {to!r} is not one of `services`")
        variable = item.get("upstream_variable")
        if variable is not None and not _VARIABLE.match(str(variable)):
            raise ReleaseSetError(f"{here}: upstream_variable {variable!r} is not a variable name")
        routes.append(Route(str(_require(item, "prefix", here)), to, bool(item.get("websocket", False)),
                            _source_ref(_require(item, "source", here), sources, here),
                            None if variable is None else str(variable), item.get("when")))
    compose = _require(doc, "compose", where)
    floor = tuple(int(p) for p in str(_require(compose, "min_version", f"{where}: compose")).split("."))
    _source_ref(_require(compose, "source", f"{where}: compose"), sources, f"{where}: compose")
    renamed: dict[str, str] = {}
    renamed_sources: dict[str, str] = {}
    items = doc.get("variables_renamed") or {}
    if not isinstance(items, dict):
        raise ReleaseSetError(f"{where}: variables_renamed must map OLD_NAME: NEW_NAME")
    for old, new in items.items():
        if isinstance(new, dict):
            renamed_sources[str(old)] = _source_ref(_require(new, "source", f"{where}: variables_renamed.{old}"),
                                                    sources, f"{where}: variables_renamed.{old}")
            new = _require(new, "to", f"{where}: variables_renamed.{old}")
        if not (_VARIABLE.match(str(old)) and _VARIABLE.match(str(new))) or old == new:
            raise ReleaseSetError(f"{where}: variables_renamed must map OLD_NAME: NEW_NAME ({old}: {new})")
        renamed[str(old)] = str(new)
    defaults: dict[str, str] = {}
    for name, item in (doc.get("defaults") or {}).items():
        here = f"{where}: defaults.{name}"
        if not _VARIABLE.match(str(name)):
            raise ReleaseSetError(f"{here}: not a variable name")
        _source_ref(_require(item, "source", here), sources, here)
        defaults[str(name)] = str(_require(item, "value", here))
    return ReleaseSet(release, floor, sources, images, services, queues, queues_source, tuple(routes),
                      _workflow_runs(doc, queues, sources, where), _migrations(doc, sources, where),
                      renamed, defaults, _overlays(doc, services, where), _secrets_of(doc, services, sources, where),
                      _networks(doc, services, sources, where), renamed_sources, doc)


def files() -> list[Path]:
    return sorted(HERE.glob("dify-*.yaml"))


@lru_cache(maxsize=None)
def load(release: str) -> ReleaseSet:
    """The release set of one supported Dify release."""
    path = HERE / f"dify-{release}.yaml"
    if not _VERSION.match(str(release)) or not path.is_file():
        raise ReleaseSetError(f"Dify {release} has no release set in difyops (supported: {', '.join(supported())}): "
                              "its queues, images and start commands are unknown here; choose a supported "
                              f"release, or add difyops/release_sets/dify-{release}.yaml read from its own files")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ReleaseSetError(f"{path.name}: not valid YAML ({exc})") from None
    rs = parse(doc, path.name)
    if rs.release != release:
        raise ReleaseSetError(f"{path.name}: says release {rs.release}")
    return rs


def supported() -> list[str]:
    """Every release with a set, oldest first."""
    versions = [p.stem.removeprefix("dify-") for p in files()]
    return sorted(versions, key=lambda v: tuple(int(x) for x in v.split(".")))


def default() -> ReleaseSet:
    """The release a fresh deployment runs: the newest supported one."""
    return load(supported()[-1])


def for_version(version: str | None) -> ReleaseSet:
    """The release set of DIFY_VERSION (empty: the default release); refuses a release without one."""
    text = (version or "").strip()
    return load(text) if text else default()


def for_env(env: Mapping[str, str]) -> ReleaseSet:
    """The release set of a deployment's .env (its DIFY_VERSION)."""
    return for_version(env.get("DIFY_VERSION"))


def migrations_of(env: Mapping[str, str]) -> Migrations:
    """The migration facts of a deployment's release (ReleaseSetError for a set that has none)."""
    rs = for_env(env)
    if rs.migrations is None:
        raise ReleaseSetError(f"the release set of Dify {rs.release} records no migration facts (migrations:)")
    return rs.migrations


# ----------------------------------------------------------------------------- what a deployment passes
# The compose files' defaults are the newest supported release's (its images, its gateway
# upstreams); the overlays under compose/ add what later releases have and earlier ones do not.
# For the release a deployment runs, these say what to pass and which files to add.
COMPOSE_DIR = HERE.parent.parent / "compose"


def _release(release: "str | ReleaseSet") -> ReleaseSet:
    return release if isinstance(release, ReleaseSet) else load(str(release))


def image_variables(release: "str | ReleaseSet") -> dict[str, str]:
    """The image variable of every Dify-made image of a release and its official ref:
    {"DIFY_API_IMAGE": "langgenius/dify-api:1.13.3", ...}. Pass them to Compose for any release
    but the newest (the compose files' defaults), unless .env names an image of its own."""
    rs = _release(release)
    return {image.variable: image.ref for image in rs.images.values()}


def serving(rs: ReleaseSet, path: str) -> Route:
    """The route of a release that serves a request path (the longest matching prefix)."""
    matching = [route for route in rs.routes if path.startswith(route.prefix)]
    if not matching:
        raise ReleaseSetError(f"Dify {rs.release}: no route serves {path}")
    return max(matching, key=lambda route: len(route.prefix))


def upstream(rs: ReleaseSet, route: Route) -> str:
    """host:port of the service a route reaches."""
    port = rs.services[route.to].port
    if port is None:
        raise ReleaseSetError(f"Dify {rs.release}: service {route.to} has no port for route {route.prefix}")
    return f"{route.to}:{port}"


def gateway_variables(release: "str | ReleaseSet", newest: "ReleaseSet | None" = None) -> dict[str, str]:
    """The gateway's upstream variables (NGINX_SOCKET_IO_UPSTREAM, NGINX_OPENAPI_UPSTREAM) for a
    release: for each route the newest release sends to an upstream of its own, the service that
    serves that path in this release (api:5001 for /socket.io/ at 1.13.3, web:3000 for /openapi
    before 1.16)."""
    rs = _release(release)
    newest = newest or default()
    found: dict[str, str] = {}
    for route in newest.routes + rs.routes:
        if route.upstream_variable and route.upstream_variable not in found:
            found[route.upstream_variable] = upstream(rs, serving(rs, route.prefix))
    return found


def release_variables(release: "str | ReleaseSet") -> dict[str, str]:
    """Everything that makes the compose files render a release: DIFY_VERSION, the image of every
    Dify service (image_variables) and the gateway's upstreams (gateway_variables). Values .env
    sets itself are the user's: pass these only for keys .env leaves empty (Compose's process
    environment wins over --env-file)."""
    rs = _release(release)
    return {"DIFY_VERSION": rs.release, **image_variables(rs), **gateway_variables(rs)}


def overlay_files(release: "str | ReleaseSet", cluster: str, swarm: bool = False) -> tuple[Path, ...]:
    """The compose files a release adds on top of compose/<cluster>.yml, in order (with
    swarm=True: their Swarm overlays under compose/swarm/, for those that have one)."""
    rs = _release(release)
    names = rs.overlays.get(cluster, ())
    if swarm:
        return tuple(COMPOSE_DIR / "swarm" / name for name in names if (COMPOSE_DIR / "swarm" / name).is_file())
    return tuple(COMPOSE_DIR / name for name in names)


def services_in(release: "str | ReleaseSet", cluster: str) -> tuple[str, ...]:
    """Dify's services of a release that live in a cluster (what `up --wait` must see healthy)."""
    rs = _release(release)
    return tuple(name for name, service in rs.services.items() if service.cluster == cluster)


def renamed_in(env: Mapping[str, str], release: "str | ReleaseSet") -> dict[str, str]:
    """Old variable names a .env still sets (non-empty) that the release renamed: old -> new."""
    rs = _release(release)
    return {old: new for old, new in rs.variables_renamed.items() if (env.get(old) or "").strip()}


# ----------------------------------------------------------------------------- one release, not a mix
# An api of one release beside a plugin daemon of another is one of the most reported upgrade
# failures upstream (an api sending what the daemon does not read: dify#35125, dify-plugin-daemon#696).
ALLOW_MIXED_SETTING = "DIFYOPS_ALLOW_MIXED_RELEASE"


def mixed_allowed(env: Mapping[str, str]) -> bool:
    return (env.get(ALLOW_MIXED_SETTING) or "").strip().lower() in ("1", "true", "yes", "on")


def releases_with(key: str, ref: str) -> list[str]:
    """The supported releases whose `key` image (api, plugin_daemon, ...) is exactly ref, oldest first."""
    return [version for version in supported()
            if (image := load(version).images.get(key)) is not None and image.ref == ref]


def mixed_problems(env: Mapping[str, str]) -> list[str]:
    """One line for each Dify image .env names that is the image of other supported releases but
    not of the release it deploys (DIFY_VERSION): a mixed set, refused unless
    DIFYOPS_ALLOW_MIXED_RELEASE=true. An image no release set names (a local build, the stand-in,
    a mirror's copy under another name) is the user's own choice, not a mix."""
    if mixed_allowed(env):
        return []
    try:
        rs = for_env(env)
    except ReleaseSetError:
        return []  # refused on its own line
    problems = []
    for key, image in rs.images.items():
        value = (env.get(image.variable) or "").strip()
        if not value or value == image.ref:
            continue
        owners = releases_with(key, value)
        if not owners or rs.release in owners:
            continue
        problems.append(
            f"{image.variable}={value} is the {key} image of Dify {' and '.join(owners)}, but DIFY_VERSION="
            f"{rs.release} runs {image.ref}: a mixed release set (Dify's images come from one release); "
            f"empty {image.variable} (the release's own), set DIFY_VERSION to that release, or set "
            f"{ALLOW_MIXED_SETTING}=true to deploy the mix anyway")
    return problems
