"""prod.deploy --target swarm on a real 3-node Swarm: deploy, upgrade under load, lose a node."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "smoke"))
from smokelib import check, record  # noqa: E402
from swarmlab import Load  # noqa: E402

CLUSTERS = "data,support,api,web,gateway"


def get_json(port: int, path: str) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # the stand-in answers JSON on errors too
        return json.loads(exc.read() or b"{}")


def ping(port: int) -> dict:
    return get_json(port, "/console/api/ping")


def nodes_of(rows, service: str) -> list[str]:
    return sorted(node for name, node, _ in rows if name.rsplit(".", 1)[0] == service)


def placement(st, services) -> list[tuple[str, str, str]]:
    out = st.docker("service", "ps", "--filter", "desired-state=running", "--format",
                    "{{.Name}}\t{{.Node}}\t{{.CurrentState}}", *services).stdout
    return [tuple(line.split("\t")) for line in out.splitlines() if line.count("\t") == 2]


def test_01_deploy(swarm_stack):
    st = swarm_stack
    ctx = st.lab.context
    st.invoke("swarm.label", "manager", "data,gateway,app", "--context", ctx)
    for node in ("worker1", "worker2"):
        st.invoke("swarm.label", node, "app", "--context", ctx)
    started = time.monotonic()
    result = st.invoke("prod.deploy", "--target", "swarm", "--context", ctx, "--clusters", CLUSTERS)
    record("swarm: deploy data, support, api, web, gateway", time.monotonic() - started)
    print(result.stdout[-500:])
    print(result.stderr[-4000:])
    answer = ping(st.port)
    check("the gateway answers from the host through the manager", answer.get("pong") is True
          and answer.get("db", {}).get("ok") and answer.get("redis", {}).get("ok"),
          {k: answer.get(k) for k in ("version", "db", "redis")})
    stacks = st.docker("stack", "ls", "--format", "{{.Name}}").stdout.split()
    check("one stack per cluster", all(f"{st.name}-{c}" in stacks for c in CLUSTERS.split(",")), stacks)
    nets = {n: json.loads(st.docker("network", "inspect", f"{st.name}-{n}").stdout)[0] for n in ("backend", "app")}
    check("overlay networks, attachable, backend internal",
          all(v["Driver"] == "overlay" and v["Attachable"] for v in nets.values()) and nets["backend"]["Internal"]
          and not nets["app"]["Internal"], {n: (v["Driver"], v["Attachable"], v["Internal"]) for n, v in nets.items()})
    env = dict(line.split("=", 1) for line in st.env_file.read_text().splitlines() if "=" in line and line[0] != "#")
    specs = st.docker("service", "inspect", *[s for s in st.docker("service", "ls", "-q").stdout.split()]).stdout
    leaked = [k for k in ("DB_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY") if env.get(k) and env[k] in specs]
    check("no password in any service spec (Docker secrets instead)", not leaked and '"SecretName"' in specs,
          leaked or "none leaked, secrets attached")
    api = json.loads(st.docker("service", "inspect", f"{st.name}-api_api").stdout)[0]["Spec"]
    update = api.get("UpdateConfig", {})
    check("api updates start-first and rolls back on failure",
          update.get("Order") == "start-first" and update.get("FailureAction") == "rollback", update)
    data = placement(st, [f"{st.name}-data_db_postgres", f"{st.name}-data_redis", f"{st.name}-support_plugin_daemon"])
    check("data services and the plugin daemon (node-local volumes) run on the data node only",
          bool(data) and all(node == "manager" for _, node, _ in data), data)
    api_nodes = nodes_of(placement(st, [f"{st.name}-api_api"]), f"{st.name}-api_api")
    check("the two api replicas run on different nodes", len(api_nodes) == 2 and len(set(api_nodes)) == 2, api_nodes)
    check("no crowding warning at deploy", "replicas run on node" not in result.stderr,
          [ln for ln in result.stderr.splitlines() if "warning" in ln])
    # The support cluster: secrets reach Dify's sandbox and plugin daemon through the shim, in
    # front of their images' own start commands.
    sandbox = get_json(st.port, "/console/api/sandbox")
    check("the api runs code in the sandbox with its key (ssrf network, secret through the shim)",
          sandbox.get("sandbox_status") == 200, {k: sandbox.get(k) for k in ("sandbox_url", "sandbox_status")})
    plugin = get_json(st.port, "/console/api/plugin")
    check("the api reaches the plugin daemon with its key", plugin.get("plugin_daemon_status") == 200,
          {k: plugin.get(k) for k in ("plugin_daemon_url", "plugin_daemon_status")})


def test_02_upgrade_under_load(swarm_stack):
    st = swarm_stack
    st.set_env("DIFY_API_IMAGE", "difyops-standin/dify-api:v2")
    with Load(st.port) as load:
        time.sleep(3)
        started = time.monotonic()
        result = st.invoke("prod.deploy", "--target", "swarm", "--context", st.lab.context, "--clusters", "api")
        record("swarm: api v1 -> v2 under load", time.monotonic() - started)
        time.sleep(3)
    print(result.stderr[-3000:])
    print(f"upgrade under load: {load.total} requests, {load.failed} failed {load.errors}, versions {load.versions}")
    check("requests were sent during the whole upgrade", load.total > 100, load.total)
    check("no request failed during the start-first upgrade", load.failed == 0,
          f"{load.failed} of {load.total} failed: {load.errors}")
    check("v2 answers after the upgrade", ping(st.port).get("version", "").endswith("v2"), ping(st.port).get("version"))
    api_nodes = nodes_of(placement(st, [f"{st.name}-api_api"]), f"{st.name}-api_api")
    check("the api replicas are still on different nodes after the start-first upgrade",
          len(api_nodes) == 2 and len(set(api_nodes)) == 2, api_nodes)


def test_03_lose_a_worker_node(swarm_stack):
    st = swarm_stack
    services = [f"{st.name}-api_api", f"{st.name}-web_web"]
    before = placement(st, services)
    counts = {}
    for _, node, _ in before:
        counts[node] = counts.get(node, 0) + 1
    # A worker that runs an api replica (and as many others as any).
    api_on = set(nodes_of(before, f"{st.name}-api_api"))
    victim = max((n for n in counts if n != "manager"), key=lambda n: (n in api_on, counts[n]))
    node = next(x for x in st.lab.workers if x.name.endswith(victim))
    with Load(st.port, threads=2, max_seconds=600) as load:
        time.sleep(2)
        subprocess.run(["docker", "kill", node.name], check=True, capture_output=True)
        killed = time.monotonic()
        recovered = None
        while time.monotonic() - killed < 300:  # bounded
            now = placement(st, services)
            running = [row for row in now if row[2].startswith("Running") and row[1] != victim]
            if len(running) == len(before) and all(row[1] != victim for row in now):
                recovered = time.monotonic() - killed
                break
            time.sleep(1)
    record("swarm: node loss, tasks running again elsewhere", recovered or -1)
    print(f"node loss: {victim} killed; {load.failed} of {load.total} requests failed meanwhile {load.errors}")
    check(f"api and web run again on the other nodes after {victim} is lost", recovered is not None,
          placement(st, services))
    check("the gateway answers after the node loss", ping(st.port).get("pong") is True, ping(st.port).get("version"))
    # A request in flight on the lost node when it died has no answer to wait for (its connection
    # is gone without a reset; nginx cannot resend a request it already sent): it may fail. Every
    # request sent after the node was gone must be served by the replicas left.
    late = load.failed_after(killed)
    print(f"failed requests sent before the kill returned (in flight at the loss): {load.failed - late}; "
          f"after: {late}; sent at (s from the kill): {[(round(t - killed, 2), w) for t, w in load.failures]}")
    check("no request sent after the node was lost failed (nginx retried the lost address on the other "
          "replica)", late == 0, f"{late} of {load.total} failed after the loss: {load.failures}")
