"""The monitoring cluster: the commands that start, stop and query it, and the reading of
Prometheus's answers. No Docker here; the tasks in tasks/monitoring.py run what this builds.

The cluster is its own compose project (``<stack>-monitoring``) beside the six of the stack,
deliberately not one of ``clusters.CLUSTERS``: ``prod.deploy`` does not start it, and it can be
started, stopped and deleted without touching Dify.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, Iterable

from . import clusters as cl
from . import probes, workers
from .config import Settings
from .errors import DifyopsError

CLUSTER = cl.Cluster(
    "monitoring",
    ("prometheus", "alertmanager", "node-exporter", "postgres-exporter", "redis-exporter",
     "nginx-exporter", "blackbox-exporter"),
    ("backend", "app"),
    (),
    "Prometheus, Alertmanager, exporters (Grafana and cAdvisor on profiles)",
)
NETWORK = "monitoring"
# compose profile -> the services it adds
PROFILES = {"grafana": ("grafana",), "containers": ("cadvisor",)}
# variable -> (default, profile that publishes it or None for always)
PORTS = {"PROMETHEUS_PORT": ("9090", None), "ALERTMANAGER_PORT": ("9093", None), "GRAFANA_PORT": ("3000", "grafana")}
PROMETHEUS_URL = "http://127.0.0.1:9090"


def network_name(settings: Settings) -> str:
    return f"{settings.stack}-{NETWORK}"


def network_create_argv(settings: Settings) -> list[str]:
    # Not internal: Alertmanager must reach webhook receivers outside the host, and ports can
    # be published only from a network with a way out.
    return ["docker", "network", "create", "--driver", "bridge",
            "--label", f"{cl.STACK_LABEL}={settings.stack}", network_name(settings)]


def network_rm_argv(settings: Settings) -> list[str]:
    return ["docker", "network", "rm", network_name(settings)]


QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


def watched_queues(settings: Settings) -> tuple[str, ...]:
    """The Celery queues whose length is exported: every queue of the deployment's Dify release
    (its release set), then MONITORING_EXTRA_QUEUES (queues of one's own, comma-separated)."""
    extra = tuple(q.strip() for q in settings.get("MONITORING_EXTRA_QUEUES", "").split(",") if q.strip())
    return tuple(dict.fromkeys((*workers.release_queues(settings), *extra)))


def broker_db(settings: Settings) -> int:
    """The Redis database of Celery's broker: CELERY_BROKER_URL's path (Dify's default is 1)."""
    url = settings.get("CELERY_BROKER_URL", "")
    tail = url.rstrip("/").rsplit("/", 1)[-1] if url.count("/") >= 3 else ""
    return int(tail) if tail.isdigit() else 1


def queue_problems(settings: Settings) -> list[str]:
    bad = [q for q in settings.get("MONITORING_EXTRA_QUEUES", "").split(",") if q.strip() and not QUEUE_NAME.match(q.strip())]
    return [f"MONITORING_EXTRA_QUEUES: {q.strip()!r} is not a queue name (letters, digits, _ . : - only)" for q in bad]


def compose_env(settings: Settings, webhook_url: str | None = None) -> dict[str, str]:
    """Compose's process environment; a webhook URL given here wins over the .env file's. The
    queue-length script of the redis exporter gets the queues and the broker's database here."""
    env = cl.compose_env(settings)
    env["DIFYOPS_CELERY_QUEUES"] = ",".join(q for q in watched_queues(settings) if QUEUE_NAME.match(q))
    env["DIFYOPS_CELERY_BROKER_DB"] = str(broker_db(settings))
    if webhook_url:
        env["ALERTMANAGER_WEBHOOK_URL"] = webhook_url
    return env


def profiles_for(grafana: bool = False, containers: bool = False) -> tuple[str, ...]:
    return tuple(p for p, on in (("grafana", grafana), ("containers", containers)) if on)


def up_argv(settings: Settings, profiles: tuple[str, ...] = (), timeout: int | None = None) -> list[str]:
    return cl.compose_argv(settings, CLUSTER, "up", "-d", "--wait", "--wait-timeout",
                           str(timeout or settings.wait_timeout), "--remove-orphans", profiles=profiles)


def down_argv(settings: Settings, volumes: bool = False) -> list[str]:
    # Every profile, so Grafana and cAdvisor go too when they were started.
    args = ["down", "--remove-orphans", "--timeout", "30"] + (["--volumes"] if volumes else [])
    return cl.compose_argv(settings, CLUSTER, *args, profiles=tuple(PROFILES))


def prometheus_get_argv(settings: Settings, path: str) -> list[str]:
    """Ask Prometheus inside its container (no published port needed): busybox wget in both
    the official and the local image."""
    return cl.compose_argv(settings, CLUSTER, "exec", "-T", "prometheus",
                           "wget", "-q", "-O", "-", PROMETHEUS_URL + path)


def preflight_problems(c: Any, settings: Settings, profiles: Iterable[str] = ()) -> list[str]:
    """What must hold before the monitoring cluster starts; returns problem lines."""
    problems = probes.docker_problems(c) + probes.env_problems(settings) + queue_problems(settings)
    if problems:
        return problems
    for network in CLUSTER.networks:
        name = cl.network_name(settings, network)
        if not c.run(shlex.join(["docker", "network", "inspect", name]), hide=True, warn=True).ok:
            problems.append(f"network {name} is missing: deploy the stack first (invoke prod.deploy)")
            break
    if "grafana" in profiles and not settings.get("GRAFANA_ADMIN_PASSWORD"):
        problems.append(f"GRAFANA_ADMIN_PASSWORD is empty in {settings.env_file.name}: set it before "
                        "starting Grafana (without it Grafana's admin password would be 'admin')")
    problems += port_problems(c, settings, profiles)
    return problems


def port_problems(c: Any, settings: Settings, profiles: Iterable[str] = ()) -> list[str]:
    host = settings.get("MONITORING_BIND_ADDRESS", "127.0.0.1")
    probe_host = "0.0.0.0" if host in ("", "0.0.0.0") else host
    problems = []
    for key, (default, profile) in PORTS.items():
        if profile and profile not in profiles:
            continue
        raw = settings.get(key, default)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            problems.append(f"{key}={raw!r} is not a port number")
        elif probes.port_in_use(probe_host, int(raw)) and not _published_by_monitoring(c, settings, int(raw)):
            problems.append(f"port {raw} on {host} is already in use: stop what holds it or set {key} "
                            f"in {settings.env_file.name}")
    return problems


def _published_by_monitoring(c: Any, settings: Settings, port: int) -> bool:
    result = c.run(shlex.join(["docker", "ps", "--filter",
                               f"label=com.docker.compose.project={settings.stack}-{CLUSTER.name}",
                               "--format", "{{.Ports}}"]), hide=True, warn=True)
    return result.ok and f":{port}->" in result.stdout


# ---------------------------------------------------------------- Prometheus's answers


class PrometheusAnswerError(DifyopsError):
    """Prometheus answered something that is not a successful API response."""


def _data(text: str) -> Any:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PrometheusAnswerError(f"not JSON: {text[:120]!r}") from exc
    if doc.get("status") != "success":
        raise PrometheusAnswerError(f"{doc.get('errorType', 'error')}: {doc.get('error', 'no detail')}")
    return doc["data"]


@dataclass(frozen=True)
class Target:
    job: str
    instance: str
    health: str  # up, down, unknown
    last_error: str = ""

    @property
    def up(self) -> bool:
        return self.health == "up"


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str
    state: str  # firing, pending
    active_since: str
    summary: str
    labels: tuple[tuple[str, str], ...] = ()


def parse_targets(text: str) -> list[Target]:
    """/api/v1/targets -> active targets, sorted by job and instance."""
    data = _data(text)
    rows = [Target(t.get("labels", {}).get("job", t.get("scrapePool", "?")),
                   t.get("labels", {}).get("instance", t.get("scrapeUrl", "?")),
                   t.get("health", "unknown"), t.get("lastError", ""))
            for t in data.get("activeTargets", [])]
    return sorted(rows, key=lambda t: (t.job, t.instance))


IDENTITY_LABELS = ("alertname", "severity")


def parse_alerts(text: str) -> list[Alert]:
    """/api/v1/alerts -> alerts, firing first, then by severity and name."""
    data = _data(text)
    order = {"critical": 0, "warning": 1, "info": 2}
    rows = []
    for a in data.get("alerts", []):
        labels = a.get("labels", {})
        rows.append(Alert(labels.get("alertname", "?"), labels.get("severity", "none"), a.get("state", "?"),
                          a.get("activeAt", ""), a.get("annotations", {}).get("summary", ""),
                          tuple(sorted((k, v) for k, v in labels.items() if k not in IDENTITY_LABELS))))
    return sorted(rows, key=lambda r: (r.state != "firing", order.get(r.severity, 3), r.name, r.labels))


def down_targets(targets: Iterable[Target]) -> list[Target]:
    return [t for t in targets if not t.up]


def firing(alerts: Iterable[Alert], exclude: tuple[str, ...] = ("Watchdog",)) -> list[Alert]:
    return [a for a in alerts if a.state == "firing" and a.name not in exclude]
