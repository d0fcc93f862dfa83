"""The development environment for real: dev.init on a Dify-shaped checkout (the stand-in, a TEST
DOUBLE), the middleware in containers, api/worker/web as host processes, hot reload, status,
data in view, reset and stop. Ordered: each test builds on the one before."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import time
from pathlib import Path

import requests
from testkit import check, record

STATE: dict = {}


def wait_for(what, probe, timeout: float, interval: float = 0.25):
    """Poll ``probe`` until it returns a truthy value (bounded); returns (value, seconds)."""
    started = time.monotonic()
    deadline = started + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (requests.RequestException, OSError):
            value = None
        if value:
            return value, time.monotonic() - started
        time.sleep(interval)
    return None, time.monotonic() - started


def env_values(path):
    from difyops import envfile

    return envfile.read(path)


def run_task(devenv, text):
    resp = requests.post(devenv.url("api", "/console/api/tasks"), json={"input": text}, timeout=10)
    task_id = resp.json()["task_id"]

    def done():
        doc = requests.get(devenv.url("api", f"/console/api/tasks/{task_id}"), timeout=5).json()
        return doc if doc.get("state") in ("SUCCESS", "FAILURE") else None

    return wait_for("task", done, 90, 0.5)


def test_init_writes_env_files_and_migrates(devenv):
    started = time.monotonic()
    result = devenv.invoke("dev.init", *devenv.set_args(), timeout=900)
    record("dev.init (cold: middleware, uv sync, pnpm install, migrations)", time.monotonic() - started)
    api_env = devenv.src / "api" / ".env"
    values = env_values(api_env)
    mode = stat.S_IMODE(os.stat(api_env).st_mode)
    check("api/.env written, mode 0600", mode == 0o600, oct(mode))
    check("api/.env points at the middleware", values["DB_HOST"] == "127.0.0.1"
          and values["DB_PORT"] == str(devenv.ports["EXPOSE_POSTGRES_PORT"])
          and values["REDIS_PORT"] == str(devenv.ports["EXPOSE_REDIS_PORT"])
          and values["CELERY_BROKER_URL"].endswith(f"@127.0.0.1:{devenv.ports['EXPOSE_REDIS_PORT']}/1"),
          {k: values[k] for k in ("DB_HOST", "DB_PORT", "REDIS_PORT")})
    examples = env_values(devenv.src / "api" / ".env.example")
    public = [k for k in ("SECRET_KEY", "PLUGIN_DAEMON_KEY", "DB_PASSWORD", "REDIS_PASSWORD")
              if values.get(k) and values[k] == examples.get(k)]
    check("api/.env secrets generated (SECRET_KEY 32+ characters; none is Dify's example value)",
          len(values["SECRET_KEY"]) >= 32 and not public, public or f"{len(values['SECRET_KEY'])} chars")
    output = result.stdout + result.stderr
    leaked = [k for k in ("SECRET_KEY", "DB_PASSWORD", "REDIS_PASSWORD", "PLUGIN_DAEMON_KEY") if values[k] in output]
    check("no secret printed by dev.init", not leaked, leaked or "none of 4 secrets in the output")
    web = env_values(devenv.src / "web" / ".env.local")
    check("web/.env.local points at the api", web["NEXT_PUBLIC_API_PREFIX"] ==
          f"http://localhost:{devenv.ports['DEV_API_PORT']}/console/api", web["NEXT_PUBLIC_API_PREFIX"])
    check("uv sync made the api's venv", (devenv.src / "api" / ".venv" / "bin" / "flask").exists(), "api/.venv/bin/flask")
    migrated = devenv.invoke("dev.db", "--command", "select version from stand_in_migrations order by version")
    check("migrations applied", "0003_upload_files" in migrated.stdout, migrated.stdout.split())


def test_init_again_keeps_user_values_with_backup(devenv):
    api_env = devenv.src / "api" / ".env"
    lines = [ln for ln in api_env.read_text().splitlines() if not ln.startswith("PLUGIN_DAEMON_KEY=")]
    lines = [("LOG_LEVEL=DEBUG" if ln.startswith("LOG_LEVEL=") else ln) for ln in lines] + ["MY_OWN_SETTING=kept"]
    api_env.write_text("\n".join(lines) + "\n")
    before = api_env.read_text()
    devenv.invoke("dev.init", "--skip-install", timeout=600)
    values = env_values(api_env)
    check("user's values kept", values.get("LOG_LEVEL") == "DEBUG" and values.get("MY_OWN_SETTING") == "kept",
          {k: values.get(k) for k in ("LOG_LEVEL", "MY_OWN_SETTING")})
    daemon_key = env_values(devenv.state / "middleware.env")["PLUGIN_DAEMON_KEY"]
    check("missing key added back: the one the running plugin daemon has", values.get("PLUGIN_DAEMON_KEY") == daemon_key,
          "PLUGIN_DAEMON_KEY equals the middleware's" if values.get("PLUGIN_DAEMON_KEY") == daemon_key
          else "missing" if not values.get("PLUGIN_DAEMON_KEY") else "differs from the middleware's")
    backups = sorted(api_env.parent.glob(".env.bak.*"))
    check("backup of the previous api/.env", bool(backups) and backups[-1].read_text() == before,
          [b.name for b in backups])


def test_api_port_taken_is_refused(devenv):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", devenv.ports["DEV_API_PORT"]))
        holder.listen(1)
        result = devenv.invoke("dev.start-api", "--detach", check=False)
    last = (result.stderr.strip().splitlines() or [""])[-1]
    check("api port taken: refused", result.returncode != 0 and "already in use" in last
          and not devenv.tracked_pids(), last)


def test_start_api_serves_health(devenv):
    started = time.monotonic()
    devenv.invoke("dev.start-api", "--detach", timeout=300)
    record("dev.start-api until /health answers", time.monotonic() - started)
    doc = requests.get(devenv.url("api", "/health"), timeout=5).json()
    check("api /health", doc.get("status") == "ok", doc)
    STATE["api_version"] = doc["version"]


def test_api_reloads_on_source_edit(devenv):
    marker = f"edited{int(time.time())}"
    config_py = devenv.src / "api" / "standin" / "config.py"
    text = config_py.read_text()
    assert 'UPSTREAM_VERSION = "1.13.3"' in text
    config_py.write_text(text.replace('UPSTREAM_VERSION = "1.13.3"', f'UPSTREAM_VERSION = "1.13.3-{marker}"'))
    edited = time.monotonic()

    def new_code():
        doc = requests.get(devenv.url("api", "/health"), timeout=2).json()
        return doc if marker in doc.get("version", "") else None

    doc, seconds = wait_for("reload", new_code, 120)
    record("api reload: edit to new code served", seconds)
    check("api picked up the edit without a manual restart", doc is not None,
          f"{doc and doc['version']} after {time.monotonic() - edited:.1f}s")


def test_worker_runs_a_task(devenv):
    devenv.invoke("dev.start-worker", "--detach", timeout=300)
    log = devenv.state / "logs" / "worker.log"
    _, seconds = wait_for("worker ready", lambda: log.read_text().count(" ready.") >= 1, 120)
    record("worker ready", seconds)
    doc, _ = run_task(devenv, "hello dev")
    expected = hashlib.sha256(b"hello dev").hexdigest()
    check("worker ran a task on Dify's queue", doc is not None and doc["state"] == "SUCCESS"
          and doc["result"] == expected, doc and {k: doc[k] for k in ("state", "queue", "result")})
    # Dify 1.13 runs workflows and chatflows in the worker (queue workflow_based_app_execution) and
    # summary indexes on dataset_summary: dev.start-worker must consume every queue of the release.
    run = requests.post(devenv.url("api", "/console/api/workflows/run"), json={"inputs": {"q": "dev"}, "seconds": 0.5},
                        timeout=10).json()
    summary = requests.post(devenv.url("api", "/console/api/datasets/d1/summaries"), json={"text": "one two three"},
                            timeout=10).json()

    def finished(path):
        doc = requests.get(devenv.url("api", path), timeout=5).json()
        return doc if doc.get("state") in ("SUCCESS", "FAILURE") else None

    ran, _ = wait_for("workflow run", lambda: finished(f"/console/api/workflows/run/{run['workflow_run_id']}"), 60, 0.5)
    summed, _ = wait_for("summary", lambda: finished(f"/console/api/tasks/{summary['task_id']}"), 60, 0.5)
    check("the dev worker runs a workflow (workflow_based_app_execution)", ran is not None and ran["state"] == "SUCCESS"
          and ran["queue"] == "workflow_based_app_execution", ran and {k: ran[k] for k in ("state", "queue")})
    check("the dev worker runs a summary (dataset_summary)", summed is not None and summed["state"] == "SUCCESS"
          and summed["queue"] == "dataset_summary", summed and {k: summed[k] for k in ("state", "queue")})


def test_worker_restarts_on_source_edit(devenv):
    log = devenv.state / "logs" / "worker.log"
    before = log.read_text().count(" ready.")
    tasks_py = devenv.src / "api" / "standin" / "tasks.py"
    tasks_py.write_text(tasks_py.read_text() + "\n# edited by the dev test\n")
    _, seconds = wait_for("worker restart", lambda: log.read_text().count(" ready.") > before, 180)
    record("worker restart: edit to worker ready again", seconds)
    doc, _ = run_task(devenv, "after edit")
    check("worker restarted on the edit and runs tasks", log.read_text().count(" ready.") > before
          and doc is not None and doc["state"] == "SUCCESS", f"ready lines {before} -> {log.read_text().count(' ready.')}")


def test_web_dev_server_serves(devenv):
    started = time.monotonic()
    devenv.invoke("dev.start-web", "--detach", timeout=300)
    record("dev.start-web until / answers", time.monotonic() - started)
    page = requests.get(devenv.url("web", "/"), timeout=5).text
    check("web dev server serves, with the api prefix from .env.local",
          "Dify stand-in web (dev)" in page and f"localhost:{devenv.ports['DEV_API_PORT']}/console/api" in page,
          page[:120])


def test_api_and_web_script_tasks(devenv):
    api_test = devenv.invoke("api.test", check=False, timeout=300)
    check("api.test runs the api's pytest", api_test.returncode == 0 and "1 passed" in api_test.stdout,
          (api_test.stdout.strip().splitlines() or [""])[-1])
    lint = devenv.invoke("web.lint", check=False, timeout=300)
    web_test = devenv.invoke("web.test", check=False, timeout=300)
    check("web.lint and web.test run the web scripts", lint.returncode == 0 and web_test.returncode == 0
          and "pass 1" in web_test.stdout, f"lint {lint.returncode}, test {web_test.returncode}")


def test_status_matches_reality(devenv):
    doc = devenv.status()
    services = {s["service"]: s for s in doc["middleware"]}
    core = ("db_postgres", "redis", "sandbox", "ssrf_proxy", "plugin_daemon")
    check("status: every middleware container running and healthy",
          all(services[n]["state"] == "running" and services[n]["health"] == "healthy" for n in core),
          {n: services[n]["health"] for n in core})
    ports = " ".join(s["ports"] for s in doc["middleware"])
    published = [p.split("->")[0] for p in ports.split()]
    check("status: every published port is on 127.0.0.1", published and all(p.startswith("127.0.0.1:") for p in published),
          published)
    check("status: the published ports are the configured ones",
          f"127.0.0.1:{devenv.ports['EXPOSE_POSTGRES_PORT']}->5432" in ports, ports)
    running = len(devenv.containers())
    check("status: container count matches docker", running == len(core), f"docker lists {running}")
    apps = {a["name"]: a for a in doc["apps"]}
    alive = {n: os.path.exists(f"/proc/{apps[n]['pid']}") for n in ("api", "worker", "web")}
    check("status: api, worker, web running with live pids",
          all(apps[n]["state"] == "running" for n in alive) and all(alive.values()),
          {n: (apps[n]["state"], apps[n]["pid"]) for n in alive})
    check("status: app ports and health", apps["api"]["port"] == str(devenv.ports["DEV_API_PORT"])
          and apps["api"]["health"] == "healthy" and apps["web"]["health"] == "healthy",
          {n: (apps[n]["port"], apps[n]["health"]) for n in ("api", "web")})


def test_data_in_view(devenv):
    rows = devenv.invoke("dev.db", "--command", "select count(*) from task_results").stdout
    check("dev.db runs SQL in the database container", any(tok.isdigit() and int(tok) >= 2 for tok in rows.split()),
          " ".join(rows.split()))
    pong = devenv.invoke("dev.redis", "--command", "PING").stdout.strip()
    check("dev.redis talks to Redis (authenticated)", pong == "PONG", pong)


def test_viewer_shows_the_database(devenv):
    devenv.invoke("middleware.start", "--viewer", timeout=600)
    first = requests.get(devenv.url("viewer", "/"), allow_redirects=False, timeout=10)
    check("viewer bound to 127.0.0.1, login prefilled by redirect", first.status_code == 302
          and "pgsql=db_postgres" in first.headers.get("Location", "") and "db=dify" in first.headers["Location"],
          f"{first.status_code} {first.headers.get('Location')}")
    from difyops import envfile

    password = envfile.read(devenv.state / "middleware.env")["DB_PASSWORD"]
    session = requests.Session()
    session.get(devenv.url("viewer", "/"), timeout=10)
    page = session.post(devenv.url("viewer", "/?pgsql=db_postgres&username=postgres&db=dify"), timeout=20, data={
        "auth[driver]": "pgsql", "auth[server]": "db_postgres", "auth[username]": "postgres",
        "auth[password]": password, "auth[db]": "dify"}).text
    tables = [t for t in ("messages", "task_results", "stand_in_migrations") if t in page]
    check("viewer logs in and lists Dify's tables", len(tables) == 3, tables)


def test_plugin_daemon_reaches_the_host_api(devenv):
    daemon = f"http://127.0.0.1:{devenv.ports['EXPOSE_PLUGIN_DAEMON_PORT']}/standin/inner-api-check"
    blocked = requests.get(daemon, timeout=30)
    check("api on 127.0.0.1 only: the daemon cannot call it back", blocked.status_code == 502,
          f"{blocked.status_code} {blocked.json().get('error', '')[:80]}")
    devenv.invoke("dev.stop", "--keep-middleware", timeout=180)
    devenv.invoke("dev.start-api", "--detach", "--container-access", timeout=300)
    doc = requests.get(daemon, timeout=30).json()
    check("--container-access: plugin daemon calls the api through host.docker.internal",
          doc.get("ok") is True and "host.docker.internal" in doc.get("url", ""), doc)


def test_up_runs_all_three_with_honcho(devenv):
    before = devenv.tracked_pids()
    devenv.invoke("dev.stop", "--keep-middleware", timeout=180)
    gone = [p for p in before if os.path.exists(f"/proc/{p}")]
    middleware = {m["service"]: (m["state"], m["health"]) for m in devenv.status()["middleware"]}
    core = ("db_postgres", "redis", "sandbox", "ssrf_proxy", "plugin_daemon")
    check("dev.stop --keep-middleware ends the app processes and keeps the middleware running, healthy",
          not gone and all(middleware.get(n) == ("running", "healthy") for n in core),
          f"left {gone}, middleware {middleware}")
    started = time.monotonic()
    devenv.invoke("dev.up", "--detach", timeout=300)
    record("dev.up until api, worker and web answer", time.monotonic() - started)
    apps = {a["name"]: a for a in devenv.status()["apps"]}
    check("dev.up: honcho runs api, worker and web", all(apps[n]["state"] == "running" for n in ("up", "api", "worker", "web"))
          and apps["api"]["health"] == "healthy", {n: apps[n]["state"] for n in apps})
    log = (devenv.state / "logs" / "up.log").read_text()
    check("dev.up: one log, prefixed by process", all(f"{n}.1" in log for n in ("api", "worker", "web")),
          [n for n in ("api", "worker", "web") if f"{n}.1" in log])
    doc, _ = run_task(devenv, "under honcho")
    check("dev.up: a task runs", doc is not None and doc["state"] == "SUCCESS", doc and doc["state"])


def test_reset_wipes_data(devenv):
    requests.post(devenv.url("api", "/console/api/messages"), json={"body": "before reset"}, timeout=5)
    result = devenv.invoke("dev.reset", "--yes", timeout=600)
    counts = devenv.invoke("dev.db", "--command", "select count(*) from messages").stdout
    check("dev.reset wiped the data and migrated again", counts.split()[2] == "0" if len(counts.split()) > 2 else False,
          " ".join(counts.split()) + " | " + result.stdout.strip().splitlines()[-1])


def test_stop_leaves_no_process_and_no_container(devenv):
    before = devenv.tracked_pids()
    devenv.invoke("dev.stop", timeout=300)
    gone = [p for p in before if os.path.exists(f"/proc/{p}")]
    stragglers = [line for line in os.popen("ps -eo pid,args").read().splitlines() if str(devenv.src) in line]
    for proc in Path("/proc").glob("[0-9]*"):
        try:  # processes working inside the checkout (pnpm, node) even when their args do not say so
            if os.readlink(proc / "cwd").startswith(str(devenv.src)):
                stragglers.append(f"{proc.name} cwd {os.readlink(proc / 'cwd')}")
        except OSError:
            pass
    check("dev.stop: no app process left", not gone and not stragglers, stragglers or f"{len(before)} tracked, 0 left")
    check("dev.stop: no container left", not devenv.containers(), devenv.containers())
    from difyops.probes import port_in_use  # binds as servers do (SO_REUSEADDR: TIME_WAIT is not "taken")

    free = [key for key in ("DEV_API_PORT", "DEV_WEB_PORT", "EXPOSE_POSTGRES_PORT")
            if not port_in_use("127.0.0.1", devenv.ports[key])]
    check("dev.stop: ports are free again", len(free) == 3, free)


def test_start_api_refused_when_middleware_down(devenv):
    result = devenv.invoke("dev.start-api", check=False)
    last = (result.stderr.strip().splitlines() or [""])[-1]
    check("start-api with the middleware down: refused", result.returncode != 0
          and "middleware is not running" in last and not devenv.tracked_pids(), last)
