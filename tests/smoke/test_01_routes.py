"""Smoke: the full topology, deployed with the Dify stand-in, answers through nginx on 127.0.0.1."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import time

import requests
from smokestack import SERVICES
from testkit import ROOT, check, healthy, prod_status

TIMEOUT = 10
V1_REVISIONS = ["0001_messages", "0002_task_results", "0003_upload_files"]


def get(stack, path, **kw):
    return requests.get(stack.base + path, timeout=kw.pop("timeout", TIMEOUT), **kw)


def test_every_container_healthy(stack):
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"name=^{stack.name}-",
         "--format", '{{.Label "com.docker.compose.project"}} {{.Label "com.docker.compose.service"}} {{.Status}}'],
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()
    services = sorted((line.split()[0].removeprefix(f"{stack.name}-"), line.split()[1]) for line in out)
    unhealthy = [line for line in out if not line.endswith("(healthy)")]
    check("every container is healthy, one per service", services == SERVICES and not unhealthy,
          f"{len(out)} containers, not healthy: {unhealthy or 'none'}"
          + ("" if services == SERVICES else f"; services {services}, expected {SERVICES}"))


def test_status_shows_every_service_healthy(stack):
    rows = prod_status(stack.invoke)
    services = sorted((r.get("cluster"), r.get("service")) for r in rows)
    not_healthy = {r.get("service"): (r.get("state"), r.get("health"), r.get("replicas")) for r in rows
                   if not healthy(r, replicas=1)}
    check("prod.status --json lists every service, each running, healthy, 1/1", services == SERVICES
          and not not_healthy, not_healthy or f"{len(rows)} services healthy")


def test_web_root(stack):
    r = get(stack, "/")
    check("/ serves the web page", r.status_code == 200 and "Dify stand-in web" in r.text,
          f"{r.status_code} {r.text[:60]!r}")
    r = get(stack, "/explore/apps")
    check("/explore goes to web", r.status_code == 200 and "Dify stand-in web" in r.text, r.status_code)


def test_api_routes(stack):
    for path in ("/console/api/ping", "/v1/ping", "/api/ping", "/mcp/ping", "/triggers/ping"):
        r = get(stack, path)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        check(f"{path} reaches the api", r.status_code == 200 and body.get("served_by") == "api",
              f"{r.status_code} {body}")


def test_plugin_daemon_route(stack):
    r = requests.post(stack.base + "/e/hook-123/run", json={}, timeout=TIMEOUT)
    body = r.json()
    check("/e/ reaches the plugin daemon with Dify-Hook-Url", r.status_code == 200
          and body.get("served_by") == "plugin_daemon" and "/e/hook-123/run" in str(body.get("dify_hook_url")),
          body)


def test_write_and_read_back(stack):
    r = requests.post(stack.base + "/console/api/messages", json={"body": "hello from smoke"}, timeout=TIMEOUT)
    msg_id = r.json().get("id")
    back = get(stack, f"/console/api/messages/{msg_id}").json()
    check("a row written through the gateway reads back", back.get("body") == "hello from smoke", back)


def test_support_cluster_reachable_from_api(stack):
    sandbox = get(stack, "/console/api/sandbox").json()
    check("api reaches the sandbox (ssrf network) with its key", sandbox.get("sandbox_status") == 200,
          {k: sandbox.get(k) for k in ("sandbox_url", "sandbox_status")})
    plugin = get(stack, "/console/api/plugin").json()
    check("api reaches the plugin daemon with its key", plugin.get("plugin_daemon_status") == 200,
          {k: plugin.get(k) for k in ("plugin_daemon_url", "plugin_daemon_status")})


def test_celery_task_completes(stack):
    r = requests.post(stack.base + "/v1/tasks", json={"input": "smoke"}, timeout=TIMEOUT)
    task_id = r.json()["task_id"]
    deadline = time.monotonic() + 60
    state = {}
    while time.monotonic() < deadline:
        state = get(stack, f"/v1/tasks/{task_id}").json()
        if state.get("state") in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.5)
    expected = hashlib.sha256(b"smoke").hexdigest()
    check("a Celery task runs through Redis and records its result", state.get("state") == "SUCCESS"
          and state.get("result") == expected, {k: state.get(k) for k in ("state", "queue", "result")})


def test_sse_arrives_event_by_event(stack):
    count, interval = 10, 0.3
    arrivals = []
    started = time.monotonic()
    with requests.get(stack.base + f"/v1/sse?count={count}&interval={interval}", stream=True,
                      timeout=30) as r:
        accel = r.headers.get("X-Accel-Buffering")
        for line in r.iter_lines(chunk_size=1):
            if line.startswith(b"data:") and json.loads(line[5:]).get("event") == "message":
                arrivals.append(time.monotonic() - started)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Buffered, the events would land together at the end: gaps near zero.
    steady = len(arrivals) == count and min(gaps) > interval * 0.5
    check("SSE events arrive one by one, not in a burst", steady and accel == "no",
          f"{len(arrivals)} events, gaps {min(gaps):.2f}..{max(gaps):.2f}s, X-Accel-Buffering={accel}")


def test_upload_lands_in_storage_and_comes_back(stack):
    # Above nginx's 1 MB default and within UPLOAD_FILE_SIZE_LIMIT (30 MB in the smoke .env):
    # the gateway's body limit must follow Dify's upload limit.
    data = os.urandom(20 * 1024 * 1024)
    r = requests.post(stack.base + "/console/api/files/upload", files={"file": ("smoke.bin", data)},
                      timeout=60)
    check("a 20 MB upload passes the gateway (no 413)", r.status_code in (200, 201), r.status_code)
    info = r.json()
    back = get(stack, f"/files/{info['id']}", timeout=60)
    same = hashlib.sha256(back.content).hexdigest() == hashlib.sha256(data).hexdigest()
    check("the upload comes back byte for byte", back.status_code == 200 and same,
          f"{back.status_code}, {len(back.content)} bytes")
    # The file is in the shared storage volume: the worker (another cluster) sees it.
    key = info.get("key")
    seen = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{stack.name}-storage:/s:ro", "--entrypoint", "sh",
         "difyops-standin/dify-api:v1", "-c", f"stat -c %s /s/{key}"],
        capture_output=True, text=True,
    )
    check("the upload is in the storage volume", seen.stdout.strip() == str(len(data)),
          f"{key}: {seen.stdout.strip() or seen.stderr.strip()[-200:]}")


def test_migrations_ran_once(stack):
    out = subprocess.run(
        ["docker", "exec", f"{stack.name}-data-db_postgres-1", "psql", "-U", "postgres", "-d", "dify", "-Atc",
         "select version || ' ' || coalesce(applied_by, '-') from stand_in_migrations order by version"],
        capture_output=True, text=True,
    )
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    versions = [r[0] for r in rows]
    appliers = sorted({r[1] for r in rows if len(r) > 1})
    # The hostname of a container is its short id: a migration applied by a replica that serves
    # (api, worker or beat with MIGRATION_ENABLED=true) names one of these.
    serving = subprocess.run(["docker", "ps", "--filter", f"name=^{stack.name}-(api|worker)", "--format", "{{.ID}}"],
                             capture_output=True, text=True, check=True).stdout.split()
    check("migrations ran once, every revision, all in one one-shot job (no replica that serves migrated)",
          out.returncode == 0 and versions == V1_REVISIONS and len(appliers) == 1 and not set(appliers) & set(serving),
          {"revisions": versions, "applied by": appliers, "serving containers": len(serving)}
          if out.returncode == 0 else out.stderr.strip()[-200:])


def test_logs_filter_by_level(stack):
    everything = stack.invoke("prod.logs", "api", "--tail", "500", "--level", "info").stdout.splitlines()
    warnings = stack.invoke("prod.logs", "api", "--tail", "500", "--level", "warning").stdout.splitlines()
    info_lines = [ln for ln in warnings if '"severity": "INFO"' in ln]
    check("prod.logs --level filters the api's JSON logs", len(everything) > len(warnings) and not info_lines,
          f"{len(everything)} lines at info and above, {len(warnings)} at warning and above")


# ---------------------------------------------------------------------------------------------
# What the real images require (issue 10): the stand-in is as strict as they are, so these fail
# where the real images would. Values of secrets are compared, never printed.
# ---------------------------------------------------------------------------------------------
# difyops' own settings by name (backups, monitoring, the HA layer): no Dify container may see one.
OPS_PREFIXES = ("DIFYOPS_", "GRAFANA_", "PATRONI_", "ALERTMANAGER_", "PROMETHEUS_", "RESTIC_", "LOKI_")
OPS_SECRETS = ("GRAFANA_ADMIN_PASSWORD", "PATRONI_REPLICATION_PASSWORD", "PATRONI_RESTAPI_PASSWORD",
               "DIFYOPS_BACKUP_RESTIC_PASSWORD")
# Dify secrets the plugin daemon does not read: its plugins must not get them either.
NOT_FOR_PLUGINS = ("SECRET_KEY", "SANDBOX_API_KEY", "CODE_EXECUTION_API_KEY", "WEAVIATE_API_KEY", "INIT_PASSWORD")


def container(stack, service: str) -> str:
    out = subprocess.run(
        ["docker", "ps", "--filter", f"name=^{stack.name}-", "--filter", f"label=com.docker.compose.service={service}",
         "--format", "{{.Names}}"], capture_output=True, text=True, check=True).stdout.split()
    assert out, f"no running {service} container of {stack.name}"
    return sorted(out)[0]


def inspect(name: str) -> dict:
    out = subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def container_env(name: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in inspect(name)["Config"]["Env"])


def stack_env(stack) -> dict[str, str]:
    from difyops import envfile

    return envfile.read(stack.env_file)


def secret_values(env: dict[str, str], keys) -> dict[str, str]:
    """value -> key, for the keys that hold a secret (short values are not secrets)."""
    return {env[k]: k for k in keys if len(env.get(k) or "") >= 16}


def ops_secrets(env: dict[str, str]) -> dict[str, str]:
    """The secret values among difyops' own settings: the known ones, and any other of its names
    that says it holds a password, key or token."""
    keys = [k for k in env if k.startswith(OPS_PREFIXES) and re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", k)]
    return secret_values(env, (*OPS_SECRETS, *keys))


def test_plugin_daemon_starts_with_a_configuration_0_5_3_accepts(stack):
    name = container(stack, "plugin_daemon")
    state = inspect(name)["State"]
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
    check("the plugin daemon runs, healthy, never restarted (no configuration refusal)",
          state.get("Health", {}).get("Status") == "healthy" and inspect(name)["RestartCount"] == 0
          and "invalid configuration" not in logs,
          {"health": state.get("Health", {}).get("Status"), "restarts": inspect(name)["RestartCount"]})


def test_plugin_debugging_port_stays_on_the_stack_networks(stack):
    name = container(stack, "plugin_daemon")
    bindings = inspect(name)["NetworkSettings"]["Ports"] or {}
    published = {port: hosts for port, hosts in bindings.items() if hosts}
    check("the debugging port is not published on the host by default", not published, published or "none")
    api = container(stack, "api")
    probe = subprocess.run(
        ["docker", "exec", api, "python3", "-c",
         "import socket; s = socket.create_connection(('plugin_daemon', 5003), 5); print(s.recv(200).decode())"],
        capture_output=True, text=True, timeout=30)
    check("the debugging port answers inside the stack (remote installing on, as 0.5.3 defaults)",
          probe.returncode == 0 and "debugging" in probe.stdout, (probe.stdout or probe.stderr).strip()[-200:])


def test_web_listens_where_it_is_probed(stack):
    info = get(stack, "/_standin/info").json()
    health = inspect(container(stack, "web"))["State"].get("Health", {}).get("Status")
    check("the web binds every address (HOSTNAME=0.0.0.0), so 127.0.0.1's healthcheck sees it",
          info.get("listening_on") == "0.0.0.0:3000" and health == "healthy",
          {"listening_on": info.get("listening_on"), "health": health})


def test_web_gets_the_variables_dify_web_reads(stack):
    settings = get(stack, "/_standin/info").json()["settings"]
    env = stack_env(stack)
    expected = {"LOOP_NODE_MAX_COUNT": "77", "MAX_TREE_DEPTH": "42", "ALLOW_UNSAFE_DATA_SCHEME": "true",
                "MAX_TOOLS_NUM": env.get("MAX_TOOLS_NUM", "10"), "ENABLE_WEBSITE_WATERCRAWL": "true",
                "CONSOLE_API_URL": stack.base, "NEXT_PUBLIC_SOCKET_URL": stack.base.replace("http://", "ws://")}
    wrong = {k: settings.get(k) for k, v in expected.items() if settings.get(k) != v}
    check("the web gets Dify's web variables from .env (limits, public URLs, socket URL)", not wrong,
          wrong or sorted(expected))


def test_public_urls_reach_the_api_from_one_origin(stack):
    env = container_env(container(stack, "api"))
    expected = {key: stack.base for key in ("CONSOLE_API_URL", "CONSOLE_WEB_URL", "SERVICE_API_URL", "APP_API_URL",
                                            "APP_WEB_URL", "FILES_URL", "TRIGGER_URL")}
    expected["ENDPOINT_URL_TEMPLATE"] = stack.base + "/e/{hook_id}"
    wrong = {k: env.get(k) for k, v in expected.items() if env.get(k) != v}
    check("env.init --url gave the api every public URL from one origin", not wrong, wrong or stack.base)


def test_socket_io_is_routed_to_the_api(stack):
    r = get(stack, "/socket.io/?EIO=4&transport=polling")
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    check("/socket.io/ reaches the api (which serves Socket.IO at Dify 1.13.3)", body.get("served_by") == "api",
          f"{r.status_code} {body or r.text[:60]!r}")


def test_ssrf_proxy_lets_an_allowed_private_host_through_and_no_other(stack):
    allowed = get(stack, "/console/api/ssrf?url=http://web:3000/_standin/info").json()
    denied = get(stack, "/console/api/ssrf?url=http://plugin_daemon:5002/health/check").json()
    check("api -> SSRF proxy -> web (listed in SSRF_PROXY_ALLOW_PRIVATE_DOMAINS) passes",
          allowed.get("upstream_status") == 200, {k: allowed.get(k) for k in ("url", "upstream_status", "error")})
    check("api -> SSRF proxy -> plugin_daemon (private, not listed) is refused",
          denied.get("upstream_status") == 403, {k: denied.get(k) for k in ("url", "upstream_status", "error")})
    sandbox = container(stack, "sandbox")
    key = stack_env(stack)["SANDBOX_API_KEY"]
    seen = {}
    for target in ("http://web:3000/", "http://plugin_daemon:5002/health/check"):
        out = subprocess.run(["docker", "exec", sandbox, "curl", "-s", "-G", "-H", f"X-Api-Key: {key}",
                              "--data-urlencode", f"url={target}", "http://127.0.0.1:8194/standin/fetch"],
                             capture_output=True, text=True, timeout=30)
        seen[target] = (json.loads(out.stdout) if out.stdout.startswith("{") else {}).get("status")
    check("sandboxed code (through the proxy, its only way out) reaches web and not plugin_daemon",
          seen == {"http://web:3000/": 200, "http://plugin_daemon:5002/health/check": 403}, seen)


def test_ssrf_proxy_allows_a_listed_private_address(stack):
    """The address list, on a throwaway squid of the project's image and config beside the stack:
    the web container's address passes, the plugin daemon's (same network) does not."""
    network = f"{stack.name}-app"
    web_ip = inspect(container(stack, "web"))["NetworkSettings"]["Networks"][network]["IPAddress"]
    daemon_ip = inspect(container(stack, "plugin_daemon"))["NetworkSettings"]["Networks"][network]["IPAddress"]
    name = f"{stack.name}-ssrf-iptest"
    proxy = subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", network, "--entrypoint", "sh",
         "-e", f"SSRF_PROXY_ALLOW_PRIVATE_IPS={web_ip}/32",
         "-v", f"{ROOT}/compose/ssrf_proxy/squid.conf.template:/etc/squid/squid.conf.template:ro",
         "-v", f"{ROOT}/compose/ssrf_proxy/docker-entrypoint.sh:/difyops/docker-entrypoint.sh:ro",
         "-v", f"{ROOT}/compose/ssrf_proxy/start-squid.sh:/difyops/start-squid.sh:ro",
         "difyops-local/squid:6", "/difyops/docker-entrypoint.sh"], capture_output=True, text=True)
    try:
        assert proxy.returncode == 0, proxy.stderr
        api = container(stack, "api")
        codes = {}
        for target in (f"http://{web_ip}:3000/", f"http://{daemon_ip}:5002/health/check"):
            out = ""
            for _ in range(20):  # squid takes a moment to listen; bounded
                out = subprocess.run(["docker", "exec", api, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                      "-x", f"http://{name}:3128", target], capture_output=True, text=True,
                                     timeout=30).stdout
                if out not in ("000", ""):
                    break
                time.sleep(0.5)
            codes["web" if web_ip in target else "plugin_daemon"] = out
        check("SSRF_PROXY_ALLOW_PRIVATE_IPS=<web>/32: web passes, plugin_daemon is refused",
              codes == {"web": "200", "plugin_daemon": "403"}, codes)
    finally:
        subprocess.run(["docker", "rm", "-fv", name], capture_output=True)


def test_a_plugin_process_sees_no_secret_it_does_not_need(stack):
    daemon = container(stack, "plugin_daemon")
    out = subprocess.run(["docker", "exec", daemon, "curl", "-fsS", "http://127.0.0.1:5002/standin/plugin-env"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    plugin = json.loads(out.stdout)["plugin"]
    env = stack_env(stack)
    forbidden = {**ops_secrets(env), **secret_values(env, NOT_FOR_PLUGINS)}
    digests = set(plugin["sha256"].values())
    leaked = sorted(key for value, key in forbidden.items()
                    if hashlib.sha256(value.encode()).hexdigest() in digests)
    ops_names = sorted(n for n in plugin["names"] if n.startswith(OPS_PREFIXES) or n in NOT_FOR_PLUGINS)
    check("a plugin process (started as 0.5.3 starts one, with the daemon's whole environment) holds no "
          "difyops secret and no Dify secret the daemon does not read",
          not leaked and not ops_names and "SERVER_KEY" in plugin["names"],
          {"variables": len(plugin["names"]), "secret values found": leaked or "none",
           "ops names found": ops_names or "none"})


def test_dify_containers_see_no_ops_secret(stack):
    env = stack_env(stack)
    ops_values = ops_secrets(env)
    found = {}
    for service in ("api", "worker", "worker_beat", "web", "sandbox", "plugin_daemon", "ssrf_proxy"):
        seen = container_env(container(stack, service))
        names = sorted(n for n in seen if n.startswith(OPS_PREFIXES))
        values = sorted(ops_values[v] for v in seen.values() if v in ops_values)
        if names or values:
            found[service] = {"names": names[:8], "secret values of": values}
    check("no Dify container (api, worker, beat, web, sandbox, plugin daemon, SSRF proxy) holds a difyops "
          "variable or secret", not found, found or f"{len(ops_values)} ops secrets looked for")
    dify_env = container_env(container(stack, "api"))
    check("a Dify variable added to .env still reaches the api", dify_env.get("LOOP_NODE_MAX_COUNT") == "77",
          dify_env.get("LOOP_NODE_MAX_COUNT"))


# ---------------------------------------------------------------------------------------------
# The stand-in's own strictness (no stack): it refuses and binds as the real images do.
# ---------------------------------------------------------------------------------------------
STANDIN_DAEMON = "difyops-standin/dify-plugin-daemon:v1"
STANDIN_WEB = "difyops-standin/dify-web:v1"
DAEMON_ENV = {"SERVER_KEY": "k" * 32, "DIFY_INNER_API_URL": "http://api:5001", "DIFY_INNER_API_KEY": "i" * 32,
              "DB_USERNAME": "postgres", "DB_PASSWORD": "p" * 32, "DB_HOST": "db_postgres", "DB_PORT": "5432",
              "DB_DATABASE": "dify_plugin", "PLUGIN_WORKING_PATH": "/app/storage/cwd",
              "PLUGIN_REMOTE_INSTALLING_HOST": "0.0.0.0", "PLUGIN_REMOTE_INSTALLING_PORT": "5003"}


def run_daemon(env: dict[str, str]) -> subprocess.CompletedProcess:
    args = ["docker", "run", "--rm", "--network", "none"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return subprocess.run(args + [STANDIN_DAEMON], capture_output=True, text=True, timeout=60)


def test_standin_daemon_refuses_what_0_5_3_refuses():
    cases = {
        "no PLUGIN_REMOTE_INSTALLING_HOST": ({k: v for k, v in DAEMON_ENV.items()
                                              if k != "PLUGIN_REMOTE_INSTALLING_HOST"},
                                             1, "plugin remote installing host is empty"),
        "no PLUGIN_REMOTE_INSTALLING_PORT": ({k: v for k, v in DAEMON_ENV.items()
                                              if k != "PLUGIN_REMOTE_INSTALLING_PORT"},
                                             1, "plugin remote installing port is empty"),
        "no SERVER_KEY": ({k: v for k, v in DAEMON_ENV.items() if k != "SERVER_KEY"}, 1, "'SERVER_KEY'"),
        "empty DB_PORT": ({**DAEMON_ENV, "DB_PORT": ""}, 2, "error processing environment variables"),
        "DB_SSL_MODE=prefer": ({**DAEMON_ENV, "DB_SSL_MODE": "prefer"}, 1, "'oneof'"),
    }
    for label, (env, code, needle) in cases.items():
        result = run_daemon(env)
        check(f"stand-in daemon refuses {label}", result.returncode == code and needle in result.stderr,
              f"exit {result.returncode}: {(result.stderr.strip().splitlines() or [''])[-1][:160]}")


def test_standin_web_binds_hostname_as_nextjs_standalone_does():
    name = f"standin-web-bind-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--name", name, STANDIN_WEB], capture_output=True, check=True)
    try:
        probe = "wget -q -O /dev/null http://{}:3000/ && echo up || echo down"
        seen = {}
        for _ in range(40):  # bounded: the server starts in about a second
            seen = {where: subprocess.run(["docker", "exec", name, "sh", "-c", probe.format(host)],
                                          capture_output=True, text=True).stdout.strip()
                    for where, host in (("127.0.0.1", "127.0.0.1"), ("$HOSTNAME", "$HOSTNAME"))}
            if seen["$HOSTNAME"] == "up":
                break
            time.sleep(0.25)
        check("with Docker's HOSTNAME (the container id) the stand-in web answers on its address, "
              "not on 127.0.0.1", seen == {"127.0.0.1": "down", "$HOSTNAME": "up"}, seen)
    finally:
        subprocess.run(["docker", "rm", "-fv", name], capture_output=True)
