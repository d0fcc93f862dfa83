"""Static checks of the monitoring cluster: compose file, Prometheus config and rules (promtool),
Alertmanager (amtool), Grafana provisioning and dashboards, the nginx status server, and the
central-logs overlay. Grafana and Loki/Promtail cannot run here: their files are checked only
statically, in this file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import load_compose

import compose_cli

from difyops import envfile, monitoring, paths, release_sets
from difyops.config import load_settings

MON = paths.MONITORING_DIR
COMPOSE = paths.COMPOSE_DIR / "monitoring.yml"
LOGGING = paths.COMPOSE_DIR / "logging.yml"
RULES = sorted((MON / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((MON / "prometheus" / "tests").glob("*.yml"))
DASHBOARDS = sorted((MON / "grafana" / "dashboards").glob("*.json"))
RUNBOOKS = paths.ROOT / "docs" / "runbooks.md"
DOC = yaml.safe_load(COMPOSE.read_text())

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package promtool, part of prometheus; "
           "scripts/host-setup.sh installs it); runs in CI via .ci/run")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None,
    reason="amtool is not installed (from Debian's prometheus-alertmanager; scripts/host-setup.sh "
           "unpacks it); runs in CI via .ci/run")


def _compose_ok() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "compose", "version"], capture_output=True).returncode == 0


# A skip outside CI, a failure under CI=true (the `requires` mark, tests/conftest.py).
needs_compose = pytest.mark.requires(_compose_ok(), "the docker compose CLI (no daemon needed) is missing",
                                     "CI, where .ci/run installs it")


def alerts():
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    yield path.name, rule


def dashboard_exprs():
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target.get("expr", "")


def prometheus_config_for_host(tmp_path: Path) -> Path:
    """prometheus.yml with its container paths (/etc/prometheus) pointed at the repository."""
    text = (MON / "prometheus" / "prometheus.yml").read_text()
    out = tmp_path / "prometheus.yml"
    out.write_text(text.replace("/etc/prometheus/", f"{MON / 'prometheus'}/"))
    return out


# ---------------------------------------------------------------- compose file


IMAGE_DEFAULTS = {
    "PROMETHEUS_IMAGE": "prom/prometheus:v2.55.1",
    "ALERTMANAGER_IMAGE": "prom/alertmanager:v0.28.1",
    "GRAFANA_IMAGE": "grafana/grafana:11.5.2",
    "NODE_EXPORTER_IMAGE": "prom/node-exporter:v1.9.0",
    "POSTGRES_EXPORTER_IMAGE": "prometheuscommunity/postgres-exporter:v0.17.1",
    "REDIS_EXPORTER_IMAGE": "oliver006/redis_exporter:v1.69.0-alpine",
    "NGINX_EXPORTER_IMAGE": "nginx/nginx-prometheus-exporter:1.4.1",
    "BLACKBOX_EXPORTER_IMAGE": "prom/blackbox-exporter:v0.26.0",
    "CADVISOR_IMAGE": "gcr.io/cadvisor/cadvisor:v0.49.1",
}


def test_every_default_service_has_a_local_build_in_the_image_catalogue():
    from difyops import images

    local = {spec.variable: spec for spec in images.local_images()}
    for name in monitoring.CLUSTER.services:
        variable, default = re.match(r"^\$\{([A-Z_]+_IMAGE):-([^}]+)\}$", DOC["services"][name]["image"]).groups()
        assert variable in local, f"{name}: add {variable} to difyops/images.py's CATALOGUE"
        assert local[variable].default == default
        assert (paths.ROOT / local[variable].local.context / "Dockerfile").is_file()


def test_monitoring_compose_project_and_services():
    assert DOC["name"] == "${DIFYOPS_STACK:-dify}-monitoring"
    default = {s for s, svc in DOC["services"].items() if not svc.get("profiles")}
    assert default == set(monitoring.CLUSTER.services)
    optional = {s: svc["profiles"] for s, svc in DOC["services"].items() if svc.get("profiles")}
    assert optional == {svc: [p] for p, svcs in monitoring.PROFILES.items() for svc in svcs}


@pytest.mark.parametrize("name", list(DOC["services"]))
def test_monitoring_service_rules(name):
    svc = DOC["services"][name]
    match = re.match(r"^\$\{([A-Z_]+_IMAGE):-([^}]+)\}$", svc["image"])
    assert match, f"{name}: image must come from a *_IMAGE variable"
    assert IMAGE_DEFAULTS[match.group(1)] == match.group(2), f"{name}: default must be the pinned official image"
    assert svc["logging"]["options"]["max-size"] and svc["logging"]["options"]["max-file"]
    assert svc["restart"] == "unless-stopped"
    health = svc["healthcheck"]
    assert health["test"] and health["start_interval"] and health["start_period"]
    assert "monitoring" in svc["networks"]


def test_only_prometheus_alertmanager_grafana_publish_and_only_on_the_bind_address():
    published = {name for name, svc in DOC["services"].items() if svc.get("ports")}
    assert published == {"prometheus", "alertmanager", "grafana"}
    for name in published:
        for port in DOC["services"][name]["ports"]:
            assert port.startswith("${MONITORING_BIND_ADDRESS:-127.0.0.1}:"), port


def test_monitoring_networks_are_external_and_named_by_stack():
    assert DOC["networks"] == {
        key: {"name": "${DIFYOPS_STACK:-dify}-" + key, "external": True} for key in ("monitoring", "backend", "app")
    }
    # Exporters join only the network of what they watch.
    services = DOC["services"]
    assert services["postgres-exporter"]["networks"] == ["monitoring", "backend"]
    assert services["redis-exporter"]["networks"] == ["monitoring", "backend"]
    assert services["nginx-exporter"]["networks"] == ["monitoring", "app"]
    assert services["blackbox-exporter"]["networks"] == ["monitoring", "app"]
    # Prometheus scrapes the exporters on its own network, and Patroni's members (HA) on backend.
    assert services["prometheus"]["networks"] == ["monitoring", "backend"]


def test_every_volume_is_named_by_stack_so_teardown_finds_it():
    for key, vol in DOC["volumes"].items():
        assert vol["name"].startswith("${DIFYOPS_STACK:-dify}-monitoring-"), key


@pytest.mark.parametrize("version", release_sets.supported())
def test_the_queue_script_reads_every_queue_of_the_release_in_the_brokers_database(version, tmp_path):
    """compose/monitoring.yml's queue script as Compose renders it, with the process environment
    the task library gives it: LLEN of each queue of the release set, then one's own."""
    compose_cli.require_compose()
    env_file = tmp_path / ".env"
    env_file.write_text(envfile.generate(paths.ENV_EXAMPLE.read_text(), {
        "DIFYOPS_STACK": "u", "DIFY_VERSION": version, "MONITORING_EXTRA_QUEUES": "my_app, reports",
        "CELERY_BROKER_URL": "redis://:pw@redis:6379/3"}))
    settings = load_settings(None, env_file)
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--env-file", str(env_file), "config",
                             "--format", "json"], capture_output=True, text=True,
                            env=compose_cli.process_environment(monitoring.compose_env(settings)))
    assert result.returncode == 0, result.stderr
    script = json.loads(result.stdout)["configs"]["celery_queues"]["content"]
    assert "redis.call('SELECT', 3)" in script
    listed = re.search(r"string.gmatch\('([^']*)'", script)[1].split(",")
    assert listed == [*release_sets.load(version).queues, "my_app", "reports"]
    exporter = json.loads(result.stdout)["services"]["redis-exporter"]
    assert [c["target"] for c in exporter["configs"]] == [exporter["environment"]["REDIS_EXPORTER_SCRIPT"]]


def test_a_queue_name_that_is_not_one_is_refused(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(envfile.generate(paths.ENV_EXAMPLE.read_text(), {
        "DIFYOPS_STACK": "u", "MONITORING_EXTRA_QUEUES": "ok_queue,x') redis.call('FLUSHALL"}))
    settings = load_settings(None, env_file)
    assert monitoring.queue_problems(settings) == [
        "MONITORING_EXTRA_QUEUES: \"x') redis.call('FLUSHALL\" is not a queue name (letters, digits, _ . : - only)"]
    assert "FLUSHALL" not in monitoring.compose_env(settings)["DIFYOPS_CELERY_QUEUES"]


@pytest.mark.parametrize("url,db", [("redis://:pw@redis:6379/1", 1), ("redis://:pw@redis:6379/4", 4),
                                    ("redis://:pw@redis:6379", 1), ("sentinel://:pw@s1:26379/2", 2), ("", 1)])
def test_the_brokers_database_is_the_broker_urls(url, db, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(envfile.generate(paths.ENV_EXAMPLE.read_text(), {"DIFYOPS_STACK": "u", "CELERY_BROKER_URL": url}))
    assert monitoring.broker_db(load_settings(None, env_file)) == db


@needs_compose
@pytest.mark.parametrize("path", [COMPOSE, LOGGING], ids=["monitoring", "logging"])
def test_docker_compose_config_passes_with_every_profile(path, tmp_path):
    env = tmp_path / ".env"
    env.write_text(paths.ENV_EXAMPLE.read_text())
    args = ["docker", "compose", "-f", str(path), "--env-file", str(env)]
    for profile in ("grafana", "containers"):
        args += ["--profile", profile]
    result = subprocess.run(args + ["config", "-q"], capture_output=True, text=True,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "DIFYOPS_ENV_FILE": str(env)})
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- Prometheus


@needs_promtool
def test_promtool_check_config(tmp_path):
    result = subprocess.run([PROMTOOL, "check", "config", str(prometheus_config_for_host(tmp_path))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_rules():
    result = subprocess.run([PROMTOOL, "check", "rules", *map(str, RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules():
    result = subprocess.run([PROMTOOL, "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True,
                            cwd=MON / "prometheus" / "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test():
    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    names = {rule["alert"] for _, rule in alerts()}
    assert names - tested == set(), "alerts without a firing unit test"


COMPONENTS = ("Dify", "PostgreSQL", "Redis", "Celery", "Node", "Prometheus", "Alertmanager", "Target", "Watchdog")
# vector(1) and absent(...) have no labels to put in a description.
NO_LABELS = {"Watchdog", "DifyBackupMissing"}


@pytest.mark.parametrize("rule", [r for _, r in alerts()], ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_follows_the_mixin_guidelines(rule):
    name = rule["alert"]
    assert re.fullmatch(r"(?:[A-Z][a-z0-9]*|SQL)+", name.replace("PostgreSQL", "Postgres")), name
    assert name.startswith(COMPONENTS), f"{name}: starts with its component"
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    notes = rule["annotations"]
    assert "{{" not in notes["summary"] and notes["summary"].endswith("."), "summary is static"
    if name not in NO_LABELS:
        assert "{{" in notes["description"], "description is templated"
    anchor = notes["runbook_url"].split("#", 1)
    assert anchor == ["docs/runbooks.md", name.lower()], notes["runbook_url"]
    assert f"## {name}\n" in RUNBOOKS.read_text(), f"docs/runbooks.md has no section for {name}"


def test_every_job_named_in_rules_and_dashboards_is_scraped():
    config = yaml.safe_load((MON / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    used = set()
    for path in RULES + DASHBOARDS:
        used |= set(re.findall(r'job=\\?"([a-z_]+)\\?"', path.read_text()))
    assert used <= jobs, used - jobs


def test_patroni_job_scrapes_every_member_of_the_ha_overlay_by_name():
    config = yaml.safe_load((MON / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "patroni")
    ha_doc = load_compose(paths.COMPOSE_DIR / "data-ha.yml")
    members = {name: svc for name, svc in ha_doc["services"].items() if name.startswith("patroni-")}
    assert sorted(members) == ["patroni-1", "patroni-2", "patroni-3"]  # patroni-3: profile ha3
    [sd] = job["dns_sd_configs"]
    assert sorted(sd["names"]) == sorted(members) and sd["type"] == "A"
    # The port Patroni's REST API listens on, which each member also announces as its address.
    patroni_yml = yaml.safe_load(ha_doc["x-patroni-configuration"])
    port = int(patroni_yml["restapi"]["listen"].rsplit(":", 1)[1])
    assert sd["port"] == port
    [relabel] = job["relabel_configs"]
    assert relabel["source_labels"] == ["__meta_dns_name"] and relabel["target_label"] == "instance"
    for name, svc in members.items():
        # The instance label is the member's announced REST API address.
        assert relabel["replacement"].replace("${1}", name) == svc["environment"]["PATRONI_RESTAPI_CONNECT_ADDRESS"]
        # Prometheus shares a network with every member (the members' own come from x-patroni).
        assert set(svc.get("networks") or ha_doc["x-patroni"]["networks"]) & set(DOC["services"]["prometheus"]["networks"])
    # GET /metrics needs no credentials: Prometheus is given none.
    assert not {"basic_auth", "authorization"} & set(job)


def test_prometheus_sends_to_alertmanager_and_loads_every_rule_file():
    config = yaml.safe_load((MON / "prometheus" / "prometheus.yml").read_text())
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_blackbox_probes_the_public_paths_through_the_gateway():
    config = yaml.safe_load((MON / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "blackbox_http")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"http://nginx:80/", "http://nginx:80/console/api/ping", "http://nginx:80/v1/ping"}
    modules = yaml.safe_load((MON / "blackbox" / "blackbox.yml").read_text())["modules"]
    assert {"http_2xx", "http_streaming_headers"} <= set(modules)
    assert (MON / "blackbox" / "config.yml").resolve() == (MON / "blackbox" / "blackbox.yml").resolve()


# ---------------------------------------------------------------- Alertmanager


def test_alertmanager_routes_by_severity_to_the_webhook():
    config = yaml.safe_load((MON / "alertmanager" / "alertmanager.yml").read_text())
    routes = {tuple(r["matchers"]): r["receiver"] for r in config["route"]["routes"]}
    assert routes[('severity="critical"',)] == "webhook"
    assert routes[('severity="warning"',)] == "webhook"
    assert routes[('severity="info"',)] == "null"
    assert routes[('alertname="Watchdog"',)] == "heartbeat"
    receivers = {r["name"]: r for r in config["receivers"]}
    hook = receivers["webhook"]["webhook_configs"][0]
    assert hook == {"url_file": "/alertmanager/webhook_url", "send_resolved": True}
    # the URL comes from the .env variable, through the container's entrypoint
    script = "\n".join(DOC["services"]["alertmanager"]["entrypoint"])
    assert "ALERTMANAGER_WEBHOOK_URL" in script and "/alertmanager/webhook_url" in script


@needs_amtool
def test_amtool_check_config():
    result = subprocess.run([AMTOOL, "check-config", str(MON / "alertmanager" / "alertmanager.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- Grafana (static only)


def provisioned_datasource():
    doc = yaml.safe_load((MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = doc["datasources"]
    return ds


def test_grafana_datasource_is_the_monitoring_prometheus():
    ds = provisioned_datasource()
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090" and ds["uid"]


def test_grafana_dashboard_provider_reads_the_mounted_folder():
    doc = yaml.safe_load((MON / "grafana" / "provisioning" / "dashboards" / "difyops.yml").read_text())
    (provider,) = doc["providers"]
    mounts = DOC["services"]["grafana"]["volumes"]
    assert f"../monitoring/grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_the_five_dashboards_exist_with_unique_uids():
    names = {p.stem for p in DASHBOARDS}
    assert names == {"overview", "gateway", "api", "workers", "data"}
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_query_the_provisioned_prometheus(path):
    uid = provisioned_datasource()["uid"]
    doc = json.loads(path.read_text())
    assert doc["panels"], "no panels"
    for panel in doc["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            expr = target.get("expr", "")
            assert expr.strip(), f"{panel['title']}: a target without a PromQL expr"
            # No Grafana variables: every query runs as it is against Prometheus (the smoke does).
            assert "$" not in expr, f"{panel['title']}: {expr}"


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    rules = [{"record": f"dashboard:query_{i}:check", "expr": expr}
             for i, (_, _, expr) in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- gateway status server


def test_nginx_status_server_is_internal_and_private():
    text = (paths.NGINX_DIR / "templates" / "status.conf.template").read_text()
    assert "listen 8081;" in text and "stub_status;" in text
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"):
        assert f"allow {net};" in text
    assert "deny all;" in text
    assert "${" not in text  # rendered as it is: the gateway passes no variable for it
    gateway = yaml.safe_load((paths.COMPOSE_DIR / "gateway.yml").read_text())
    assert all(":8081" not in p for p in gateway["services"]["nginx"]["ports"])
    assert "nginx:8081/stub_status" in " ".join(DOC["services"]["nginx-exporter"]["command"])


# ---------------------------------------------------------------- central logs overlay (static only)


def test_logging_overlay_ships_this_stacks_logs_and_binds_loopback():
    doc = yaml.safe_load(LOGGING.read_text())
    assert doc["name"] == "${DIFYOPS_STACK:-dify}-logging"
    services = doc["services"]
    assert set(services) == {"loki", "alloy"}
    for name, svc in services.items():
        assert re.match(r"^\$\{[A-Z_]+_IMAGE:-[^}]+:[^}]+\}$", svc["image"]), name
        assert svc["logging"]["options"]["max-size"]
        assert svc["healthcheck"]["start_interval"]
        for port in svc.get("ports", []):
            assert port.startswith("${MONITORING_BIND_ADDRESS:-127.0.0.1}:")
    assert doc["networks"]["monitoring"] == {"name": "${DIFYOPS_STACK:-dify}-monitoring", "external": True}
    assert "-config.expand-env=true" in services["loki"]["command"]  # ${LOKI_RETENTION} in loki.yml
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in services["alloy"]["volumes"]


def test_alloy_keeps_only_this_stack_and_labels_cluster_service_level():
    text = (MON / "alloy" / "config.alloy").read_text()
    assert text.count("{") == text.count("}")
    for needed in ('regex         = sys.env("DIFYOPS_STACK") + "-.+"', 'action        = "keep"',
                   'target_label  = "cluster"', 'target_label  = "service"', "stage.json",
                   'values = { level = "" }', 'url = "http://loki:3100/loki/api/v1/push"'):
        assert needed in text, needed


def test_loki_keeps_logs_for_a_bounded_time():
    loki = yaml.safe_load((MON / "loki" / "loki.yml").read_text())
    assert loki["compactor"]["retention_enabled"] is True
    assert loki["limits_config"]["retention_period"] == "${LOKI_RETENTION:-336h}"
    assert loki["auth_enabled"] is False and loki["schema_config"]["configs"][0]["schema"] == "v13"
