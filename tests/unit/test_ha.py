"""The HA data layer without Docker: overlay selection, Dify's sentinel settings in .env, the overlay
files' rules, `docker compose config` of every overlay combination, and prod tasks through MockContext."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import OK, commands, fail_result, load_compose, mock_context, write_env
from invoke import Result
from invoke.exceptions import Exit

from difyops import clusters, envfile, ha, paths
from difyops.config import load_settings
from difyops.tasks import prod

HA_FILE = paths.COMPOSE_DIR / "data-ha.yml"
WEAVIATE_FILE = paths.COMPOSE_DIR / "data-weaviate.yml"
IMAGE_VAR = re.compile(r"^\$\{([A-Z_]+_IMAGE):-([^}]+)\}$")
OVERLAY_DEFAULTS = {
    "PATRONI_IMAGE": "ghcr.io/zalando/spilo-17:4.0-p2",
    "ETCD_IMAGE": "quay.io/coreos/etcd:v3.5.16",
    "HAPROXY_IMAGE": "haproxy:3.0.10",
    "REDIS_IMAGE": "redis:6-alpine",
    "WEAVIATE_IMAGE": "semitechnologies/weaviate:1.27.0",
    "REDIS_EXPORTER_IMAGE": "oliver006/redis_exporter:v1.69.0-alpine",  # redis-sentinel-exporter
}


def generated(tmp_path, **overrides):
    path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1", **overrides)
    return path, envfile.read(path)


# ----------------------------------------------------------------------------- .env


def test_single_node_stays_the_default(tmp_path):
    _, env = generated(tmp_path)
    assert not ha.enabled(env)
    assert env["REDIS_USE_SENTINEL"] == "false" and env["CELERY_BROKER_URL"].startswith("redis://")
    assert ha.overlay_files(env, "data") == []
    assert envfile.check(env) == []


def test_ha_env_gets_difys_sentinel_settings_and_its_own_secrets(tmp_path):
    _, env = generated(tmp_path, DIFYOPS_DATA_HA="true")
    assert env["REDIS_USE_SENTINEL"] == "true" and env["CELERY_USE_SENTINEL"] == "true"
    assert env["REDIS_SENTINELS"] == "redis-sentinel-1:26379,redis-sentinel-2:26379,redis-sentinel-3:26379"
    assert env["REDIS_SENTINEL_SERVICE_NAME"] == env["CELERY_SENTINEL_MASTER_NAME"] == "dify-redis"
    parts = env["CELERY_BROKER_URL"].split(";")
    assert len(parts) == 3
    assert all(p == f"sentinel://:{env['REDIS_PASSWORD']}@redis-sentinel-{i}:26379/1" for i, p in enumerate(parts, 1))
    secrets = [env[k] for k in ha.GENERATED]
    assert all(re.fullmatch(r"[0-9a-f]{64}", s) for s in secrets) and len(set(secrets)) == len(secrets)
    assert env["CELERY_SENTINEL_PASSWORD"] == env["REDIS_SENTINEL_PASSWORD"]
    assert envfile.check(env) == []


def test_explicit_values_win_over_the_derived_ones(tmp_path):
    _, env = generated(tmp_path, DIFYOPS_DATA_HA="true", REDIS_SENTINEL_SERVICE_NAME="mymaster")
    assert env["REDIS_SENTINEL_SERVICE_NAME"] == env["CELERY_SENTINEL_MASTER_NAME"] == "mymaster"


@pytest.mark.parametrize("change,message", [
    ({"REDIS_USE_SENTINEL": "false"}, "REDIS_USE_SENTINEL is not true"),
    ({"CELERY_BROKER_URL": "redis://:x@redis:6379/1"}, "is not sentinel://"),
    ({"PATRONI_REPLICATION_PASSWORD": envfile.PLACEHOLDER}, "PATRONI_REPLICATION_PASSWORD is missing or a placeholder"),
    ({"CELERY_SENTINEL_PASSWORD": "other"}, "CELERY_SENTINEL_PASSWORD differs"),
    ({"DB_HOST": "patroni-1"}, "the leader is reached through db_postgres"),
])
def test_check_names_each_ha_problem(tmp_path, change, message):
    _, env = generated(tmp_path, DIFYOPS_DATA_HA="true")
    env.update(change)
    problems = envfile.check(env)
    assert any(message in p for p in problems), problems


def test_check_refuses_a_sentinel_url_without_the_redis_password(tmp_path):
    _, env = generated(tmp_path, DIFYOPS_DATA_HA="true")
    env["CELERY_BROKER_URL"] = ha.sentinel_broker_url("wrong")
    assert any("does not carry REDIS_PASSWORD" in p for p in envfile.check(env))


def test_weaviate_needs_its_key(tmp_path):
    _, env = generated(tmp_path, VECTOR_STORE="weaviate")
    assert re.fullmatch(r"[0-9a-f]{64}", env["WEAVIATE_API_KEY"]) and envfile.check(env) == []
    env["WEAVIATE_API_KEY"] = ""
    assert any("WEAVIATE_API_KEY" in p for p in envfile.check(env))


# ----------------------------------------------------------------------------- the overlay files


def overlay_services():
    for path in (HA_FILE, WEAVIATE_FILE):
        doc = load_compose(path)
        for name, svc in doc["services"].items():
            if name in ("db_postgres", "redis"):  # HA overrides of data.yml services
                continue
            yield path.name, name, svc


@pytest.mark.parametrize("file,name,svc", list(overlay_services()), ids=lambda v: v if isinstance(v, str) else "")
def test_overlay_service_rules(file, name, svc):
    match = IMAGE_VAR.match(svc["image"])
    assert match and OVERLAY_DEFAULTS[match.group(1)] == match.group(2), f"{name}: pinned official default"
    assert svc["logging"]["options"]["max-size"] and svc["restart"] == "unless-stopped"
    assert svc["healthcheck"]["test"] and svc["healthcheck"]["start_interval"]
    assert "ports" not in svc, f"{name}: the data layer publishes nothing"


def test_ha_front_and_primary_keep_difys_service_names():
    doc = load_compose(HA_FILE)
    front = doc["services"]["db_postgres"]
    assert IMAGE_VAR.match(front["image"]).group(1) == "HAPROXY_IMAGE"
    assert front["healthcheck"]["start_interval"] and "ports" not in front
    assert "--masterauth" in doc["services"]["redis"]["command"]


def test_ha_networks_are_internal_and_volumes_external():
    for path in (HA_FILE, WEAVIATE_FILE):
        doc = load_compose(path)
        for _key, net in (doc.get("networks") or {}).items():
            assert net.get("internal") is True or net.get("external") is True
        for _key, vol in (doc.get("volumes") or {}).items():
            assert vol["external"] is True
            assert vol["name"] in {"${DIFYOPS_STACK:-dify}-" + v for v in ha.VOLUMES}


def test_patroni_settings_follow_env():
    text = HA_FILE.read_text()
    for setting in ("PATRONI_TTL:-20", "PATRONI_LOOP_WAIT:-2", "PATRONI_RETRY_TIMEOUT:-5",
                    "PATRONI_SYNCHRONOUS_MODE:-true", "checkpoint: fast", "GET /primary"):
        assert setting in text or setting in (paths.COMPOSE_DIR / "data/haproxy/haproxy.cfg").read_text()
    cfg = (paths.COMPOSE_DIR / "data/haproxy/haproxy.cfg").read_text()
    assert "option httpchk GET /primary" in cfg and "option httpchk GET /replica" in cfg
    assert "option srvtcpka" in cfg and "option clitcpka" in cfg  # the bounds: tests/unit/test_ha_failover.py


COMPOSE = shutil.which("docker") is not None and subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not COMPOSE, reason="needs the docker compose CLI (no daemon); runs in CI, where .ci/run installs it")
@pytest.mark.parametrize("overlays,profile", [
    (["data-ha.yml"], None),
    (["data-ha.yml"], "ha3"),
    (["data-weaviate.yml"], None),
    (["data-ha.yml", "data-weaviate.yml"], None),
])
def test_docker_compose_config_passes_for_each_overlay(tmp_path, overlays, profile):
    env_path, _ = generated(tmp_path, DIFYOPS_DATA_HA="true", VECTOR_STORE="weaviate")
    argv = ["docker", "compose", "-f", str(paths.COMPOSE_DIR / "data.yml")]
    for overlay in overlays:
        argv += ["-f", str(paths.COMPOSE_DIR / overlay)]
    argv += ["--env-file", str(env_path)] + (["--profile", profile] if profile else []) + ["config", "--services"]
    result = subprocess.run(argv, capture_output=True, text=True,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "DIFYOPS_ENV_FILE": str(env_path)})
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    if "data-weaviate.yml" in overlays:
        assert {"weaviate-0", "weaviate-1", "weaviate-2"} <= services
    if "data-ha.yml" in overlays:
        assert {"patroni-1", "patroni-2", "etcd-1", "redis-replica", "redis-sentinel-3"} <= services
        assert ("patroni-3" in services) == (profile == "ha3")


# ----------------------------------------------------------------------------- tasks


def test_compose_argv_adds_the_overlays_only_when_asked(tmp_path):
    path, _ = generated(tmp_path)
    single = clusters.compose_argv(load_settings(None, path), clusters.CLUSTERS["data"], "up")
    assert "data-ha.yml" not in " ".join(single)
    path, _ = generated(tmp_path, DIFYOPS_DATA_HA="true")
    settings = load_settings(None, path)
    argv = clusters.compose_argv(settings, clusters.CLUSTERS["data"], "up")
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "-f"]
    assert files == [str(paths.COMPOSE_DIR / "data.yml"), str(paths.COMPOSE_DIR / "data-ha.yml")]
    api = clusters.compose_argv(settings, clusters.CLUSTERS["api"], "up")
    assert "data-ha.yml" not in " ".join(api)


def ha_deploy_context(env_path, **extra):
    results = {r"docker info": Result("26.1.5"), r"docker compose version": Result("2.26.1"),
               r"config --images": Result("img:1"), r"docker image inspect": Result("sha256:x"),
               r"docker (network|volume) inspect": fail_result(), r"docker (network|volume) create": OK,
               r" up -d --wait": OK, **extra}
    return mock_context(env_path, results)


def test_deploy_data_with_ha_uses_the_overlay_and_creates_its_volumes(tmp_path, monkeypatch):
    monkeypatch.setattr("difyops.probes.shutil.which", lambda name: f"/usr/bin/{name}")
    path, _ = generated(tmp_path, DIFYOPS_DATA_HA="true")
    c = ha_deploy_context(path)
    prod.deploy(c, clusters="data")
    ran = commands(c)
    up = [cmd for cmd in ran if " up -d --wait" in cmd]
    assert len(up) == 1 and "-f " + str(paths.COMPOSE_DIR / "data-ha.yml") in up[0]
    created = {cmd.split()[-1] for cmd in ran if "docker volume create" in cmd}
    assert {"unit-pgdata-1", "unit-pgdata-2", "unit-etcd-1", "unit-redisdata-2"} <= created


def test_deploy_with_ha_and_a_missing_secret_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("difyops.probes.shutil.which", lambda name: f"/usr/bin/{name}")
    path, _ = generated(tmp_path, DIFYOPS_DATA_HA="true", PATRONI_RESTAPI_PASSWORD="")
    c = ha_deploy_context(path)
    with pytest.raises(Exit, match="PATRONI_RESTAPI_PASSWORD is missing"):
        prod.deploy(c, clusters="data")
    assert not [cmd for cmd in commands(c) if " up " in cmd or " create " in cmd]


def test_down_volumes_also_removes_the_overlays_volumes(env_path):
    c = mock_context(env_path, {r".": OK})
    prod.down(c, "all", volumes=True, yes=True)
    ran = commands(c)
    assert "docker volume rm unit-pgdata-1" in ran and "docker volume rm unit-weaviate-2" in ran


def test_status_lists_the_overlay_services(tmp_path, capsys):
    path, _ = generated(tmp_path, DIFYOPS_DATA_HA="true")
    ps = "\n".join('{"Service": "%s", "State": "running", "Health": "healthy"}' % s
                   for s in ("db_postgres", "redis", "patroni-1", "patroni-2", "etcd-1", "redis-replica",
                             "redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3"))
    c = mock_context(path, {r"data\.yml .* ps -a": Result(ps), r" ps -a": Result("")})
    prod.status(c, clusters="data")
    out = capsys.readouterr().out
    assert all(s in out for s in ("patroni-1", "patroni-2", "etcd-1", "redis-sentinel-3"))
    assert out.count("healthy") == 9
