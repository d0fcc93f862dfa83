"""What a restore carries and keeps: the set's settings against this server's, PostgreSQL roles, what changed."""

from __future__ import annotations

import re

from .. import backup as bk
from .. import clusters as cl
from .. import ha

# Keys of the .env that describe the server rather than the deployment. --config keeps this server's
# values; on a new server (no .env) the folders take .env.example's and the rest the set's.
SERVER_PATH_KEYS = ("DIFYOPS_BACKUP_DIR", "DIFYOPS_BACKUP_AGE_IDENTITY", "DIFYOPS_BACKUP_CERTS_DIR",
                    "NODE_EXPORTER_TEXTFILE_DIR", "NGINX_SSL_DIR", "DIFYOPS_BUILD_CA_BUNDLE")


SERVER_NETWORK_KEYS = ("NGINX_BIND_ADDRESS", "EXPOSE_NGINX_PORT", "EXPOSE_NGINX_SSL_PORT", "DIFYOPS_ALLOW_HTTP",
                       "MONITORING_BIND_ADDRESS", "PROMETHEUS_PORT", "ALERTMANAGER_PORT", "GRAFANA_PORT",
                       "DIFYOPS_IMAGE_MIRROR", "DIFYOPS_DEBIAN_MIRROR")


SERVER_KEYS = ("DIFYOPS_STACK",) + SERVER_PATH_KEYS + SERVER_NETWORK_KEYS


RESTIC_KEY = "DIFYOPS_BACKUP_RESTIC_REPOSITORY"  # this server's when it is a local folder


# What the running data layer was created with: a restore onto it cannot change these.
FIXED_KEYS = (("DB_USERNAME", "postgres"), ("DB_HOST", "db_postgres"), ("DB_PORT", "5432"),
              ("REDIS_HOST", "redis"), ("REDIS_PORT", "6379"))


USERS = (("api", ()), ("worker", ()), ("support", ("plugin_daemon",)))  # what reads and writes the data


STARTED_AGAIN = ("support", "api", "worker")  # after the data cluster; web and gateway when they changed


MONITORING_READERS = ("postgres-exporter", "redis-exporter")  # monitoring services holding stack secrets


ASIDE = bk.ASIDE_PREFIX  # .difyops-pre-restore-


UNDONE = ".difyops-undone-"


class RestoreFailed(bk.BackupError):
    """The restore failed after it started changing the stack; the message says what was put back."""


def is_local_repository(value: str) -> bool:
    return bool(value) and "://" not in value and not re.match(r"^[a-z0-9]+:", value)


def server_values(set_env: dict[str, str], current: dict[str, str] | None, stack: str,
                  example: dict[str, str]) -> dict[str, str]:
    """The values SERVER_KEYS take in the restored .env: this server's (current .env; a key it does
    not set becomes empty, its default), or on a new server (current None) .env.example's folders
    and the set's network settings. The stack is always the one restored into."""
    if current is not None:
        values = {key: current.get(key, "") for key in SERVER_KEYS}
        if is_local_repository(set_env.get(RESTIC_KEY, "")):
            values[RESTIC_KEY] = current.get(RESTIC_KEY, "")
    else:
        values = {key: example.get(key, "") for key in SERVER_PATH_KEYS}
        if is_local_repository(set_env.get(RESTIC_KEY, "")):
            values[RESTIC_KEY] = example.get(RESTIC_KEY, "")
    values["DIFYOPS_STACK"] = stack
    return values


def role_passwords(env: dict[str, str]) -> list[tuple[str, str]]:
    """(role, key of its password) for each PostgreSQL role of the data cluster the stack logs in as:
    Dify's (also the plugin daemon's, the backups' and the exporter's), pgvector's when it is another
    role on the same server, Patroni's replication role with the HA data layer."""
    main = env.get("DB_USERNAME") or "postgres"
    roles = [(main, "DB_PASSWORD")]
    vector_host = env.get("PGVECTOR_HOST") or ""
    if (env.get("VECTOR_STORE") or "pgvector") == "pgvector" and vector_host in (env.get("DB_HOST") or "db_postgres",
                                                                                  "db_postgres"):
        user = env.get("PGVECTOR_USER") or "postgres"
        if user != main:
            roles.append((user, "PGVECTOR_PASSWORD"))
    if ha.enabled(env):
        roles.append((env.get("PATRONI_REPLICATION_USERNAME") or "replicator", "PATRONI_REPLICATION_PASSWORD"))
    return roles


def role_changes(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str]]:
    """The roles whose password the restored .env changes: (role, key of its new password)."""
    before = {role: old.get(key, "") for role, key in role_passwords(old)}
    return [(role, key) for role, key in role_passwords(new) if before.get(role) != new.get(key, "")]


def fixed_problems(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """What the restored .env would change in the running data layer that a restore cannot."""
    problems = []
    for key, default in FIXED_KEYS:
        was, wants = old.get(key) or default, new.get(key) or default
        if was != wants:
            problems.append(f"the set's .env has {key}={wants}, this stack runs {key}={was}: a restore does not "
                            f"rebuild the data layer; deploy this server with {key}={wants} first "
                            "(`invoke env.init --set ...`), or restore without --config")
    overlays_was = [p.name for p in ha.overlay_files(old, "data")]
    overlays_wants = [p.name for p in ha.overlay_files(new, "data")]
    if overlays_was != overlays_wants:
        problems.append(f"the set's .env deploys the data cluster with {', '.join(overlays_wants) or 'no overlay'}, this "
                        f"stack runs {', '.join(overlays_was) or 'no overlay'} ({ha.HA_SETTING}, VECTOR_STORE): deploy this "
                        "server with the set's data layer first, or restore without --config")
    return problems


def changed_clusters(before: dict[str, dict], after: dict[str, dict]) -> list[str]:
    """Clusters whose rendered compose configuration differs (each: services as `compose config` gives)."""
    return [name for name in cl.CLUSTERS if before.get(name) != after.get(name)]
