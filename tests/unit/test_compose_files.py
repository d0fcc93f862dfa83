"""Static checks of the compose bundle: the rules every cluster file must keep."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from difyops import clusters, paths

FILES = {name: yaml.safe_load(c.file.read_text()) for name, c in clusters.CLUSTERS.items()}
IMAGE_VAR = re.compile(r"^\$\{([A-Z_]+_IMAGE):-([^}]+(?:\}[^}]*)?)\}$")
DEFAULTS = {
    "POSTGRES_IMAGE": "pgvector/pgvector:0.8.0-pg17",
    "REDIS_IMAGE": "redis:6-alpine",
    "DIFY_SANDBOX_IMAGE": "langgenius/dify-sandbox:0.2.14",
    "SSRF_PROXY_IMAGE": "ubuntu/squid:6.6-24.04_beta",
    "DIFY_PLUGIN_DAEMON_IMAGE": "langgenius/dify-plugin-daemon:0.5.3-local",
    "DIFY_API_IMAGE": "langgenius/dify-api:${DIFY_VERSION:-1.13.3}",
    "DIFY_WEB_IMAGE": "langgenius/dify-web:${DIFY_VERSION:-1.13.3}",
    "NGINX_IMAGE": "nginx:1.27.5",
    "CERTBOT_IMAGE": "certbot/certbot:v4.0.0",
}


def services():
    for cluster, doc in FILES.items():
        for name, svc in doc["services"].items():
            yield cluster, name, svc


def test_each_cluster_has_its_file_and_the_services_the_tasks_expect():
    for name, cluster in clusters.CLUSTERS.items():
        doc = FILES[name]
        assert doc["name"] == "${DIFYOPS_STACK:-dify}-" + name
        running = {s for s, svc in doc["services"].items() if not svc.get("profiles")}
        assert running == set(cluster.services)


@pytest.mark.parametrize("cluster,name,svc", list(services()), ids=lambda v: v if isinstance(v, str) else "")
def test_service_rules(cluster, name, svc):
    match = IMAGE_VAR.match(svc["image"])
    assert match, f"{name}: image must come from a *_IMAGE variable"
    assert DEFAULTS[match.group(1)] == match.group(2), f"{name}: default must be the pinned official image"
    assert ":latest" not in svc["image"]
    assert svc["logging"]["options"]["max-size"], f"{name}: logs must rotate"
    assert svc["restart"] in ("unless-stopped", "always", "no")
    if not svc.get("profiles"):
        assert svc["healthcheck"]["test"], f"{name}: needs a healthcheck"
        assert svc["restart"] != "no"


def test_only_the_gateway_publishes_ports_and_only_on_a_chosen_address():
    published = {(cluster, name) for cluster, name, svc in services() if svc.get("ports")}
    assert published == {("gateway", "nginx")}
    for port in FILES["gateway"]["services"]["nginx"]["ports"]:
        assert port.startswith("${NGINX_BIND_ADDRESS:-127.0.0.1}:")


def test_networks_are_shared_external_and_named_by_stack():
    for cluster, doc in FILES.items():
        for key, net in doc["networks"].items():
            assert net == {"name": "${DIFYOPS_STACK:-dify}-" + key, "external": True}
            assert key in clusters.NETWORKS
    assert clusters.NETWORKS["backend"] is True  # the data network is internal
    data_services = FILES["data"]["services"].values()
    assert all(svc["networks"] == ["backend"] for svc in data_services)
    assert FILES["support"]["services"]["sandbox"]["networks"] == ["ssrf"]


def test_data_volumes_are_external_so_down_never_deletes_them():
    for doc in FILES.values():
        for key, vol in (doc.get("volumes") or {}).items():
            assert vol["external"] is True
            assert vol["name"] in {"${DIFYOPS_STACK:-dify}-" + v for v in clusters.VOLUMES}


def test_coupled_secrets_come_from_one_variable():
    support = FILES["support"]["services"]
    api = FILES["api"]["services"]["api"]["environment"]
    assert support["sandbox"]["environment"]["API_KEY"].startswith("${SANDBOX_API_KEY")
    assert support["plugin_daemon"]["environment"]["SERVER_KEY"].startswith("${PLUGIN_DAEMON_KEY")
    assert support["plugin_daemon"]["environment"]["DIFY_INNER_API_KEY"].startswith("${PLUGIN_DIFY_INNER_API_KEY")
    assert api["INNER_API_KEY_FOR_PLUGIN"].startswith("${PLUGIN_DIFY_INNER_API_KEY")


@pytest.mark.skipif(shutil.which("docker") is None or subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="needs the docker compose CLI (no daemon); runs in CI, where .ci/run installs it")
@pytest.mark.parametrize("name", list(clusters.CLUSTERS))
def test_docker_compose_config_passes(name, tmp_path):
    env = tmp_path / ".env"
    env.write_text(paths.ENV_EXAMPLE.read_text())
    result = subprocess.run(
        ["docker", "compose", "-f", str(clusters.CLUSTERS[name].file), "--env-file", str(env), "config", "-q"],
        capture_output=True, text=True, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "DIFYOPS_ENV_FILE": str(env)},
    )
    assert result.returncode == 0, result.stderr
