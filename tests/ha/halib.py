"""Helpers for the HA tests and the failover benchmark: an HA stack under a unique name, the Patroni
cluster's state, SQL through the HAProxy fronts, and a bounded write load that records which writes
PostgreSQL acknowledged.

Everything talks to containers through `docker exec` or a container on the stack's internal backend
network: no port is published, no traffic leaves the Docker bridges.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from difyops import config  # noqa: E402

STANDIN_IMAGES = {
    "DIFY_API_IMAGE": "difyops-standin/dify-api:v1",
    "DIFY_WEB_IMAGE": "difyops-standin/dify-web:v1",
    "DIFY_SANDBOX_IMAGE": "difyops-standin/dify-sandbox:v1",
    "DIFY_PLUGIN_DAEMON_IMAGE": "difyops-standin/dify-plugin-daemon:v1",
}
LOCAL_IMAGES = {
    "POSTGRES_IMAGE": "difyops-local/postgres:17",
    "REDIS_IMAGE": "difyops-local/redis:8",
    "NGINX_IMAGE": "difyops-local/nginx:1.26",
    "SSRF_PROXY_IMAGE": "difyops-local/squid:6",
    "PATRONI_IMAGE": "difyops-local/patroni:4",
    "ETCD_IMAGE": "difyops-local/etcd:3.5",
    "HAPROXY_IMAGE": "difyops-local/haproxy:3.0",
}
NODES = ("patroni-1", "patroni-2")


def sh(argv: list[str], timeout: float = 60, check: bool = False, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(argv[:4])} ... failed ({result.returncode}): {result.stderr[-1500:]}")
    return result


@dataclass
class HaStack:
    name: str
    env_file: Path
    reused: bool = False

    @classmethod
    def create(cls, prefix: str = "ha", extra: dict[str, str] | None = None) -> "HaStack":
        name = f"{prefix}{secrets.token_hex(3)}"
        tmp = Path(tempfile.mkdtemp(prefix=f"difyops-{name}-"))
        env_file = tmp / ".env"
        overrides = {"DIFYOPS_STACK": name, "DIFYOPS_DATA_HA": "true", **STANDIN_IMAGES, **LOCAL_IMAGES,
                     **(extra or {})}
        args = [sys.executable, "-m", "invoke", "env.init", "--env-file", str(env_file)]
        for key, value in overrides.items():
            args += ["--set", f"{key}={value}"]
        sh(args, cwd=ROOT, check=True)
        return cls(name, env_file)

    @property
    def env(self) -> dict[str, str]:
        return config.read_env(self.env_file)

    def invoke(self, *args: str, check: bool = True, timeout: int = 1200) -> subprocess.CompletedProcess:
        env = dict(os.environ, INVOKE_DIFYOPS_ENV_FILE=str(self.env_file))
        result = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def container(self, cluster: str, service: str) -> str:
        return f"{self.name}-{cluster}-{service}-1"

    def teardown(self) -> None:
        if self.reused:
            return
        self.invoke("prod.down", "all", "--volumes", "--yes", check=False, timeout=600)
        # Whatever is still there (a failed run): containers, networks, volumes of this stack only.
        for kind, listing, remove in (
            ("containers", ["docker", "ps", "-a", "--format", "{{.Names}}"], ["docker", "rm", "-f"]),
            ("networks", ["docker", "network", "ls", "--format", "{{.Name}}"], ["docker", "network", "rm"]),
            ("volumes", ["docker", "volume", "ls", "--format", "{{.Name}}"], ["docker", "volume", "rm", "-f"]),
        ):
            for item in sh(listing).stdout.split():
                if item.startswith(f"{self.name}-"):
                    sh(remove + [item])
        # The generated .env holds the stack's secrets: it goes with the stack.
        shutil.rmtree(self.env_file.parent, ignore_errors=True)

    def leftovers(self) -> list[str]:
        names = []
        for listing in (["docker", "ps", "-a", "--format", "{{.Names}}"],
                        ["docker", "network", "ls", "--format", "{{.Name}}"],
                        ["docker", "volume", "ls", "--format", "{{.Name}}"]):
            names += [n for n in sh(listing).stdout.split() if n.startswith(f"{self.name}-")]
        return names

    # ---- Patroni

    def running(self, container: str) -> bool:
        out = sh(["docker", "inspect", "-f", "{{.State.Running}}", container]).stdout.strip()
        return out == "true"

    def cluster_state(self, exclude: str | None = None) -> dict:
        """Patroni's /cluster, asked of any running node (not `exclude`)."""
        for node in NODES:
            container = self.container("data", node)
            if node == exclude or not self.running(container):
                continue
            result = sh(["docker", "exec", container, "curl", "-fsS", "--max-time", "3",
                         "http://127.0.0.1:8008/cluster"], timeout=15)
            if result.returncode == 0:
                return json.loads(result.stdout)
        return {"members": []}

    def leader(self, exclude: str | None = None) -> str | None:
        for member in self.cluster_state(exclude).get("members", []):
            if member.get("role") == "leader" and member.get("state") == "running":
                return member["name"]
        return None

    def wait_for(self, what: str, predicate, timeout: float, interval: float = 1.0):
        """Poll predicate until it returns something truthy (bounded in time); returns it or raises."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")

    # ---- SQL through the fronts

    def psql(self, sql: str, port: int = 5432, database: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        """One psql in a throw-away container on the backend network, through db_postgres:<port>."""
        env = self.env
        return sh(["docker", "run", "--rm", "--network", f"{self.name}-backend",
                   "-e", "PGPASSWORD", "-e", "PGCONNECT_TIMEOUT=3", "--entrypoint", "psql",
                   env.get("PATRONI_IMAGE") or LOCAL_IMAGES["PATRONI_IMAGE"],
                   "-h", "db_postgres", "-p", str(port), "-U", env.get("DB_USERNAME", "postgres"),
                   "-d", database or env.get("DB_DATABASE", "dify"), "-v", "ON_ERROR_STOP=1",
                   "-qAt", "-c", sql],
                  timeout=timeout, env=dict(os.environ, PGPASSWORD=env["DB_PASSWORD"]))

    # ---- the stand-in api, from inside its own container

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        argv = ["docker", "exec", self.container("api", "api"), "curl", "-sS", "--max-time", "10",
                "-o", "/dev/stdout", "-w", "\n%{http_code}", "-X", method, f"http://127.0.0.1:5001{path}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        result = sh(argv, timeout=30)
        text, _, code = result.stdout.rpartition("\n")
        try:
            doc = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            doc = {"raw": text[:200]}
        return (int(code) if code.strip().isdigit() else 0), doc


# The write load: one psql per INSERT (a fresh connection each time, as a pool's reconnect would be),
# bounded by a count and a deadline, printing `ack <id>` only when PostgreSQL confirmed the commit.
LOADER = r"""
i=0; end=$((SECONDS + MAX_SECONDS))
while [ "$i" -lt "$MAX_WRITES" ] && [ "$SECONDS" -lt "$end" ]; do
  i=$((i + 1))
  if psql -h db_postgres -p 5432 -U "$PGUSER" -d "$PGDATABASE" -qAt -v ON_ERROR_STOP=1 \
       -c "INSERT INTO $TABLE (id) VALUES ($i)" >/dev/null 2>&1; then
    echo "ack $i"
  else
    echo "err $i"
    sleep 0.2
  fi
done
echo "end $i"
"""


@dataclass
class WriteLoad:
    stack: HaStack
    table: str
    max_writes: int = 20000
    max_seconds: int = 300
    events: list[tuple[float, str, int]] = field(default_factory=list)  # (monotonic, ack|err|end, id)

    def __post_init__(self):
        self.name = f"{self.stack.name}-loader-{secrets.token_hex(2)}"
        self._proc = None
        self._thread = None
        self._lock = threading.Lock()

    def start(self) -> "WriteLoad":
        env = self.stack.env
        self._proc = subprocess.Popen(
            ["docker", "run", "--rm", "--name", self.name, "--network", f"{self.stack.name}-backend",
             "-e", "PGPASSWORD", "-e", "PGCONNECT_TIMEOUT=2",
             "-e", f"PGUSER={env.get('DB_USERNAME', 'postgres')}", "-e", f"PGDATABASE={env.get('DB_DATABASE', 'dify')}",
             "-e", f"TABLE={self.table}", "-e", f"MAX_WRITES={self.max_writes}", "-e", f"MAX_SECONDS={self.max_seconds}",
             "--entrypoint", "bash", env.get("PATRONI_IMAGE") or LOCAL_IMAGES["PATRONI_IMAGE"], "-c", LOADER],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=dict(os.environ, PGPASSWORD=env["DB_PASSWORD"]))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                with self._lock:
                    self.events.append((time.monotonic(), parts[0], int(parts[1])))

    def snapshot(self) -> list[tuple[float, str, int]]:
        with self._lock:
            return list(self.events)

    def acks_after(self, moment: float) -> int:
        return sum(1 for t, kind, _ in self.snapshot() if kind == "ack" and t > moment)

    def first_ack_after(self, moment: float) -> float | None:
        """When the first write *started* after moment was acknowledged (ids are sequential: one
        attempt at a time, so the write in flight at moment is the last id seen then, plus one)."""
        events = self.snapshot()
        in_flight = max((i for t, _, i in events if t <= moment), default=0) + 1
        return next((t for t, kind, i in events if kind == "ack" and i > in_flight), None)

    def stop(self) -> None:
        """Stop the loader container (ours, by its own name) and wait for the reader to finish."""
        sh(["docker", "rm", "-f", self.name])
        if self._proc is not None:
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def acked(self) -> set[int]:
        return {i for _, kind, i in self.snapshot() if kind == "ack"}

    @property
    def errors(self) -> int:
        return sum(1 for _, kind, _ in self.snapshot() if kind == "err")


def measure_failover(stack: HaStack, table: str, warmup_acks: int = 30, after_acks: int = 30,
                     timeout: float = 180) -> dict:
    """Kill the leader under a write load; return what happened (times in seconds, counts)."""
    created = stack.psql(f"CREATE TABLE IF NOT EXISTS {table} (id integer PRIMARY KEY, at timestamptz DEFAULT now())")
    assert created.returncode == 0, created.stderr
    old_leader = stack.leader()
    assert old_leader, "no Patroni leader before the kill"
    load = WriteLoad(stack, table).start()
    try:
        stack.wait_for(f"{warmup_acks} acknowledged writes", lambda: len(load.acked) >= warmup_acks, 120, 0.2)
        sh(["docker", "kill", stack.container("data", old_leader)], check=True)
        killed_at = time.monotonic()  # SIGKILL delivered: the leader is gone from here on
        first = stack.wait_for("the first acknowledged write after the kill",
                               lambda: load.first_ack_after(killed_at), timeout, 0.1)
        stack.wait_for(f"{after_acks} more writes", lambda: load.acks_after(first) >= after_acks, 120, 0.2)
    finally:
        load.stop()
    new_leader = stack.leader(exclude=old_leader)
    return {"old_leader": old_leader, "new_leader": new_leader, "killed_at": killed_at,
            "seconds_to_first_write": first - killed_at, "acked": load.acked, "errors": load.errors,
            "acked_before_kill": sum(1 for t, k, _ in load.snapshot() if k == "ack" and t <= killed_at)}
