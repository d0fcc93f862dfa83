"""The official settings mapped onto this stack's .env: carried, changed, kept or not carried, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from .. import envfile, paths, tls
from ..config import Settings
from .install import FILE_DEFAULTS, LAYOUT, PUBLIC_DEFAULTS, Install

# Secrets that only connect two services of the stack: the new stack's own generated values.
CONNECTION_SECRETS = ("DB_PASSWORD", "REDIS_PASSWORD", "SANDBOX_API_KEY", "CODE_EXECUTION_API_KEY",
                      "PLUGIN_DAEMON_KEY", "PLUGIN_DIFY_INNER_API_KEY", "WEAVIATE_API_KEY", "PGVECTOR_PASSWORD")


# What each connection secret would break if it were rotated on the official install (the plan's flags).
ROTATION_BREAKS = {
    "SECRET_KEY": "every console and web-app session (everyone signs in again), file links handed out in the "
                  "last FILES_ACCESS_TIMEOUT seconds, and the system OAuth client settings stored encrypted "
                  "with it (tool_oauth_system_clients, trigger_oauth_system_clients)",
    "DB_PASSWORD": "nothing stored: api, worker and the plugin daemon connect with it",
    "REDIS_PASSWORD": "nothing stored: api and worker connect with it (CELERY_BROKER_URL carries it)",
    "SANDBOX_API_KEY": "nothing stored: the api calls the sandbox with it (CODE_EXECUTION_API_KEY)",
    "CODE_EXECUTION_API_KEY": "nothing stored: the api calls the sandbox with it",
    "PLUGIN_DAEMON_KEY": "nothing stored: the api calls the plugin daemon with it",
    "PLUGIN_DIFY_INNER_API_KEY": "nothing stored: the plugin daemon calls the api back with it",
    "WEAVIATE_API_KEY": "nothing stored: the api reaches Weaviate with it",
    "PGVECTOR_PASSWORD": "nothing stored: the api reaches the vector database with it",
    "OCEANBASE_VECTOR_PASSWORD": "nothing stored: the api reaches OceanBase with it",
    "PGVECTOR_POSTGRES_PASSWORD": "nothing stored: it is the official pgvector server's own password (the server "
                                  "does not move, its databases do)",
}


# Official settings this project has no use for: (key, why).
NOT_CARRIED = {
    "COMPOSE_PROFILES": "the official bundle's service selection; this project picks overlays from VECTOR_STORE",
    "COMPOSE_PROJECT_NAME": "the official compose project; this stack's projects are <DIFYOPS_STACK>-<cluster>",
    "PGDATA": "the official PostgreSQL's data folder; the data cluster keeps its own",
    "PGVECTOR_PGUSER": "the official pgvector server's own setting; the vectors move into the data cluster",
    "PGVECTOR_POSTGRES_PASSWORD": "the official pgvector server's own setting; the vectors move into the data cluster",
    "PGVECTOR_POSTGRES_DB": "the official pgvector server's own setting; the vectors move into the data cluster",
    "PGVECTOR_PGDATA": "the official pgvector server's own setting; the vectors move into the data cluster",
    "NGINX_ENABLE_CERTBOT_CHALLENGE": "this gateway always answers certbot's challenge on plain HTTP",
    "EXPOSE_PLUGIN_DEBUGGING_HOST": "this project's gateway does not publish the plugin daemon's debugging port",
    "EXPOSE_PLUGIN_DEBUGGING_PORT": "this project's gateway does not publish the plugin daemon's debugging port",
    "COMPOSE_WORKER_HEALTHCHECK_DISABLED": "the official worker healthcheck switch; this project's worker has its own",
    "COMPOSE_WORKER_HEALTHCHECK_INTERVAL": "the official worker healthcheck switch; this project's worker has its own",
    "COMPOSE_WORKER_HEALTHCHECK_TIMEOUT": "the official worker healthcheck switch; this project's worker has its own",
}


@dataclass
class Setting:
    key: str
    cluster: str
    action: str  # carried, changed, generated, rotated, not carried
    why: str = ""
    value: str | None = None  # what adopt writes (None: the target .env's own value stays)
    secret: bool = False


SECRET_HINTS = ("PASSWORD", "SECRET", "_KEY", "TOKEN", "CREDENTIAL", "ACCESS_KEY")


WEB_KEYS = {"CONSOLE_API_URL", "APP_API_URL", "AMPLITUDE_API_KEY", "NEXT_TELEMETRY_DISABLED",
            "TEXT_GENERATION_TIMEOUT_MS", "CSP_WHITELIST", "ALLOW_EMBED", "ALLOW_UNSAFE_DATA_SCHEME",
            "MARKETPLACE_API_URL", "MARKETPLACE_URL", "TOP_K_MAX_VALUE", "INDEXING_MAX_SEGMENTATION_TOKENS_LENGTH",
            "LOOP_NODE_MAX_COUNT", "MAX_TOOLS_NUM", "MAX_PARALLEL_LIMIT", "MAX_ITERATIONS_NUM", "MAX_TREE_DEPTH",
            "WEB_SENTRY_DSN"}


def is_secret(key: str) -> bool:
    return any(hint in key for hint in SECRET_HINTS)


def cluster_of(key: str) -> str:
    """The cluster whose services read a setting, for the plan's grouping."""
    if key.startswith(("DB_", "POSTGRES_", "REDIS_", "PGVECTOR_", "WEAVIATE_", "SQLALCHEMY_", "VECTOR_")):
        return "data"
    if key.startswith(("SANDBOX_", "SSRF_", "PLUGIN_", "CODE_EXECUTION_", "PIP_MIRROR", "MARKETPLACE_ENABLED",
                       "FORCE_VERIFYING_SIGNATURE", "ENDPOINT_URL_TEMPLATE")):
        return "support"
    if key.startswith(("NGINX_", "CERTBOT_", "EXPOSE_NGINX")):
        return "gateway"
    if key.startswith("NEXT_PUBLIC_") or key in WEB_KEYS:
        return "web"
    if key.startswith("CELERY_"):
        return "worker"
    return "api"


def certbot_cert_path(env: Mapping[str, str], key: str, default: str) -> str | None:
    """With certbot on in the official bundle, nginx reads /etc/letsencrypt/live/<domain>/<file>:
    this project names the file by that absolute path."""
    domain = (env.get("CERTBOT_DOMAIN") or "").strip()
    certbot = (env.get("NGINX_ENABLE_CERTBOT_CHALLENGE") or "").strip().lower() == "true"
    name = (env.get(key) or default).strip()
    if domain and certbot and not name.startswith("/"):
        return f"/etc/letsencrypt/live/{domain}/{name}"
    return None


def map_settings(official: Mapping[str, str], target: Mapping[str, str], *, release: str,
                 vector_database: str | None = None, rotate_secret_key: bool = False,
                 largest_upload: int = 0, weaviate_data: bool = False) -> list[Setting]:
    """Every official setting, and what becomes of it in this project's .env (same names).

    target: the .env this stack has now (generated by env.init when it had none): its layout and
    connection secrets stay; the official install's own choices are carried over it.
    """
    rows: list[Setting] = []
    done = set()

    def add(row: Setting) -> None:
        rows.append(row)
        done.add(row.key)

    add(Setting("DIFY_VERSION", "api", "changed", f"the release set this install maps to ({release})", release))
    for key in CONNECTION_SECRETS:
        if key in official or key in target:
            public = official.get(key) in PUBLIC_DEFAULTS
            why = ("Dify's public example value; " if public else "") + \
                "it only connects two services of this stack, which sets both ends: this stack's own generated value"
            add(Setting(key, cluster_of(key), "generated", why, None, True))
    secret = official.get("SECRET_KEY", "")
    if secret and secret in PUBLIC_DEFAULTS and rotate_secret_key:
        add(Setting("SECRET_KEY", "api", "rotated", "Dify's public example value and nothing stored depends on it: "
                    "a new one is generated (everyone signs in again)", envfile.new_secret(), True))
    elif secret:
        add(Setting("SECRET_KEY", "api", "carried", "carried unchanged: " + ROTATION_BREAKS["SECRET_KEY"]
                    + " depend on it", secret, True))
    for key, why in LAYOUT.items():
        if key in official and key not in done:
            same = official.get(key) == target.get(key)
            add(Setting(key, cluster_of(key), "carried" if same else "changed", "" if same else why,
                        None, is_secret(key) or key == "CELERY_BROKER_URL"))
    for key, why in NOT_CARRIED.items():
        if key in official and key not in done:
            add(Setting(key, cluster_of(key), "not carried", why))
    if vector_database:
        add(Setting("PGVECTOR_HOST", "data", "changed", "the vectors move into the data cluster's PostgreSQL",
                    target.get("DB_HOST", "db_postgres")))
        add(Setting("PGVECTOR_PORT", "data", "changed", "the data cluster's PostgreSQL port", target.get("DB_PORT", "5432")))
        add(Setting("PGVECTOR_USER", "data", "changed", "the data cluster's user (DB_USERNAME)",
                    target.get("DB_USERNAME", "postgres")))
        changed = vector_database != official.get("PGVECTOR_DATABASE")
        add(Setting("PGVECTOR_DATABASE", "data", "changed" if changed else "carried",
                    "the vector database's name is taken by Dify's own database on the one server" if changed else "",
                    vector_database))
    if weaviate_data:
        node = official.get("WEAVIATE_CLUSTER_HOSTNAME") or "node1"
        add(Setting("WEAVIATE_CLUSTER_HOSTNAME", "data", "carried" if "WEAVIATE_CLUSTER_HOSTNAME" in official else "changed",
                    "" if "WEAVIATE_CLUSTER_HOSTNAME" in official else
                    "the official node's name (its compose default): Weaviate finds the data only under it", node))
    for key in ("NGINX_SSL_CERT_FILENAME", "NGINX_SSL_CERT_KEY_FILENAME"):
        if key in done:
            continue
        path = certbot_cert_path(official, key, "fullchain.pem" if "KEY" not in key else "privkey.pem")
        if path:
            add(Setting(key, "gateway", "changed", "certbot's certificate, by the path this gateway reads it at", path))
    body = official.get("NGINX_CLIENT_MAX_BODY_SIZE", "")
    if body and "NGINX_CLIENT_MAX_BODY_SIZE" not in done:
        limit = envfile.parse_size(body)
        if limit is not None and limit != 0 and limit < largest_upload:
            add(Setting("NGINX_CLIENT_MAX_BODY_SIZE", "gateway", "changed",
                        f"{body} is below the largest upload allowed (users got 413s): empty, so the gateway "
                        "derives it from the upload limits", ""))
    for key in sorted(official):
        if key in done:
            continue
        if official[key] in PUBLIC_DEFAULTS:
            add(Setting(key, cluster_of(key), "not carried", "Dify's public example value, for a service this "
                        "stack does not run (this project refuses public secrets)"))
            continue
        add(Setting(key, cluster_of(key), "carried", "", official[key], is_secret(key)))
    https = tls.https_enabled(official)
    bind = target.get("NGINX_BIND_ADDRESS") or "127.0.0.1"
    if https and bind in ("127.0.0.1", "::1", "localhost", ""):
        rows.append(Setting("NGINX_BIND_ADDRESS", "gateway", "changed",
                            "the official gateway served every address, with HTTPS: so does this one", "0.0.0.0"))
    elif bind in ("127.0.0.1", "::1", "localhost", ""):
        rows.append(Setting("NGINX_BIND_ADDRESS", "gateway", "kept",
                            f"the official gateway served plain HTTP on every address; this one binds {bind} until "
                            "you set NGINX_BIND_ADDRESS=0.0.0.0 with HTTPS on (or DIFYOPS_ALLOW_HTTP=true behind a "
                            "TLS proxy): users elsewhere reach it only then"))
    return rows


def public_secrets(official: Mapping[str, str]) -> list[str]:
    """The official settings still holding Dify's public example values, each with what rotating
    it would break (the plan's flags)."""
    out = []
    for key in sorted(official):
        if official[key] in PUBLIC_DEFAULTS:
            breaks = ROTATION_BREAKS.get(key, "nothing this project knows of: check what else reads it")
            out.append(f"{key} is Dify's public example value: anyone can use it. Rotating it breaks {breaks}")
    return out


def written_values(rows: Iterable[Setting]) -> dict[str, str]:
    return {row.key: row.value for row in rows if row.value is not None and row.action in ("carried", "changed", "rotated")}


def target_base_text(settings: Settings) -> str:
    """The .env the mapping starts from: the stack's own, or one generated from .env.example."""
    if settings.env_file.is_file():
        return settings.env_file.read_text()
    return envfile.generate(paths.ENV_EXAMPLE.read_text(), {"DIFYOPS_STACK": settings.stack})


def vector_plan(install: Install) -> tuple[str, list[str]]:
    """(what happens, problems) for the install's vector store."""
    store = install.vector_store
    if store == "weaviate":
        source = install.services.get("weaviate")
        mount = source.mount_for("/var/lib/weaviate") if source else None
        folder = mount.source if mount else install.dir / FILE_DEFAULTS["weaviate"]
        node = install.env.get("WEAVIATE_CLUSTER_HOSTNAME") or "node1"
        return (f"Weaviate: its data folder {folder} is copied byte for byte into the Weaviate overlay's "
                f"first node (volume weaviate-0, compose/data-weaviate.yml), which then runs under the official "
                f"node's name {node} (WEAVIATE_CLUSTER_HOSTNAME): Weaviate keys its schema and shards by node "
                "name, so the data is found only under it, and its backups restore only onto as many nodes as "
                "they were taken on. Existing collections keep the one copy they had, on that node; new ones get "
                "WEAVIATE_REPLICATION_FACTOR copies. Validated statically only: Weaviate cannot run where this "
                "project is tested", [])
    if store == "pgvector":
        if "pgvector" not in install.services:
            return ("pgvector: the vectors are in a PostgreSQL outside the bundle: not moved, the settings are "
                    "carried", [])
        return ("pgvector: the official pgvector server's databases move with PostgreSQL, into the data "
                "cluster's PostgreSQL 17 (pgvector 0.8), the same dump, restore and table-by-table check", [])
    if store in install.services:
        return ("", [f"VECTOR_STORE={store}: the official install runs {store} itself and this project has no "
                     f"{store} overlay to move it into; switch it to weaviate or pgvector first "
                     "(Dify's `flask vdb-migrate`), then adopt"])
    return (f"{store}: outside the bundle, not moved; its settings are carried", [])


def vector_database_name(install: Install, main_databases: Iterable[str] = ("dify", "dify_plugin")) -> str | None:
    """The name the pgvector server's database gets in the data cluster (None: no pgvector server)."""
    if install.vector_store != "pgvector" or "pgvector" not in install.services:
        return None
    name = install.env.get("PGVECTOR_DATABASE") or "dify"
    taken = set(main_databases) | {install.env.get("DB_DATABASE") or "dify", install.env.get("DB_PLUGIN_DATABASE") or "dify_plugin"}
    return f"{name}_vector" if name in taken else name
