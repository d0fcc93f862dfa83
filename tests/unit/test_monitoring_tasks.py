"""monitoring tasks through invoke's MockContext, and the reading of Prometheus's answers."""

from __future__ import annotations

import json

import pytest
from conftest import OK, commands, fail_result, mock_context, write_env
from invoke import Result
from invoke.exceptions import Exit

from difyops import clusters
from difyops import monitoring as mon
from difyops import release_sets
from difyops.config import load_settings
from difyops.tasks import monitoring as tasks

HEALTHY_DOCKER = {
    r"docker info": Result("26.1.5"),
    r"docker compose version": Result("2.26.1"),
}

TARGETS = json.dumps({"status": "success", "data": {"activeTargets": [
    {"labels": {"job": "redis", "instance": "redis-exporter:9121"}, "health": "up", "lastError": ""},
    {"labels": {"job": "blackbox_http", "instance": "http://nginx:80/v1/ping"}, "health": "up", "lastError": ""},
    {"labels": {"job": "nginx", "instance": "nginx-exporter:9113"}, "health": "down",
     "lastError": "connection refused"},
]}})
ALERTS = json.dumps({"status": "success", "data": {"alerts": [
    {"labels": {"alertname": "Watchdog", "severity": "info"}, "state": "firing",
     "activeAt": "2026-01-01T00:00:00Z", "annotations": {"summary": "Always firing."}},
    {"labels": {"alertname": "DifyApiHighLatency", "severity": "warning", "instance": "x"}, "state": "pending",
     "activeAt": "2026-01-01T00:01:00Z", "annotations": {"summary": "slow"}},
    {"labels": {"alertname": "DifyApiDown", "severity": "critical", "instance": "http://nginx:80/v1/ping"},
     "state": "firing", "activeAt": "2026-01-01T00:02:00Z", "annotations": {"summary": "down"}},
]}})


@pytest.fixture(autouse=True)
def docker_on_path_and_free_ports(monkeypatch):
    monkeypatch.setattr("difyops.probes.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr("difyops.probes.port_in_use", lambda host, port: False)


def start_context(env_path, **extra):
    results = dict(HEALTHY_DOCKER)
    results.update(extra)
    results.setdefault(r"docker network inspect unit-monitoring", fail_result())
    results.setdefault(r"docker network inspect", OK)
    results.setdefault(r"docker network create", OK)
    results.setdefault(r".* up -d --wait", OK)
    results.setdefault(r"docker ps", OK)
    return mock_context(env_path, results)


def test_start_creates_the_network_then_waits_for_health(env_path):
    c = start_context(env_path)
    tasks.start(c)
    ran = commands(c)
    assert "docker network create --driver bridge --label io.difyops.stack=unit unit-monitoring" in ran
    up = next(cmd for cmd in ran if " up -d --wait" in cmd)
    assert "/compose/monitoring.yml" in up and "-p unit-monitoring" in up
    assert up.endswith("up -d --wait --wait-timeout 300 --remove-orphans")
    assert "--profile" not in up
    assert ran.index("docker network create --driver bridge --label io.difyops.stack=unit unit-monitoring") \
        < ran.index(up)


def test_start_passes_profiles_and_the_webhook_url_through_compose_env(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1",
                    GRAFANA_ADMIN_PASSWORD="s3cret-enough")
    c = start_context(env)
    tasks.start(c, grafana=True, webhook_url="http://hook:9000/x", timeout=60)
    call = next(call for call in c.run.call_args_list if " up -d --wait" in call.args[0])
    assert "--profile grafana up -d --wait --wait-timeout 60" in call.args[0]
    queues = ",".join(release_sets.for_env(load_settings(None, env).env).queues)
    # clusters.compose_env: the release's images for what .env leaves empty, as for every cluster.
    release = clusters.release_env(load_settings(None, env))
    assert call.kwargs["env"] == {**release, "DIFYOPS_STACK": "unit", "DIFYOPS_ENV_FILE": str(env),
                                  "DIFYOPS_DIFY_ENV_FILE": str(env.parent / "var" / "unit" / "dify.env"),
                                  "ALERTMANAGER_WEBHOOK_URL": "http://hook:9000/x",
                                  "DIFYOPS_CELERY_QUEUES": queues, "DIFYOPS_CELERY_BROKER_DB": "1"}


def test_start_refuses_grafana_without_an_admin_password(tmp_path):
    env_path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1", GRAFANA_ADMIN_PASSWORD="")
    c = start_context(env_path)
    with pytest.raises(Exit, match="GRAFANA_ADMIN_PASSWORD is empty"):
        tasks.start(c, grafana=True)
    assert not any(" up " in cmd or " create " in cmd for cmd in commands(c))


def test_start_refuses_when_the_stack_is_not_deployed(env_path):
    c = start_context(env_path, **{r"docker network inspect unit-backend": fail_result()})
    with pytest.raises(Exit):
        tasks.start(c)
    assert not any(" up " in cmd or " create " in cmd for cmd in commands(c))


def test_start_refuses_a_port_in_use(env_path, monkeypatch):
    monkeypatch.setattr("difyops.probes.port_in_use", lambda host, port: port == 9090)
    c = start_context(env_path)
    with pytest.raises(Exit):
        tasks.start(c)
    problems = mon.port_problems(c, load_settings(c))
    assert problems == ["port 9090 on 127.0.0.1 is already in use: stop what holds it or set "
                        "PROMETHEUS_PORT in .env"]


def test_start_fails_with_one_line_when_unhealthy(env_path):
    c = start_context(env_path, **{r".* up -d --wait": fail_result()})
    with pytest.raises(Exit, match="did not become healthy"):
        tasks.start(c)


def test_stop_downs_every_profile_and_removes_the_network(env_path):
    c = mock_context(env_path, {r".*": OK})
    tasks.stop(c, volumes=True)
    down, rm = commands(c)
    assert "-p unit-monitoring --profile grafana --profile containers down --remove-orphans" in down
    assert down.endswith("--timeout 30 --volumes")
    assert rm == "docker network rm unit-monitoring"


def test_status_reads_prometheus_inside_its_container(env_path, capsys, monkeypatch):
    monkeypatch.setattr(tasks.out, "width", 200)
    c = mock_context(env_path, {r".*api/v1/targets": Result(TARGETS), r".*api/v1/alerts": Result(ALERTS)})
    tasks.status(c)
    first = commands(c)[0]
    assert "-p unit-monitoring exec -T prometheus wget -q -O - " in first
    assert first.endswith("'http://127.0.0.1:9090/api/v1/targets?state=active'")
    out = capsys.readouterr().out
    assert "nginx-exporter:9113" in out and "connection refused" in out
    assert "DifyApiDown" in out and "Always firing." not in out and "DifyApiHighLatency" not in out
    assert "2/3 targets up, 1 alert(s) firing" in out


def test_status_says_how_to_start_it_when_prometheus_is_absent(env_path):
    c = mock_context(env_path, {r".*": fail_result("no such service")})
    with pytest.raises(Exit, match="invoke monitoring.start"):
        tasks.status(c)


def test_parse_targets_and_alerts():
    targets = mon.parse_targets(TARGETS)
    assert [(t.job, t.health) for t in targets] == [("blackbox_http", "up"), ("nginx", "down"), ("redis", "up")]
    assert [t.instance for t in mon.down_targets(targets)] == ["nginx-exporter:9113"]
    alerts = mon.parse_alerts(ALERTS)
    assert [(a.name, a.state) for a in alerts] == [
        ("DifyApiDown", "firing"), ("Watchdog", "firing"), ("DifyApiHighLatency", "pending")]
    assert alerts[0].labels == (("instance", "http://nginx:80/v1/ping"),)
    assert [a.name for a in mon.firing(alerts)] == ["DifyApiDown"]


@pytest.mark.parametrize("text, message", [
    ("<html>", "not JSON"),
    (json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}), "bad_data: parse error"),
])
def test_prometheus_errors_are_one_line(text, message):
    with pytest.raises(mon.PrometheusAnswerError, match=message):
        mon.parse_targets(text)
