"""Static checks of the compose bundle: the rules every cluster file, and every overlay a Dify
release adds to one (difyops/release_sets `overlays`), must keep."""

from __future__ import annotations

import re

import pytest
import yaml

from difyops import clusters, paths, release_sets
from difyops.config import load_settings

from release_view import needs_compose, render

FILES = {name: yaml.safe_load(c.file.read_text()) for name, c in clusters.CLUSTERS.items()}
OVERLAYS = sorted({path for release in release_sets.supported() for cluster in clusters.CLUSTERS
                   for path in release_sets.overlay_files(release, cluster)})
OVERLAY_DOCS = {path.name: yaml.safe_load(path.read_text()) for path in OVERLAYS}
IMAGE_VAR = re.compile(r"^\$\{([A-Z_]+_IMAGE):-([^}]+(?:\}[^}]*)?)\}$")
NEWEST = release_sets.default()
# The pinned official images: Dify's from the newest release set, the middleware's below.
DEFAULTS = {
    "POSTGRES_IMAGE": "pgvector/pgvector:0.8.0-pg17",
    "REDIS_IMAGE": "redis:6-alpine",
    "SSRF_PROXY_IMAGE": "ubuntu/squid:6.6-24.04_beta",
    "NGINX_IMAGE": "nginx:1.27.5",
    "CERTBOT_IMAGE": "certbot/certbot:v4.0.0",
    **{image.variable: (f"{image.repository}:${{DIFY_VERSION:-{NEWEST.release}}}" if image.tag == NEWEST.release
                        else image.ref) for image in NEWEST.images.values()},
}
# Networks a release adds beyond clusters.NETWORKS, and whether each is internal.
RELEASE_NETWORKS = {key: net.internal for r in release_sets.supported()
                    for key, net in release_sets.load(r).networks.items()}


def services():
    for cluster, doc in FILES.items():
        for name, svc in doc["services"].items():
            yield cluster, name, svc
    for file, doc in OVERLAY_DOCS.items():
        for name, svc in doc["services"].items():
            if "image" in svc:  # a service the overlay adds (not settings for one of the base file)
                yield file, name, svc


def test_each_cluster_has_its_file_and_the_services_the_tasks_expect():
    for name, cluster in clusters.CLUSTERS.items():
        doc = FILES[name]
        assert doc["name"] == "${DIFYOPS_STACK:-dify}-" + name
        running = {s for s, svc in doc["services"].items() if not svc.get("profiles")}
        assert running == set(cluster.services)


def test_overlays_add_to_the_services_of_their_cluster_only():
    for path in OVERLAYS:
        cluster = path.name.split(".", 1)[0]
        base = FILES[cluster]["services"]
        for name, svc in OVERLAY_DOCS[path.name]["services"].items():
            assert name in base or "image" in svc, f"{path.name}: {name} is neither a {cluster} service nor a new one"
            if name in base:  # settings for a base service: environment only
                assert set(svc) == {"environment"}, f"{path.name}: {name} changes {sorted(set(svc) - {'environment'})}"
        assert "name" not in OVERLAY_DOCS[path.name], f"{path.name} must not rename the project"


@pytest.mark.parametrize("where,name,svc", list(services()), ids=lambda v: v if isinstance(v, str) else "")
def test_service_rules(where, name, svc):
    match = IMAGE_VAR.match(svc["image"])
    assert match, f"{name}: image must come from a *_IMAGE variable"
    assert DEFAULTS[match.group(1)] == match.group(2), f"{name}: default must be the pinned official image"
    assert ":latest" not in svc["image"]
    assert svc["logging"]["options"]["max-size"], f"{name}: logs must rotate"
    assert svc["restart"] in ("unless-stopped", "always", "no")
    if not svc.get("profiles"):
        assert svc["healthcheck"]["test"], f"{name}: needs a healthcheck"
        assert svc["restart"] != "no"
    if where.endswith(".yml"):  # a service a later release adds: the house rules, all of them
        assert svc["security_opt"] == ["no-new-privileges:true"], name
        limits = svc["deploy"]["resources"]["limits"]
        assert re.fullmatch(r"\$\{[A-Z_]+_CPU_LIMIT:-[\d.]+\}", limits["cpus"]), name
        assert re.fullmatch(r"\$\{[A-Z_]+_MEM_LIMIT:-\d+[mg]\}", limits["memory"]), name
        assert not svc.get("ports"), f"{name} publishes a port"


def test_only_the_gateway_publishes_ports_and_only_on_a_chosen_address():
    published = {(cluster, name) for cluster, name, svc in services() if svc.get("ports")}
    assert published == {("gateway", "nginx")}
    for port in FILES["gateway"]["services"]["nginx"]["ports"]:
        assert port.startswith("${NGINX_BIND_ADDRESS:-127.0.0.1}:")


def test_networks_are_shared_external_and_named_by_stack():
    for doc in [*FILES.values(), *OVERLAY_DOCS.values()]:
        for key, net in (doc.get("networks") or {}).items():
            assert net == {"name": "${DIFYOPS_STACK:-dify}-" + key.replace("_", "-"), "external": True}
            assert key in clusters.NETWORKS or key in RELEASE_NETWORKS, key
    assert clusters.NETWORKS["backend"] is True  # the data network is internal
    assert all(RELEASE_NETWORKS.values())  # and every network a release adds
    data_services = FILES["data"]["services"].values()
    assert all(svc["networks"] == ["backend"] for svc in data_services)
    assert FILES["support"]["services"]["sandbox"]["networks"] == ["ssrf"]


def test_data_volumes_are_external_so_down_never_deletes_them():
    for doc in [*FILES.values(), *OVERLAY_DOCS.values()]:
        for _key, vol in (doc.get("volumes") or {}).items():
            assert vol["external"] is True
            assert vol["name"] in {"${DIFYOPS_STACK:-dify}-" + v for v in clusters.VOLUMES}


def test_coupled_secrets_come_from_one_variable():
    support = FILES["support"]["services"]
    api = FILES["api"]["services"]["api"]["environment"]
    assert support["sandbox"]["environment"]["API_KEY"].startswith("${SANDBOX_API_KEY")
    assert support["plugin_daemon"]["environment"]["SERVER_KEY"].startswith("${PLUGIN_DAEMON_KEY")
    assert support["plugin_daemon"]["environment"]["DIFY_INNER_API_KEY"].startswith("${PLUGIN_DIFY_INNER_API_KEY")
    assert api["INNER_API_KEY_FOR_PLUGIN"].startswith("${PLUGIN_DIFY_INNER_API_KEY")
    agent = OVERLAY_DOCS["support.agent.yml"]["services"]
    assert agent["agent_backend"]["environment"]["DIFY_AGENT_PLUGIN_DAEMON_API_KEY"].startswith("${PLUGIN_DAEMON_KEY")
    assert agent["agent_backend"]["environment"]["DIFY_AGENT_INNER_API_KEY"].startswith("${PLUGIN_DIFY_INNER_API_KEY")
    assert agent["local_sandbox"]["environment"]["SHELLCTL_AUTH_TOKEN"].startswith("${DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN")


def test_every_size_preset_sizes_the_services_later_releases_add():
    names = set(re.findall(r"\$\{([A-Z_]+_(?:CPU|MEM)_LIMIT):-", "".join(p.read_text() for p in OVERLAYS)))
    assert names >= {"API_WEBSOCKET_CPU_LIMIT", "AGENT_BACKEND_MEM_LIMIT", "LOCAL_SANDBOX_CPU_LIMIT",
                     "AGENT_SSRF_PROXY_MEM_LIMIT"}
    for size in clusters.SIZES:
        keys = set(re.findall(r"^([A-Z_]+)=", (paths.COMPOSE_DIR / "sizes" / f"{size}.env").read_text(), re.M))
        assert names <= keys, (size, sorted(names - keys))
    medium = dict(re.findall(r"^([A-Z_]+)=(\S+)$", (paths.COMPOSE_DIR / "sizes" / "medium.env").read_text(), re.M))
    text = "".join(p.read_text() for p in OVERLAYS)
    for name in names:  # medium is the compose defaults
        assert f"${{{name}:-{medium[name]}}}" in text, name


@needs_compose
@pytest.mark.parametrize("release", release_sets.supported())
@pytest.mark.parametrize("name", list(clusters.CLUSTERS))
def test_docker_compose_config_passes(name, release, tmp_path):
    render(release, name, tmp_path)


@needs_compose
def test_docker_compose_config_passes_with_the_plain_env_example(tmp_path):
    """.env.example as it is (no release variables passed): every cluster file renders."""
    import subprocess

    env = tmp_path / ".env"
    env.write_text(paths.ENV_EXAMPLE.read_text())
    for cluster in clusters.CLUSTERS.values():
        result = subprocess.run(
            ["docker", "compose", "-f", str(cluster.file), "--env-file", str(env), "config", "-q"],
            capture_output=True, text=True,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", **clusters.compose_env(load_settings(None, env))})
        assert result.returncode == 0, result.stderr
