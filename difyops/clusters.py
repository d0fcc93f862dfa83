"""The clusters of a deployment, the compose command for each, and what they share.

Each cluster is one compose file and one compose project (``<stack>-<cluster>``). The
networks and data volumes they share are created here, outside any project, so one
cluster can go down or be replaced without touching the others or their data.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import paths
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
        Cluster("gateway", ("nginx",), ("app",), (), "nginx: routes, TLS, the only published ports"),
    )
}

# name -> internal? The data and sandbox networks have no route out of the host.
NETWORKS = {"backend": True, "ssrf": True, "app": False}
VOLUMES = ("pgdata", "redisdata", "storage", "plugin-storage")

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
    return f"{settings.stack}-{cluster.name}"


def network_name(settings: Settings, network: str) -> str:
    return f"{settings.stack}-{network}"


def volume_name(settings: Settings, volume: str) -> str:
    return f"{settings.stack}-{volume}"


def compose_env(settings: Settings) -> dict[str, str]:
    """Process environment for compose: it wins over --env-file, so the stack name from
    invoke configuration applies even when .env says otherwise."""
    return {"DIFYOPS_STACK": settings.stack, "DIFYOPS_ENV_FILE": str(settings.env_file)}


def compose_argv(settings: Settings, cluster: Cluster, *args: str, profiles: tuple[str, ...] = ()) -> list[str]:
    argv = [
        "docker", "compose",
        "-f", str(cluster.file),
        "--env-file", str(settings.env_file),
        "-p", project(settings, cluster),
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
