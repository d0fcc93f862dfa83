"""The .env file: what its values mean for the deployment, generate it from .env.example with
fresh secrets, and check it. Reading and writing are difyops.dotenv's (Compose's rules).

Secrets are generated here and written only to the file (mode 0600); they are never printed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from . import dotenv, ha
from .dotenv import KNOWN_PUBLIC_DEFAULTS
from .errors import DifyopsError

PLACEHOLDER = "!!!GENERATED!!!"

# Every secret the deployment needs, generated independently.
SECRET_KEYS = (
    "SECRET_KEY",
    "DB_PASSWORD",
    "REDIS_PASSWORD",
    "SANDBOX_API_KEY",
    "PLUGIN_DAEMON_KEY",
    "PLUGIN_DIFY_INNER_API_KEY",
)

# Secrets that two services must share: (follower, leader). The follower is written equal
# to the leader by env.init and compared by env.check. A condition, when given, says when
# the pair is coupled at all.
COUPLED = (
    ("CODE_EXECUTION_API_KEY", "SANDBOX_API_KEY", None),
    ("PGVECTOR_PASSWORD", "DB_PASSWORD", lambda env: env.get("PGVECTOR_HOST") == env.get("DB_HOST")),
)

REQUIRED = SECRET_KEYS + ("CODE_EXECUTION_API_KEY", "CELERY_BROKER_URL", "DB_HOST", "REDIS_HOST")

UPLOAD_LIMITS_MB = (
    "UPLOAD_FILE_SIZE_LIMIT",
    "UPLOAD_IMAGE_FILE_SIZE_LIMIT",
    "UPLOAD_VIDEO_FILE_SIZE_LIMIT",
    "UPLOAD_AUDIO_FILE_SIZE_LIMIT",
)

# ---------------------------------------------------------------- difyops' own variables
# .env holds Dify's variables (its own names) and difyops' (backups, monitoring, the HA layer, images,
# sizes, Swarm, the gateway's hardening). Dify's containers get only Dify's: the api, worker and beat
# through var/<stack>/dify.env (clusters.dify_env_file), the others through explicit lists. None of
# these names is one Dify 1.13.3 reads (docker/.env.example at 0055b983 has none of them).
OPS_PREFIXES = ("DIFYOPS_", "PATRONI_", "GRAFANA_", "ALERTMANAGER_", "PROMETHEUS_", "LOKI_", "MONITORING_",
                "NODE_EXPORTER_", "HAPROXY_", "RESTIC_", "SWARM_", "WORKER_")
OPS_SUFFIXES = ("_IMAGE", "_CPU_LIMIT", "_MEM_LIMIT", "_STOP_GRACE_PERIOD")
OPS_KEYS = frozenset({
    "DIFY_VERSION", "API_REPLICAS", "WEB_REPLICAS", "GATEWAY_REPLICAS", "UPGRADE_MIN_FREE_GB",
    "PLUGIN_DAEMON_SWARM_ROLE", "ETCD_INITIAL_CLUSTER", "DB_READONLY_HOST", "DB_READONLY_PORT",
    "WEAVIATE_REPLICATION_FACTOR", "NGINX_BIND_ADDRESS", "NGINX_SSL_DIR", "NGINX_HSTS_MAX_AGE",
    "NGINX_CERT_RELOAD_INTERVAL", "NGINX_LOGIN_RATE", "NGINX_LOGIN_BURST", "NGINX_API_RATE", "NGINX_API_BURST",
    "NGINX_CONN_LIMIT",
})


def is_ops_variable(key: str) -> bool:
    """True for difyops' own settings, which no Dify container reads (and must not see)."""
    return key in OPS_KEYS or key.startswith(OPS_PREFIXES) or key.endswith(OPS_SUFFIXES)


# The services that get the whole Dify env file (dify.env): the api image's.
ENV_FILE_READERS = frozenset({"api", "api_websocket", "worker", "worker_beat"})


def foreign_secrets() -> frozenset[str]:
    """Secrets of any supported release that none of the api image's services reads (the agent
    backend's server key, the local sandbox's token, the sandbox's and plugin daemon's keys): the
    services that read them get them by name in compose/*.yml, so dify.env leaves them out."""
    from . import release_sets  # noqa: PLC0415

    found: set[str] = set()
    for version in release_sets.supported():
        for name, secret in release_sets.load(version).secrets.items():
            if not ENV_FILE_READERS & set(secret.consumers):
                found.add(name)
    return frozenset(found)


def dify_env_text(values: Mapping[str, str]) -> str:
    """The env_file of Dify's api, worker and beat: ``values`` (what `env_file: .env` gives a
    service) without difyops' own variables and without the secrets only other services read
    (foreign_secrets), each written so that Compose reads it back exactly."""
    banner = dotenv.parse("# Rendered by difyops from .env: Dify's variables only (difyops' own are left out).\n"
                          "# Do not edit: every invoke task that runs compose writes it again.\n", {})
    foreign = foreign_secrets()
    return dotenv.update(banner, {k: v for k, v in values.items() if not is_ops_variable(k) and k not in foreign})


# ---------------------------------------------------------------- public URLs
# The public origin users reach Dify at (env.init --url), and Dify's URL settings derived from it
# (docker/.env.example of Dify 1.13.3, commit 0055b983). Empty is not "same domain" for all of them:
# file previews and plugin file access need FILES_URL, webhooks are {TRIGGER_URL}/triggers/webhook/<id>,
# plugin endpoints ENDPOINT_URL_TEMPLATE (Dify's default http://localhost/e/{hook_id}), links to web
# apps and human-input forms APP_WEB_URL, collaboration NEXT_PUBLIC_SOCKET_URL (default ws://localhost).
PUBLIC_URL_SETTING = "DIFYOPS_PUBLIC_URL"
PUBLIC_URL_KEYS = ("CONSOLE_API_URL", "CONSOLE_WEB_URL", "SERVICE_API_URL", "APP_API_URL", "APP_WEB_URL",
                   "FILES_URL", "TRIGGER_URL")
ENDPOINT_TEMPLATE_KEY = "ENDPOINT_URL_TEMPLATE"
SOCKET_URL_KEY = "NEXT_PUBLIC_SOCKET_URL"


def public_origin(text: str) -> str:
    """`https://host[:port]` from what a user typed, or ValueError saying what is wrong with it."""
    raw = (text or "").strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{raw!r} is not a URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{raw!r} is not an http(s) origin such as https://dify.example.com")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{raw!r} carries a user name or password: give only scheme://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise ValueError(f"{raw!r} has a path, query or fragment: Dify's routes sit at the origin's root, "
                         "give only scheme://host[:port]")
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def public_url_values(origin: str) -> dict[str, str]:
    """Every public URL setting of Dify for one origin (and the origin itself, kept for env.check)."""
    origin = public_origin(origin)
    socket_scheme = "wss" if origin.startswith("https:") else "ws"
    values = {PUBLIC_URL_SETTING: origin}
    values.update({key: origin for key in PUBLIC_URL_KEYS})
    values[ENDPOINT_TEMPLATE_KEY] = f"{origin}/e/{{hook_id}}"
    values[SOCKET_URL_KEY] = socket_scheme + origin[origin.index(":"):]
    return values


def _same_url(value: str, expected: str) -> bool:
    return value.strip().rstrip("/") == expected.rstrip("/")


def url_problems(env: Mapping[str, str]) -> list[str]:
    """Public URLs that are malformed, or that disagree with DIFYOPS_PUBLIC_URL when it is set."""
    problems = []
    for key in (*PUBLIC_URL_KEYS, ENDPOINT_TEMPLATE_KEY):
        value = env.get(key, "")
        if value and urlsplit(value).scheme not in ("http", "https"):
            problems.append(f"{key}={value!r} is not an http(s) URL such as https://dify.example.com")
    template = env.get(ENDPOINT_TEMPLATE_KEY, "")
    if template and "{hook_id}" not in template:
        problems.append(f"{ENDPOINT_TEMPLATE_KEY}={template!r} lacks {{hook_id}}: plugin endpoint URLs would be wrong")
    socket_url = env.get(SOCKET_URL_KEY, "")
    if socket_url and urlsplit(socket_url).scheme not in ("ws", "wss"):
        problems.append(f"{SOCKET_URL_KEY}={socket_url!r} is not a ws:// or wss:// URL")
    origin = env.get(PUBLIC_URL_SETTING, "")
    if not origin:
        return problems
    try:
        expected = public_url_values(origin)
    except ValueError as exc:
        return problems + [f"{PUBLIC_URL_SETTING}: {exc}"]
    for key, want in expected.items():
        if key == PUBLIC_URL_SETTING:
            continue
        value = env.get(key, "")
        if not value:
            problems.append(f"{key} is empty but {PUBLIC_URL_SETTING}={expected[PUBLIC_URL_SETTING]}: "
                            f"empty is not the same domain for Dify; set {key}={want}")
        elif not _same_url(value, want):
            problems.append(f"{key}={value} disagrees with {PUBLIC_URL_SETTING}={expected[PUBLIC_URL_SETTING]}: "
                            f"set {key}={want} (or change {PUBLIC_URL_SETTING})")
    return problems


# ---------------------------------------------------------------- Dify's split env layout
# From Dify 1.14 its bundle takes settings from docker/envs/**/*.env (each `required: false`) and
# docker/.env last; Compose reads a service's env_file entries in order, later ones winning. The order
# is the release set's (`env_files` of each service, read in docker-compose-template.yaml of Dify
# 1.16.1 at 06ac11a1): the api's list first (shared, api, security, databases, vector stores,
# infrastructure), then the files only other services read (worker, worker-beat, web, sandbox,
# plugin-daemon, dify-agent, local-sandbox), in the order of the release's services.
def split_layout_order(release: "str | None" = None) -> tuple[str, ...]:
    """The envs/ files of Dify's split layout in the order they are read into one env (.env after them)."""
    from . import release_sets  # noqa: PLC0415

    sets = [release_sets.for_version(release)] if release else []
    sets.append(release_sets.default())
    for rs in sets:
        order: list[str] = []
        for service in rs.services.values():
            for name in service.env_files:
                if name.startswith("envs/") and name.endswith(".env") and name not in order:
                    order.append(name)
        if order:
            return tuple(order)
    return ()


def read_split_layout(folder: Path, release: "str | None" = None) -> tuple[dict[str, str], list[Path]]:
    """One effective env from a Dify docker/ folder: its envs/**/*.env in Dify's order
    (split_layout_order), then any other envs/**/*.env it has (a user's own; .example files are
    not settings), then .env, later files winning as in Compose. Each file is read as Compose reads
    it (difyops.dotenv; DotenvError naming the line for one it refuses). Returns (env, files read)."""
    folder = Path(folder)
    envs = folder / "envs"
    named = [folder / name for name in split_layout_order(release)]
    sources = [path for path in named if path.is_file()]
    if envs.is_dir():
        sources += sorted(path for path in envs.rglob("*.env") if path.is_file() and path not in named)
    if (folder / ".env").is_file():
        sources.append(folder / ".env")
    merged: dict[str, str] = {}
    for path in sources:
        merged.update(read(path))
    return merged, sources


def read(path: Path, environ: Mapping[str, str] | None = None, *,
         earlier: Sequence[Path] = ()) -> dict[str, str]:
    """An env file's keys with the values `${KEY}` has in a compose file run with ``environ`` as
    its process environment (which wins over the file, as in Compose) and ``earlier`` as the
    `--env-file` files before it. DotenvError (one line naming the line) for a file Compose
    refuses; an empty mapping for a missing file."""
    composed = load(path, environ, earlier=earlier)
    return {} if composed is None else project_values(composed)


def load(path: Path, environ: Mapping[str, str] | None = None, *,
         earlier: Sequence[Path] = ()) -> dotenv.ComposeEnv | None:
    """Both of Compose's readings of an env file (None when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return None
    return dotenv.load([*earlier, path], dict(environ or {}))


def project_values(composed: dotenv.ComposeEnv) -> dict[str, str]:
    """The last file's keys with their `${KEY}` values (the project reading)."""
    return {key: composed.project[key] for key in composed.dotenv.values}


def values_of(text: str | bytes, source: str = ".env") -> dict[str, str]:
    """An env file's text read as Compose reads it, with nothing from the environment."""
    return dict(dotenv.parse(text, {}, source=source).values)


def with_values(text: str | bytes, values: Mapping[str, str], comment: str | None = None,
                source: str = ".env") -> str:
    """``text`` with ``values`` set where each key is (new keys appended after ``comment``),
    comments and order kept, quoted to read back exactly (dotenv.update)."""
    return dotenv.update(dotenv.parse(text, {}, source=source), dict(values), comment=comment)


def assignments(pairs: Sequence[str] | None, flag: str = "--set") -> dict[str, str]:
    """`--set KEY=VALUE` (repeatable) as a mapping; DifyopsError for one that is not KEY=VALUE."""
    values = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DifyopsError(f"{flag} {pair!r} is not KEY=VALUE")
        values[key.strip()] = value
    return values


def new_secret() -> str:
    """32 random bytes, hex: safe inside URLs, shells and Compose interpolation."""
    return secrets.token_hex(32)


def broker_password(url: str) -> str | None:
    """The password inside a redis:// or rediss:// CELERY_BROKER_URL, if that is its form."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("redis", "rediss"):
        return None
    return parts.password or ""


def with_broker_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "redis"
    port = f":{parts.port}" if parts.port else ""
    user = parts.username or ""
    return f"{parts.scheme}://{user}:{password}@{host}{port}{parts.path}"


def generated_keys(example: dotenv.DotEnv) -> list[str]:
    """Keys the example marks with the placeholder and that get a fresh secret of their own
    (followers of coupled pairs and the broker URL are derived instead)."""
    derived = {follower for follower, _, _ in COUPLED} | {"CELERY_BROKER_URL"}
    return [key for key, value in example.values.items() if PLACEHOLDER in value and key not in derived]


def release_secret_values(values: Mapping[str, str], keep: Sequence[str] = ()) -> dict[str, str]:
    """A fresh value, in the form its services accept (release_sets.Secret.generate), for every
    secret of the release of ``values`` (its DIFY_VERSION) that is empty or a placeholder there,
    except the keys in ``keep``. None for a release without a set (env.check and pre-flight refuse it)."""
    from . import release_sets  # noqa: PLC0415

    try:
        rs = release_sets.for_env(values)
    except release_sets.ReleaseSetError:
        return {}
    return {name: secret.generate() for name, secret in rs.secrets.items()
            if name not in keep and (not (values.get(name) or "").strip() or PLACEHOLDER in values.get(name, ""))}


def generate(example_text: str, overrides: dict[str, str] | None = None) -> str:
    """Render .env text from the example: placeholders replaced, coupled secrets equal; comments,
    order and the example's layout kept, every value quoted so that Compose reads it back exactly.

    ``overrides`` set values of existing keys (or append new ones) before coupling, so a
    caller can choose, say, the images or the port while the secrets stay generated.
    """
    example = dotenv.parse(example_text, {}, source=".env.example")
    overrides = dict(overrides or {})
    values = {**example.values, **overrides}
    # The secrets of the release (DIFY_VERSION), each in its own form (the agent backend's server
    # key is unpadded base64url of 32 bytes, not hex); then every other placeholder.
    release = release_secret_values(values, keep=list(overrides))
    values.update(release)
    for key in generated_keys(example):
        if key not in overrides and key not in release:
            values[key] = new_secret()
    for follower, leader, condition in COUPLED:
        if follower not in overrides and (condition is None or condition(values)):
            values[follower] = values[leader]
    broker = values.get("CELERY_BROKER_URL", "")
    if "CELERY_BROKER_URL" not in overrides and broker_password(broker.replace(PLACEHOLDER, "x")) is not None:
        values["CELERY_BROKER_URL"] = with_broker_password(broker.replace(PLACEHOLDER, "x"), values["REDIS_PASSWORD"])
    # DIFYOPS_DATA_HA=true: Dify's sentinel settings follow (docs/ha.md); explicit --set values win.
    ha_values = {k: v for k, v in ha.dify_settings(values).items() if k not in overrides}
    values.update(ha_values)

    text = dotenv.update(example, {k: values[k] for k in example.values if values[k] != example.values[k]})
    extra = {k: v for k, v in overrides.items() if k not in example.values}
    if extra:
        text = dotenv.update(dotenv.parse(text, {}), extra, comment="Set by env.init --set")
    derived = {k: values[k] for k in ha_values if k not in example.values and k not in extra}
    if derived:
        text = dotenv.update(dotenv.parse(text, {}), derived, comment=f"Set by env.init for {ha.HA_SETTING}=true")
    return text


def parse_size(text: str) -> int | None:
    """nginx size syntax (100M, 1g, 512k, 1048576) in bytes; 0 means unlimited; None if invalid."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", text or "")
    if not match:
        return None
    number, unit = int(match.group(1)), match.group(2).lower()
    return number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def largest_upload_bytes(env: Mapping[str, str]) -> tuple[int, str]:
    """The largest upload Dify accepts under this env, in bytes, and the setting that allows it."""
    best = (0, "")
    for key in UPLOAD_LIMITS_MB:
        raw = env.get(key, "")
        if raw.strip().isdigit():
            best = max(best, (int(raw) * 1024**2, key))
    raw = env.get("PLUGIN_MAX_PACKAGE_SIZE", "")
    if raw.strip().isdigit():
        best = max(best, (int(raw), "PLUGIN_MAX_PACKAGE_SIZE"))
    return best


# The secrets env.check holds to dotenv.strength (ha.problems checks the HA layer's own).
SECRETS = SECRET_KEYS + ("CODE_EXECUTION_API_KEY",)


def strength_problems(env: Mapping[str, str]) -> list[str]:
    """Secrets too short or too plain to be secrets (missing ones, placeholders and public defaults
    have lines of their own)."""
    problems = []
    for key in SECRETS:
        value = env.get(key, "")
        if not value or PLACEHOLDER in value or value in KNOWN_PUBLIC_DEFAULTS:
            continue
        if len(value) < dotenv.strength.MIN_LENGTH:
            problems.append(f"{key} is only {len(value)} characters: use at least {dotenv.strength.MIN_LENGTH} "
                            "random ones (`invoke env.init` generates 64)")
            continue
        why = dotenv.weakness(value)
        if why:
            problems.append(f"{key} {why}: not a secret; `invoke env.init` generates 64 random characters")
    return problems


def check(env: Mapping[str, str]) -> list[str]:
    """Every problem with a parsed env, one message each; empty when it is fine."""
    problems = ha.problems(env, PLACEHOLDER)
    for key in REQUIRED:
        value = env.get(key, "")
        if not value:
            problems.append(f"{key} is missing or empty: run `invoke env.init` or set it")
        elif PLACEHOLDER in value:
            problems.append(f"{key} is still the placeholder {PLACEHOLDER}: run `invoke env.init`")
    for key, value in sorted(env.items()):
        if value in KNOWN_PUBLIC_DEFAULTS:
            problems.append(f"{key} is a public default from Dify's example file: generate a new one")
    problems += strength_problems(env)
    for follower, leader, condition in COUPLED:
        if condition is not None and not condition(env):
            continue
        if env.get(follower) and env.get(leader) and env[follower] != env[leader]:
            problems.append(f"{follower} differs from {leader}: the two services could not talk")
    broker = env.get("CELERY_BROKER_URL", "")
    password = broker_password(broker)
    if password is not None and PLACEHOLDER not in broker and env.get("REDIS_PASSWORD"):
        host = urlsplit(broker).hostname
        if host == env.get("REDIS_HOST", "redis") and password != env["REDIS_PASSWORD"]:
            problems.append("CELERY_BROKER_URL does not carry REDIS_PASSWORD: workers could not reach the broker")
    body = env.get("NGINX_CLIENT_MAX_BODY_SIZE", "")
    if body:
        limit = parse_size(body)
        largest, source = largest_upload_bytes(env)
        if limit is None:
            problems.append(f"NGINX_CLIENT_MAX_BODY_SIZE={body!r} is not an nginx size such as 100M")
        elif limit != 0 and limit < largest:
            problems.append(
                f"NGINX_CLIENT_MAX_BODY_SIZE={body} is below {source} ({largest // 1024**2} MB): uploads "
                "would fail with 413; raise it or leave it empty to derive it"
            )
    for key in UPLOAD_LIMITS_MB + ("PLUGIN_MAX_PACKAGE_SIZE",):
        raw = env.get(key, "")
        if raw and not raw.strip().isdigit():
            problems.append(f"{key}={raw!r} is not a whole number")
    problems += url_problems(env)
    problems += release_problems(env)
    return problems


def release_problems(env: Mapping[str, str]) -> list[str]:
    """The .env against its release set (DIFY_VERSION): a release without a set; each secret the
    release needs that is missing or not in the form its services accept (Secret.problem), one line
    each (never the value); Dify images of another release (release_sets.mixed_problems); old
    variable names the release renamed (renamed_problems)."""
    from . import release_sets  # noqa: PLC0415

    try:
        rs = release_sets.for_env(env)
    except release_sets.ReleaseSetError as exc:
        return [f"DIFY_VERSION: {exc}"]
    problems = []
    old_names = {new: old for old, new in release_sets.renamed_in(env, rs).items()}
    for name, secret in rs.secrets.items():
        value = env.get(name, "") or env.get(old_names.get(name, ""), "")  # mapped from its old name
        if name in REQUIRED and (not value or PLACEHOLDER in value):
            continue  # its line is above
        if value in KNOWN_PUBLIC_DEFAULTS:
            continue  # likewise
        if PLACEHOLDER in value:
            problems.append(f"{name} is still the placeholder {PLACEHOLDER}: run `invoke env.init`")
            continue
        why = secret.problem(value)
        if why:
            hint = "run `invoke env.migrate` to generate it" if not value.strip() else "generate a new one"
            problems.append(f"{why} (Dify {rs.release}: {', '.join(sorted(secret.consumers))}); {hint}")
    return problems + release_sets.mixed_problems(env) + renamed_problems(env)


def _renamed(env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    from . import release_sets  # noqa: PLC0415

    try:
        rs = release_sets.for_env(env)
    except release_sets.ReleaseSetError:
        return "", {}
    return rs.release, release_sets.renamed_in(env, rs)


def renamed_problems(env: Mapping[str, str]) -> list[str]:
    """An old name the release renamed set beside its new name to another value: which one the user
    means is unclear (the new one is used), one line each."""
    release, renamed = _renamed(env)
    return [f"{old} and {new} are both set and differ: Dify {release} reads {new} (the new name of {old}), "
            f"which the bundle uses; remove {old} (or run `invoke env.migrate`)"
            for old, new in renamed.items() if (env.get(new) or "").strip() and env[new] != env[old]]


def renamed_notes(env: Mapping[str, str]) -> list[str]:
    """Old names the release renamed that .env still sets, mapped to the new name (not problems)."""
    release, renamed = _renamed(env)
    return [f"{old} is read as {new} (renamed by Dify {release}; `invoke env.migrate` renames it in .env)"
            for old, new in renamed.items() if not (env.get(new) or "").strip()]


def migrated(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """.env text moved to its release's names and secrets: each old name the release renamed is
    carried to its new name (the value, when the new one is empty) and commented out; each secret the
    release needs and lacks is generated in its form. Returns the text and what changed (names only)."""
    release, renamed = _renamed(env)
    changes: dict[str, str] = {}
    done: list[str] = []
    for old, new in renamed.items():
        if not (env.get(new) or "").strip():
            changes[new] = env[old]
            done.append(f"{old} -> {new}")
        else:
            done.append(f"{old} dropped ({new} is set)")
    secrets_ = release_secret_values(env) if release else {}
    changes.update(secrets_)
    done += [f"{name} generated" for name in secrets_]
    parsed = dotenv.parse(text, {})
    out = dotenv.update(parsed, {k: v for k, v in changes.items() if k in parsed.values}) if changes else text
    extra = {k: v for k, v in changes.items() if k not in parsed.values}
    if extra:
        out = dotenv.update(dotenv.parse(out, {}), extra, comment=f"Set by env.migrate for Dify {release}")
    if renamed:
        lines = out.splitlines(keepends=True)
        names = tuple(f"{old}=" for old in renamed) + tuple(f"export {old}=" for old in renamed)
        out = "".join(f"# renamed by env.migrate: {line}" if line.lstrip().startswith(names) else line
                      for line in lines)
    return out, done
