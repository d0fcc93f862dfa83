"""monitoring: start, stop and inspect the monitoring cluster (Prometheus, Alertmanager, exporters)."""

from __future__ import annotations

import shlex
import time

from invoke import Collection

from .base import task
from rich.console import Console
from rich.table import Table

from .. import monitoring as mon
from ..config import load_settings
from ..errors import fail, refuse

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@task(
    help={
        "grafana": "also start Grafana (needs GRAFANA_ADMIN_PASSWORD in .env)",
        "containers": "also start cAdvisor for per-container metrics (profile `containers`)",
        "webhook_url": "Alertmanager's webhook receiver (default: ALERTMANAGER_WEBHOOK_URL from .env)",
        "timeout": "seconds to wait for every service to become healthy",
    }
)
def start(c, grafana=False, containers=False, webhook_url=None, timeout=None):
    """Start the monitoring cluster against the deployed stack and wait until it is healthy."""
    settings = load_settings(c)
    profiles = mon.profiles_for(grafana, containers)
    err.print("[bold]pre-flight[/]: Docker, .env, the stack's networks, ports (nothing is changed yet)")
    problems = mon.preflight_problems(c, settings, profiles)
    refuse(problems, "the monitoring cluster was not started")
    if not (webhook_url or settings.get("ALERTMANAGER_WEBHOOK_URL")):
        err.print("[yellow]warning:[/] ALERTMANAGER_WEBHOOK_URL is empty: alerts are shown by "
                  "`invoke monitoring.status` but sent nowhere")
    if not c.run(shlex.join(["docker", "network", "inspect", mon.network_name(settings)]), hide=True, warn=True).ok:
        c.run(shlex.join(mon.network_create_argv(settings)), hide=True)
    started = time.monotonic()
    result = c.run(shlex.join(mon.up_argv(settings, profiles, timeout)),
                   env=mon.compose_env(settings, webhook_url), warn=True)
    if not result.ok:
        raise fail("the monitoring cluster did not become healthy: see `invoke monitoring.status` and "
                   "`docker compose -p " + f"{settings.stack}-monitoring logs`")
    out.print(f"monitoring: healthy in {time.monotonic() - started:.1f}s")


@task(help={"volumes": "also delete the monitoring history (Prometheus, Alertmanager, Grafana data)"})
def stop(c, volumes=False):
    """Stop the monitoring cluster and remove its network; Dify keeps running."""
    settings = load_settings(c)
    c.run(shlex.join(mon.down_argv(settings, volumes)), env=mon.compose_env(settings), hide=True, warn=True)
    c.run(shlex.join(mon.network_rm_argv(settings)), hide=True, warn=True)
    out.print("monitoring: down" + (" and its history deleted" if volumes else ""))


def _ask(c, settings, path):
    result = c.run(shlex.join(mon.prometheus_get_argv(settings, path)), env=mon.compose_env(settings),
                   hide=True, warn=True)
    if not result.ok:
        raise fail("Prometheus does not answer: is the monitoring cluster running? (invoke monitoring.start)")
    return result.stdout


@task(help={"all_alerts": "also list pending alerts and the always-firing Watchdog"})
def status(c, all_alerts=False):
    """Show every scrape target (up or down) and the alerts that are firing."""
    settings = load_settings(c)
    try:
        targets = mon.parse_targets(_ask(c, settings, "/api/v1/targets?state=active"))
        alerts = mon.parse_alerts(_ask(c, settings, "/api/v1/alerts"))
    except mon.PrometheusAnswerError as exc:
        raise fail(f"Prometheus answered with an error: {exc}")
    table = Table(title=f"scrape targets of stack {settings.stack}")
    for column in ("job", "instance", "health", "last error"):
        table.add_column(column)
    for t in targets:
        colour = "green" if t.up else "red"
        table.add_row(t.job, t.instance, f"[{colour}]{t.health}[/]", t.last_error)
    out.print(table)
    shown = alerts if all_alerts else mon.firing(alerts)
    table = Table(title="alerts" + ("" if all_alerts else " firing (Watchdog aside)"))
    for column in ("alert", "severity", "state", "since", "labels", "summary"):
        table.add_column(column)
    colours = {"critical": "red", "warning": "yellow"}
    for a in shown:
        colour = colours.get(a.severity, "cyan")
        table.add_row(a.name, f"[{colour}]{a.severity}[/]", a.state, a.active_since[:19],
                      " ".join(f"{k}={v}" for k, v in a.labels), a.summary)
    out.print(table)
    down = mon.down_targets(targets)
    out.print(f"{len(targets) - len(down)}/{len(targets)} targets up, {len(mon.firing(alerts))} alert(s) firing")


ns = Collection("monitoring")
ns.add_task(start)
ns.add_task(stop)
ns.add_task(status, default=True)
