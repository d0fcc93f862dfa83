"""The clusters of a deployment, the compose command for each, and what they share.

Each cluster is one compose file and one compose project (``<stack>-<cluster>``). The
networks and data volumes they share are created here, outside any project, so one
cluster can go down or be replaced without touching the others or their data.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ha, paths
from .config import Settings


@dataclass(frozen=True)
class Cluster:
    name: str
    services: tuple[str, ...]
    networks: tuple[str, ...]
    volumes: tuple[str, ...] = ()
    summary: str = ""

    @property
    def file(self):
        return paths.COMPOSE_DIR / f"{self.name}.yml"


# Deployment order: each cluster needs the ones before it.
CLUSTERS: dict[str, Cluster] = {
    c.name: c
    for c in (
        Cluster("data", ("db_postgres", "redis"), ("backend",), ("pgdata", "redisdata"),
                "PostgreSQL with pgvector, Redis"),
        Cluster("support", ("sandbox", "ssrf_proxy", "plugin_daemon"), ("backend", "ssrf", "app"),
                ("plugin-storage",), "code sandbox, SSRF proxy, plugin daemon"),
        Cluster("api", ("api",), ("backend", "ssrf", "app"), ("storage",), "Dify API (gunicorn + gevent)"),
        Cluster("worker", ("worker", "worker_beat"), ("backend", "ssrf", "app"), ("storage",),
                "Celery workers and beat"),
        Cluster("web", ("web",), ("app",), (), "Dify web (Next.js)"),
        Cluster("gateway", ("nginx",), ("app",), ("certbot-www", "letsencrypt"),
                "nginx: routes, TLS, the only published ports"),
    )
}

# name -> internal? The data and sandbox networks have no route out of the host.
NETWORKS = {"backend": True, "ssrf": True, "app": False}
# certbot-www and letsencrypt: certbot's challenge folder and its account and certificates.
VOLUMES = ("pgdata", "redisdata", "storage", "plugin-storage", "certbot-www", "letsencrypt")

STACK_LABEL = "io.difyops.stack"


class UnknownCluster(ValueError):
    pass


def select(names: str | None) -> list[Cluster]:
    """Clusters named in a comma-separated list (all when empty), in deployment order."""
    if not names:
        return list(CLUSTERS.values())
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in CLUSTERS]
    if unknown:
        raise UnknownCluster(
            f"unknown cluster {', '.join(unknown)}: choose from {', '.join(CLUSTERS)}"
        )
    return [c for c in CLUSTERS.values() if c.name in wanted]


def project(settings: Settings, cluster: Cluster) -> str:
    """The cluster's live compose project: ``<stack>-<cluster>``, or the release an upgrade moved
    to (releases.py keeps which; this is the one place that asks)."""
    from . import releases

    return releases.active_project(settings, cluster.name)


def network_name(settings: Settings, network: str) -> str:
    return f"{settings.stack}-{network}"


def volume_name(settings: Settings, volume: str) -> str:
    return f"{settings.stack}-{volume}"


def compose_env(settings: Settings) -> dict[str, str]:
    """Process environment for compose: it wins over --env-file, so the stack name from
    invoke configuration applies even when .env says otherwise."""
    from . import releases

    # Replica counts chosen with prod.scale win over .env, so a redeploy keeps them.
    return {"DIFYOPS_STACK": settings.stack, "DIFYOPS_ENV_FILE": str(settings.env_file),
            **releases.replica_env(settings)}


SIZES = ("small", "medium", "large")


def size_env_args(settings: Settings) -> list[str]:
    """`--env-file compose/sizes/<size>.env` for DIFYOPS_SIZE, before .env so .env's own limits win.
    Empty (or unknown, which pre-flight reports): none, and the compose files' defaults (medium) apply."""
    size = settings.get("DIFYOPS_SIZE")
    if size not in SIZES:
        return []
    return ["--env-file", str(paths.COMPOSE_DIR / "sizes" / f"{size}.env")]


def https_file_args(settings: Settings, cluster: Cluster) -> list[str]:
    """The gateway publishes its HTTPS port only with HTTPS on (compose/gateway.https.yml)."""
    https = settings.get("NGINX_HTTPS_ENABLED", "false").strip().lower() in ("1", "true", "yes", "on")
    if cluster.name != "gateway" or not https:
        return []
    return ["-f", str(paths.COMPOSE_DIR / "gateway.https.yml")]


def compose_argv(settings: Settings, cluster: Cluster, *args: str, profiles: tuple[str, ...] = (),
                 project_name: str | None = None) -> list[str]:
    """`docker compose` for a cluster; project_name picks another release than the live one."""
    argv = [
        "docker", "compose",
        "-f", str(cluster.file),
        # Overlays (DIFYOPS_DATA_HA, VECTOR_STORE=weaviate) go on top of the cluster's own file.
        *[arg for overlay in ha.overlay_files(settings.env, cluster.name) for arg in ("-f", str(overlay))],
        *https_file_args(settings, cluster),
        *size_env_args(settings),
        "--env-file", str(settings.env_file),
        "-p", project_name or project(settings, cluster),
    ]
    for profile in profiles:
        argv += ["--profile", profile]
    return argv + list(args)


def network_create_argv(settings: Settings, network: str) -> list[str]:
    argv = ["docker", "network", "create", "--driver", "bridge",
            "--label", f"{STACK_LABEL}={settings.stack}"]
    if NETWORKS[network]:
        argv.append("--internal")
    return argv + [network_name(settings, network)]


def volume_create_argv(settings: Settings, volume: str) -> list[str]:
    return ["docker", "volume", "create", "--label", f"{STACK_LABEL}={settings.stack}",
            volume_name(settings, volume)]
