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
sys.path.insert(0, str(ROOT / "tests"))

from testkit import LOCAL_IMAGES as STACK_IMAGES  # noqa: E402
from testkit import STANDIN_IMAGES, STANDIN_RELEASE, unique_name  # noqa: E402

from difyops import envfile  # noqa: E402

LOCAL_IMAGES = {
    **STACK_IMAGES,
    "PATRONI_IMAGE": "difyops-local/patroni:4",
    "ETCD_IMAGE": "difyops-local/etcd:3.5",
    "HAPROXY_IMAGE": "difyops-local/haproxy:3.0",
    "REDIS_EXPORTER_IMAGE": "difyops-local/redis-exporter:1",  # redis-sentinel-exporter
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
        name = unique_name(prefix)
        tmp = Path(tempfile.mkdtemp(prefix=f"difyops-{name}-"))
        env_file = tmp / ".env"
        overrides = {"DIFYOPS_STACK": name, "DIFYOPS_DATA_HA": "true", **STANDIN_RELEASE, **STANDIN_IMAGES, **LOCAL_IMAGES,
                     **(extra or {})}
        args = [sys.executable, "-m", "invoke", "env.init", "--env-file", str(env_file)]
        for key, value in overrides.items():
            args += ["--set", f"{key}={value}"]
        sh(args, cwd=ROOT, check=True)
        return cls(name, env_file)

    @property
    def env(self) -> dict[str, str]:
        return envfile.read(self.env_file)

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
        for _kind, listing, remove in (
            ("containers", ["docker", "ps", "-a", "--format", "{{.Names}}"], ["docker", "rm", "-fv"]),
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


class _LoadContainer:
    """What both loads share: a container of ours (by its own name) run with `docker run --rm`,
    its output read by a thread."""

    name: str
    _proc: subprocess.Popen | None
    _thread: threading.Thread | None

    def stop(self) -> None:
        """Stop the load's container and wait for its reader to finish."""
        sh(["docker", "rm", "-fv", self.name])  # -v: with its anonymous volumes (the image declares one)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class WriteLoad(_LoadContainer):
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


# ---- a node lost for good, and clients that set no timeouts

def lose_node(stack: HaStack, container: str) -> tuple[float, dict[str, list[str]]]:
    """The node's host gone: the container leaves every network first (no FIN or RST reaches its
    peers, and its name stops resolving), then is SIGKILLed, and is not started again. Returns the
    wall-clock moment it became unreachable and its networks with their aliases (for restore_node)."""
    nets = json.loads(sh(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container],
                         check=True).stdout)
    networks = {name: [a for a in (info.get("Aliases") or []) if a] for name, info in nets.items()}
    for name in networks:
        sh(["docker", "network", "disconnect", "-f", name, container], check=True)
    lost_at = time.time()  # unreachable from here on (a write acknowledged before this was not lost)
    sh(["docker", "kill", container], check=True)
    return lost_at, networks


def restore_node(container: str, networks: dict[str, list[str]]) -> None:
    """Bring a node lost by lose_node back: its networks and names, then start it."""
    for name, aliases in networks.items():
        argv = ["docker", "network", "connect"]
        for alias in aliases:
            if not container.startswith(alias):  # Docker adds the container's own id and name
                argv += ["--alias", alias]
        sh(argv + [name, container], check=True)
    sh(["docker", "start", container], check=True)


@dataclass
class Attempt:
    n: int
    start: float                 # wall clock (containers and the test share the host's clock)
    end: float | None = None     # None while the attempt is still waiting
    outcome: str = ""            # ack, or what failed
    ack: str = ""                # what was acknowledged (a row id)

    def seconds_after(self, moment: float, now: float) -> float:
        """How long this attempt lasted past moment (0 if it ended before)."""
        return max(0.0, (self.end if self.end is not None else now) - max(self.start, moment))


# Each script prints `begin <n> <epoch>` before an attempt and `done <n> <epoch> <outcome> <ack>`
# after it, bounded in count and time. None sets a client-side timeout on the database: a stuck
# session shows as an attempt that never ends.
# WRITERS loops side by side (each its own connection per INSERT), so several connections are being
# opened at the moment a node goes: loop k numbers its writes k*1000000 + 1, 2, ...
PSQL_WRITER = r"""
write() {
  i=0; end=$((SECONDS + MAX_SECONDS))
  while [ "$i" -lt "$MAX_ATTEMPTS" ] && [ "$SECONDS" -lt "$end" ]; do
    i=$((i + 1)); n=$(($1 * 1000000 + i)); echo "begin $n $(date +%s.%N)"
    if psql -h db_postgres -p 5432 -qAt -v ON_ERROR_STOP=1 -c "INSERT INTO $TABLE (id) VALUES ($n)" >/dev/null 2>&1
    then echo "done $n $(date +%s.%N) ack $n"; else echo "done $n $(date +%s.%N) error -"; sleep 0.2; fi
  done
}
for k in $(seq "$WRITERS"); do write "$k" & done
wait
"""
PSQL_BUSY = r"""
echo "begin 1 $(date +%s.%N)"
if psql -h db_postgres -p 5432 -qAt -c "SELECT pg_sleep($MAX_SECONDS)" >/dev/null 2>&1
then echo "done 1 $(date +%s.%N) finished -"; else echo "done 1 $(date +%s.%N) cut -"; fi
"""
# An idle session (a pooled connection between two requests): connected, one query, then nothing
# but waiting for the server side to close.
PG_IDLE = r"""
import os, select, sys, time
import psycopg2
conn = psycopg2.connect(host="db_postgres", port=5432, user=os.environ["PGUSER"], dbname=os.environ["PGDATABASE"])
conn.autocommit = True
conn.cursor().execute("SELECT 1")
print("begin 1", time.time(), flush=True)
readable, _, _ = select.select([conn.fileno()], [], [], float(os.environ["MAX_SECONDS"]))
print("done 1", time.time(), "cut" if readable else "open", "-", flush=True)
"""
# Writes through the stand-in api (its Dify-shaped pool), as Dify's clients would send them: the
# api's answer is what counts (201 with the new row's id).
API_WRITER = r"""
write() {
  i=0; end=$((SECONDS + MAX_SECONDS))
  while [ "$i" -lt "$MAX_ATTEMPTS" ] && [ "$SECONDS" -lt "$end" ]; do
    i=$((i + 1)); n=$(($1 * 1000000 + i)); echo "begin $n $(date +%s.%N)"
    code=$(curl -s --max-time "$MAX_SECONDS" -o "/tmp/answer-$1" -w '%{http_code}' -X POST \
           -H 'Content-Type: application/json' -d "{\"body\": \"$TAG-$n\"}" http://api:5001/console/api/messages)
    id=$(sed -n 's/.*"id": *\([0-9][0-9]*\).*/\1/p' "/tmp/answer-$1")
    if [ "$code" = 201 ] && [ -n "$id" ]; then echo "done $n $(date +%s.%N) ack $id"
    else echo "done $n $(date +%s.%N) http$code -"; sleep 0.2; fi
  done
}
for k in $(seq "$WRITERS"); do write "$k" & done
wait
"""

# Reads through the stand-in api of a route that needs Redis (its Sentinel-discovered client).
API_READER = r"""
i=0; end=$((SECONDS + MAX_SECONDS))
while [ "$i" -lt "$MAX_ATTEMPTS" ] && [ "$SECONDS" -lt "$end" ]; do
  i=$((i + 1)); echo "begin $i $(date +%s.%N)"
  code=$(curl -s --max-time "$MAX_SECONDS" -o /dev/null -w '%{http_code}' "http://api:5001$ROUTE")
  if [ "$code" = 200 ]; then echo "done $i $(date +%s.%N) ack $i"
  else echo "done $i $(date +%s.%N) http$code -"; fi
  sleep 0.2
done
"""


class ClientLoad(_LoadContainer):
    """One client in its own container on the stack's backend network, running one of the scripts
    above; its attempts are read from its output as they happen. Stopped by its own name."""

    def __init__(self, stack: HaStack, label: str, image: str, argv: list[str], env: dict[str, str]):
        self.stack, self.label = stack, label
        self.name = f"{stack.name}-{label}-{secrets.token_hex(2)}"
        self._argv, self._env, self._image = argv, env, image
        self._attempts: dict[int, Attempt] = {}
        self._lock = threading.Lock()
        self._proc = self._thread = None

    @classmethod
    def psql(cls, stack: HaStack, label: str, script: str, **env: str) -> "ClientLoad":
        s = stack.env
        return cls(stack, label, s.get("PATRONI_IMAGE") or LOCAL_IMAGES["PATRONI_IMAGE"], ["bash", "-c", script],
                   {"PGUSER": s.get("DB_USERNAME", "postgres"), "PGDATABASE": s.get("DB_DATABASE", "dify"),
                    "PGPASSWORD": s["DB_PASSWORD"], **env})

    @classmethod
    def python(cls, stack: HaStack, label: str, script: str, **env: str) -> "ClientLoad":
        client = cls.psql(stack, label, script, **env)
        client._argv = ["python3", "-c", script]
        return client

    @classmethod
    def api(cls, stack: HaStack, label: str, script: str = API_WRITER, **env: str) -> "ClientLoad":
        image = stack.env.get("DIFY_API_IMAGE") or STANDIN_IMAGES["DIFY_API_IMAGE"]
        return cls(stack, label, image, ["bash", "-c", script], env)

    def start(self) -> "ClientLoad":
        argv = ["docker", "run", "--rm", "--name", self.name, "--network", f"{self.stack.name}-backend",
                "--entrypoint", self._argv[0]]
        for key in self._env:
            argv += ["-e", key]
        self._proc = subprocess.Popen(argv + [self._image, *self._argv[1:]], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, **self._env))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            parts = line.split()
            try:
                if parts[:1] == ["begin"] and len(parts) == 3:
                    with self._lock:
                        self._attempts[int(parts[1])] = Attempt(int(parts[1]), float(parts[2]))
                elif parts[:1] == ["done"] and len(parts) == 5:
                    with self._lock:
                        attempt = self._attempts.setdefault(int(parts[1]), Attempt(int(parts[1]), float(parts[2])))
                        attempt.end, attempt.outcome = float(parts[2]), parts[3]
                        attempt.ack = parts[4] if parts[3] == "ack" else ""
            except ValueError:
                continue

    def attempts(self) -> list[Attempt]:
        with self._lock:
            return [Attempt(**vars(a)) for a in self._attempts.values()]

    def acked(self) -> set[str]:
        return {a.ack for a in self.attempts() if a.outcome == "ack"}

    def acks_started_after(self, moment: float) -> list[Attempt]:
        return sorted((a for a in self.attempts() if a.outcome == "ack" and a.start > moment), key=lambda a: a.end)

    def back_after(self, moment: float) -> float | None:
        """Seconds from moment to the first acknowledged attempt that started after it."""
        acks = self.acks_started_after(moment)
        return acks[0].end - moment if acks else None

    def longest_after(self, moment: float) -> tuple[float, Attempt | None]:
        """The attempt that lasted longest past moment (one still waiting counts up to now)."""
        now = time.time()
        worst = max(self.attempts(), key=lambda a: a.seconds_after(moment, now), default=None)
        return (worst.seconds_after(moment, now) if worst else 0.0), worst

    def waiting(self) -> list[Attempt]:
        return [a for a in self.attempts() if a.end is None]

