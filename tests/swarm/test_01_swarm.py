"""prod.deploy --target swarm on a real 3-node Swarm: deploy, upgrade under load, a plugin daemon
with another start command, lose a node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from swarmlab import Load
from testkit import ROOT, Streamed, check, record, swarm_status, websocket_echo

sys.path.insert(0, str(ROOT))
from benchmarks.loadgen import SseStream  # noqa: E402

CLUSTERS = "data,support,api,worker,web,gateway"


def get_json(port: int, path: str) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # the stand-in answers JSON on errors too
        return json.loads(exc.read() or b"{}")


def ping(port: int) -> dict:
    return get_json(port, "/console/api/ping")


def post_json(port: int, path: str, doc: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(doc).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_run(port: int, run_id: str, states: tuple[str, ...], seconds: float) -> dict:
    """The workflow run (GET /v1/workflows/run/<id> through the gateway) once in one of `states`."""
    deadline, doc = time.monotonic() + seconds, {}
    while time.monotonic() < deadline:
        doc = get_json(port, f"/v1/workflows/run/{run_id}")
        if doc.get("state") in states:
            break
        time.sleep(0.5)
    return doc


def redis_set(st, key: str, value: str) -> str:
    """SET in the data stack's Redis (Dify's db 0), on the manager; its password from .env through
    the docker CLI's environment (`exec -e NAME` without a value), never on a command line."""
    env = dict(line.split("=", 1) for line in st.env_file.read_text().splitlines() if "=" in line and line[0] != "#")
    cid = st.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={st.name}-data_redis").stdout.split()
    assert cid, f"no task of {st.name}-data_redis runs on the manager"
    out = subprocess.run(["docker", "--context", st.lab.context, "exec", "-e", "REDISCLI_AUTH", cid[0],
                          "redis-cli", "SET", key, value, "EX", "900"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "REDISCLI_AUTH": env["REDIS_PASSWORD"]})
    return (out.stdout + out.stderr).strip()


def draining_task(st, service: str) -> str | None:
    """A task of `service` Swarm is stopping (desired Shutdown) that still runs: a worker draining."""
    out = st.docker("service", "ps", service, "--format", "{{.ID}}\t{{.DesiredState}}\t{{.CurrentState}}").stdout
    for line in out.splitlines():
        task, desired, current = (line.split("\t") + ["", "", ""])[:3]
        if desired == "Shutdown" and current.startswith("Running"):
            return task
    return None


def nodes_of(rows, service: str) -> list[str]:
    return sorted(node for name, node, _ in rows if name.rsplit(".", 1)[0] == service)


def running_tasks(st, service: str) -> list[str]:
    """The ids of a service's tasks Swarm wants running (a replaced task gets a new id)."""
    out = st.docker("service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", service).stdout
    return sorted(out.split())


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
    record("swarm: deploy data, support, api, worker, web, gateway", time.monotonic() - started)
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
    rows = swarm_status(st.invoke, ctx)
    replicas = {r.get("service", "").removeprefix(f"{st.name}-{r.get('cluster')}_"): r.get("replicas") for r in rows}
    short = {s: n for s, n in replicas.items() if not n or n.get("running") != n.get("desired") or not n.get("desired")}
    check("prod.status --target swarm --json: every service of the six stacks runs all its replicas (api, web: 2)",
          sorted({r.get("cluster") for r in rows}) == sorted(CLUSTERS.split(",")) and not short
          and replicas.get("api") == {"running": 2, "desired": 2} and replicas.get("web") == {"running": 2, "desired": 2},
          short or replicas)
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
    # The api runs as uid 1001 on nodes whose storage volume was new (root's): it must write there.
    import requests

    uploads = [requests.post(f"http://127.0.0.1:{st.port}/console/api/files/upload", timeout=30,
                             files={"file": ("swarm.txt", b"written on a swarm node\n")}) for _ in range(4)]
    check("uploads through the gateway are stored", all(r.status_code == 201 for r in uploads),
          [(r.status_code, r.json().get("hostname")) for r in uploads])
    # Every replica, on its own node (the gateway's keepalive connections may all reach one): the
    # api's user writes its storage volume there.
    written = {}
    for node in st.lab.nodes:
        short = node.name.rsplit("-", 1)[-1]
        if short not in api_nodes:
            continue
        for cid in node.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={st.name}-api_api").stdout.split():
            probe = node.docker("exec", cid, "sh", "-c", "id -u && echo x > /app/api/storage/.swarm-write-check "
                                "&& rm /app/api/storage/.swarm-write-check && echo written", check=False)
            written[short] = (probe.returncode, probe.stdout.split())
    check("the api replicas write their storage volume on every node (given to uid 1001 first)",
          sorted(written) == sorted(api_nodes) and all(v == (0, ["1001", "written"]) for v in written.values()),
          written)


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


def test_03_a_plugin_daemon_with_another_start_command(swarm_stack):
    # Plugin daemon 0.6 changed its ENTRYPOINT and CMD (tini; a CMD that migrates, no
    # /app/entrypoint.sh): the secrets shim must run what the image itself says, read from it.
    st = swarm_stack
    DAEMON_06 = st.daemon_06
    st.set_env("DIFY_PLUGIN_DAEMON_IMAGE", DAEMON_06)
    started = time.monotonic()
    result = st.invoke("prod.deploy", "--target", "swarm", "--context", st.lab.context, "--clusters", "support",
                       check=False)
    record("swarm: plugin daemon moved to a 0.6-shaped image", time.monotonic() - started)
    print(result.stderr[-2000:])
    spec = json.loads(st.docker("service", "inspect", f"{st.name}-support_plugin_daemon").stdout or "[{}]")[0]
    container = (spec.get("Spec") or {}).get("TaskTemplate", {}).get("ContainerSpec", {})
    check("the support stack deploys the daemon of another start command", result.returncode == 0,
          (result.stderr.strip().splitlines() or [""])[-1])
    check("the shim runs the image's own ENTRYPOINT and CMD, read from the image",
          container.get("Image", "").startswith(DAEMON_06) and container.get("Command") ==
          ["/bin/sh", "/difyops/secrets-env.sh", "/usr/bin/env", "--", "/bin/bash", "-c",
           "/app/commandline migrate && exec python3 /app/daemon/server.py"], container.get("Command"))
    plugin = get_json(st.port, "/console/api/plugin")
    check("the api reaches the new daemon with its key (its secret came through the shim)",
          plugin.get("plugin_daemon_status") == 200, {k: plugin.get(k) for k in ("plugin_daemon_url", "plugin_daemon_status")})


def test_03b_release_upgrade_under_load(swarm_stack):
    # Issue 11 on Swarm: the stack deployed as Dify 1.13.3 (v1 stand-in; its api and daemon moved
    # since by the steps above) goes to 1.16.1 (the v3 stand-in, a TEST DOUBLE) with prod.upgrade
    # --target swarm, under load through the gateway, with a workflow run in flight on the old
    # worker (it must finish there while that worker drains) and an SSE stream in flight on an old
    # api replica while the api is replaced.
    from conftest import V3_IMAGES

    st = swarm_stack
    ctx = st.lab.context
    worker = f"{st.name}-worker_worker"
    run = post_json(st.port, "/v1/workflows/run", {"inputs": {"q": "across releases on swarm"}, "seconds": 600,
                                                   "until": "swarmrelease"})
    started_run = wait_run(st.port, run["workflow_run_id"], ("STARTED", "SUCCESS", "FAILURE"), 60)
    check("a workflow run is in flight on the 1.13.3 worker before the upgrade",
          started_run.get("state") == "STARTED", {k: started_run.get(k) for k in ("state", "queue", "worker")})
    images = [arg for key, ref in V3_IMAGES.items() for arg in ("--image", f"{key}={ref}")]
    gateway_tasks = running_tasks(st, f"{st.name}-gateway_nginx")
    before_ws = websocket_echo(st.port)[0]
    sse = SseStream(f"http://127.0.0.1:{st.port}/v1/sse?count=80&interval=0.5", count=80, timeout=180)
    in_flight, draining = {}, None
    with Load(st.port, max_seconds=900) as load:
        time.sleep(3)
        started = time.monotonic()
        upgrade = Streamed(st, "prod.upgrade", "--version", "1.16.1", *images, "--target", "swarm", "--context", ctx,
                           timeout=1500)
        # The stream begins as the api phase does: it is on an old replica when that one is replaced.
        api_phase = upgrade.wait_for_line(r"\bapi: stack \S+-api ", 600)
        sse.start()
        # The old worker stops taking tasks once Swarm tells it to stop; the run must go on there.
        deadline = time.monotonic() + 600
        while draining is None and upgrade.proc.poll() is None and time.monotonic() < deadline:
            draining = draining_task(st, worker)
            time.sleep(1)
        if draining:
            time.sleep(3)  # it has had SIGTERM: it takes nothing new, and must keep the run going
            in_flight = wait_run(st.port, run["workflow_run_id"], ("STARTED", "SUCCESS", "FAILURE"), 10)
        print(f"api phase began: {api_phase}; old worker task draining: {draining}; "
              f"run then {in_flight.get('state')}; release key: {redis_set(st, 'standin:workflow:release:swarmrelease', '1')}")
        result = upgrade.finish()
        record("swarm: release upgrade 1.13.3 -> 1.16.1 under load", time.monotonic() - started)
        time.sleep(3)
    sse.join(timeout=180)
    print(result.stdout[-3000:])
    print(result.stderr[-4000:])
    print(f"release upgrade under load: {load.total} requests, {load.failed} failed {load.errors}, "
          f"versions {load.versions}; sent again after the gateway closed an idle kept-alive connection "
          f"(its reload): {load.retried}")
    check("prod.upgrade --version 1.16.1 --target swarm succeeds", result.returncode == 0,
          (result.stderr.strip().splitlines() or [""])[-1])
    env = dict(line.split("=", 1) for line in st.env_file.read_text().splitlines() if "=" in line and line[0] != "#")
    check("DIFY_VERSION=1.16.1 in .env after the upgrade", env.get("DIFY_VERSION") == "1.16.1", env.get("DIFY_VERSION"))
    rows = swarm_status(st.invoke, ctx)
    replicas = {r.get("service", "").removeprefix(f"{st.name}-{r.get('cluster')}_"): r.get("replicas") for r in rows}
    wanted = ("api", "api_websocket", "worker", "worker_beat", "web", "sandbox", "ssrf_proxy", "plugin_daemon",
              "agent_backend", "local_sandbox", "agent_ssrf_proxy")
    short = {s: replicas.get(s) for s in wanted
             if not replicas.get(s) or not replicas[s].get("desired") or replicas[s].get("running") != replicas[s].get("desired")}
    check("every service of 1.16.1 runs all its replicas", not short, short or {s: replicas[s] for s in wanted})
    specs = {s: json.loads(st.docker("service", "inspect", f"{st.name}-{c}_{s}").stdout or "[{}]")[0]
             for c, s in (("api", "api"), ("web", "web"), ("worker", "worker"), ("support", "plugin_daemon"),
                          ("support", "agent_backend"))}
    imgs = {s: (v.get("Spec") or {}).get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", "").split("@")[0]
            for s, v in specs.items()}
    check("the Dify services run the 1.16.1 (v3) images", all(i.endswith(":v3") for i in imgs.values()), imgs)
    check("requests were sent during the whole upgrade", load.total > 100, load.total)
    check("an SSE stream in flight on an old api replica while the api was replaced completed", sse.complete,
          sse.describe())
    check("the old worker was draining with the run still going", draining is not None
          and in_flight.get("state") == "STARTED", {"task": draining, "run": in_flight.get("state")})
    done = wait_run(st.port, run["workflow_run_id"], ("SUCCESS", "FAILURE"), 60)
    outputs = done.get("outputs") or {}
    check("the workflow run in flight completed on the old (1.13.3) worker as it drained",
          done.get("state") == "SUCCESS" and outputs.get("released") is True and outputs.get("image_version") == "v1",
          {k: done.get(k) for k in ("state", "error")} | {k: outputs.get(k) for k in ("released", "image_version")})
    # SWARM_PUBLISH_MODE=host (the lab has no IPVS for the routing mesh): the gateway's port is the
    # node's own, and replacing its task would close it. The release upgrade leaves the gateway's
    # task alone and switches the routes the release moves in it by a graceful reload: nothing may
    # fail, and /socket.io/ reaches the websocket api afterwards.
    after_tasks = running_tasks(st, f"{st.name}-gateway_nginx")
    check("the gateway's task is the one that ran before the upgrade (not replaced: its port never closed)",
          bool(gateway_tasks) and after_tasks == gateway_tasks, {"before": gateway_tasks, "after": after_tasks})
    check("no request failed during the release upgrade", load.failed == 0,
          f"{load.failed} of {load.total} failed: {load.failures[:20]}")
    status, sent, got = websocket_echo(st.port)
    check("/socket.io/ upgrades (101) at the websocket api after the switch (before it: the 1.13.3 api, no 101)",
          not before_ws.startswith("101") and status.startswith("101") and got == sent,
          {"before": before_ws, "after": status, "echoed": got == sent})
    check("v3 answers after the upgrade", ping(st.port).get("version", "").endswith("v3"), ping(st.port).get("version"))


def test_04_lose_a_worker_node(swarm_stack):
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
