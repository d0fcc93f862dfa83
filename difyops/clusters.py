"""The clusters of a deployment, the compose command for each, and what they share.

Each cluster is one compose file and one compose project (``<stack>-<cluster>``). The
networks and data volumes they share are created here, outside any project, so one
cluster can go down or be replaced without touching the others or their data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from . import dotenv, envfile, ha, paths, release_sets, tls
from .config import Settings
from .errors import DifyopsError


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
                ("plugin-storage", "sandbox-dependencies"), "code sandbox, SSRF proxy, plugin daemon"),
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
# certbot-www and letsencrypt: certbot's challenge folder and its account and certificates;
# sandbox-dependencies: the sandbox's python-requirements.txt.
VOLUMES = ("pgdata", "redisdata", "storage", "plugin-storage", "certbot-www", "letsencrypt", "sandbox-dependencies")

STACK_LABEL = "io.difyops.stack"


class UnknownCluster(DifyopsError):
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


# ----------------------------------------------------------------------------- the deployment's release
def release(settings: Settings) -> release_sets.ReleaseSet:
    """The Dify release a deployment runs: the release set of its DIFY_VERSION (empty: the default,
    newest one). ReleaseSetError (one line) for a release without a set."""
    return release_sets.for_env(settings.env)


def release_overlays(settings: Settings, cluster: Cluster, swarm: bool = False) -> tuple[Path, ...]:
    """The compose files the deployment's release adds to a cluster (compose/api.websocket.yml, ...;
    with swarm=True their Swarm overlays)."""
    return release_sets.overlay_files(release(settings), cluster.name, swarm=swarm)


def release_env(settings: Settings) -> dict[str, str]:
    """What makes the compose files render the deployment's release (release_sets.release_variables:
    DIFY_VERSION, the image of every Dify service, the gateway's upstreams), for every key .env
    leaves empty: a value the user set in .env is theirs and wins. Renamed variables: the old
    name's value under the new name, when the new one is empty."""
    rs = release(settings)
    env = {key: value for key, value in release_sets.release_variables(rs).items() if not settings.get(key)}
    # Old names the release renamed are mapped: the new name gets the old one's value when .env
    # leaves the new one empty (envfile.renamed_notes says so; `invoke env.migrate` renames them).
    for old, new in release_sets.renamed_in(settings.env, rs).items():
        if not settings.get(new):
            env[new] = settings.env[old]
    return env


def services_of(settings: Settings, cluster: Cluster) -> tuple[str, ...]:
    """The services a cluster runs for the deployment's release: its own, then those its release's
    overlays add (api_websocket, agent_backend, local_sandbox, agent_ssrf_proxy)."""
    extra = tuple(s for s in release_sets.services_in(release(settings), cluster.name) if s not in cluster.services)
    return cluster.services + extra


def network_key(name: str) -> str:
    """A release set's network key as the bundle names it (agent_sandbox -> agent-sandbox)."""
    return name.replace("_", "-")


def release_networks(settings: Settings, clusters: "Iterable[Cluster]") -> dict[str, bool]:
    """The networks of the deployment's release (release set `networks`) that the given clusters'
    services join, by bundle name (agent-sandbox): name -> internal?"""
    rs = release(settings)
    names = {c.name for c in clusters}
    return {network_key(key): net.internal for key, net in sorted(rs.networks.items())
            if any(rs.services[m].cluster in names for m in net.members)}


def every_release_network() -> dict[str, bool]:
    """Every network any supported release has (what taking a stack down removes, whichever release
    it ran)."""
    found: dict[str, bool] = {}
    for version in release_sets.supported():
        for key, net in release_sets.load(version).networks.items():
            found[network_key(key)] = net.internal
    return found


def cluster_networks(settings: Settings, cluster: Cluster) -> dict[str, bool]:
    """Every network a cluster's services join: its own (NETWORKS) and its release's. name -> internal?"""
    return {**{n: NETWORKS[n] for n in cluster.networks}, **release_networks(settings, [cluster])}


def network_internal(network: str) -> bool:
    """Whether a network of the bundle (its own or a release's) has no route out of the host."""
    if network in NETWORKS:
        return NETWORKS[network]
    known = every_release_network()
    if network not in known:
        raise DifyopsError(f"unknown network {network!r}")
    return known[network]


def volume_name(settings: Settings, volume: str) -> str:
    return f"{settings.stack}-{volume}"


def dify_env_file(settings: Settings) -> Path:
    """The env_file of Dify's api, worker and beat: .env without difyops' own variables
    (envfile.is_ops_variable), rendered to var/<stack>/dify.env (mode 0600) whenever it changed.
    One mechanism for every compose command (compose_env calls it): a Dify variable added to
    .env reaches them; a backup, monitoring or HA secret never does."""
    from . import releases

    path = releases.state_dir(settings) / "dify.env"
    if settings.compose is not None:
        text = envfile.dify_env_text(settings.dify_values())
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            dotenv.write_private(path, text)
    return path


def compose_env(settings: Settings) -> dict[str, str]:
    """Process environment for compose: it wins over --env-file, so the stack name from
    invoke configuration applies even when .env says otherwise."""
    from . import releases

    # Replica counts chosen with prod.scale win over .env, so a redeploy keeps them.
    # The release's images and gateway upstreams for what .env leaves empty (release_env).
    return {**release_env(settings), "DIFYOPS_STACK": settings.stack, "DIFYOPS_ENV_FILE": str(settings.env_file),
            "DIFYOPS_DIFY_ENV_FILE": str(dify_env_file(settings)),
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
    if cluster.name != "gateway" or not tls.https_enabled(settings.env):
        return []
    return ["-f", str(paths.COMPOSE_DIR / "gateway.https.yml")]


def plugin_debugging_file_args(settings: Settings, cluster: Cluster) -> list[str]:
    """The plugin daemon's debugging port is published on the host only when
    DIFYOPS_PLUGIN_DEBUGGING_ADDRESS names an address (compose/support.debug.yml)."""
    if cluster.name != "support" or not settings.get("DIFYOPS_PLUGIN_DEBUGGING_ADDRESS").strip():
        return []
    return ["-f", str(paths.COMPOSE_DIR / "support.debug.yml")]


TARGETS = ("compose", "swarm")
SWARM_DIR = paths.COMPOSE_DIR / "swarm"


def swarm_overlay(cluster: Cluster) -> Path:
    """compose/swarm/<cluster>.yml: placement, updates and secrets hints for `--target swarm`."""
    return SWARM_DIR / f"{cluster.name}.yml"


def compose_argv(settings: Settings, cluster: Cluster, *args: str, profiles: tuple[str, ...] = (),
                 project_name: str | None = None, target: str = "compose") -> list[str]:
    """`docker compose` for a cluster, the one rendering of it for both targets: its file, the
    overlays of the deployment's Dify release (release_sets.overlay_files: api_websocket, the New
    Agent, ...), the overlays .env turns on (HA data layer, Weaviate, HTTPS, the plugin debugging
    port), the size preset, .env; for ``target="swarm"`` the cluster's Swarm overlay and its
    release overlays' last (swarm.to_stack turns the result into a stack file). project_name picks
    another release than the live one. Run it with compose_env (the release's images)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")
    swarm = target == "swarm"
    argv = [
        "docker", "compose",
        "-f", str(cluster.file),
        *[arg for overlay in release_overlays(settings, cluster) for arg in ("-f", str(overlay))],
        # Overlays (DIFYOPS_DATA_HA, VECTOR_STORE=weaviate) go on top of the cluster's own file.
        *[arg for overlay in ha.overlay_files(settings.env, cluster.name) for arg in ("-f", str(overlay))],
        *https_file_args(settings, cluster),
        *plugin_debugging_file_args(settings, cluster),
        *(["-f", str(swarm_overlay(cluster))] if swarm else []),
        *[arg for overlay in (release_overlays(settings, cluster, swarm=True) if swarm else ())
          for arg in ("-f", str(overlay))],
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
    if network_internal(network):
        argv.append("--internal")
    return argv + [network_name(settings, network)]


def volume_create_argv(settings: Settings, volume: str) -> list[str]:
    return ["docker", "volume", "create", "--label", f"{STACK_LABEL}={settings.stack}",
            volume_name(settings, volume)]
