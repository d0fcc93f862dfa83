"""Smoke: moving to a new server with a backup set and the age identity, nothing else.

Server A is the shared smoke stack, on this host's Docker engine. Server B is a second Docker engine
(a docker-in-docker node, tests/swarm/swarmlab.py): it shares nothing with A but the files a user
copies, the set and the identity. B sees the checkout read-only at the same path (a clone) and a
folder of its own (its .env, backups folder, certificates folder), so the bind mounts its engine
makes find them at the same paths; the tasks reach it through DOCKER_HOST and the test reaches its
gateway on 127.0.0.1 only (the node publishes it there).

A writes rows, files and Redis keys through its api, runs backup.keygen and backup.create twice: a
sound set, and one whose .env names an api image that cannot start (the failure after the swap). B
runs its own env.init (the same stack name, its own secrets, a smaller upload limit) and
prod.deploy, writes rows, files and keys of its own, then:

- restores the bad set with --config: it fails after the swap and puts back what it replaced,
  checked table by table, file by file, the .env byte for byte and Redis key by key;
- restores the sound set with --config --other-stack: every row and file of A is served by B through
  B's gateway, with A's settings in effect (its SECRET_KEY, its passwords, its upload limit), and
  B's own server settings (paths, the gateway's binding) kept.

The stand-in's plugin daemon appends a row to standin_daemon_boots and a line to standin/boots.log
each time it starts: for those two, "as before" means everything from before, plus new boots.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from aside import check_kept_aside
from smokestack import make_env
from testkit import LOCAL_IMAGES, ROOT, STANDIN_IMAGES, check, free_port, record, require, unique_name

from difyops import envfile

sys.path.insert(0, str(ROOT / "tests" / "swarm"))
from swarmlab import Lab  # noqa: E402

TIMEOUT = 15
BACKUP_IMAGE = "difyops-local/backup:1"
APPEND_ONLY_TABLES = {"public.standin_daemon_boots"}
APPEND_ONLY_FILES = {"./standin/boots.log"}
# Left out of the comparisons, or compared as "everything from before is still there", with why:
# - dump.rdb at the top of Redis's volume: Redis writes it whenever it stops cleanly (its save
#   points), whatever stops it, so it appears beside the append-only files after any restart;
# - Kombu's unacked / unacked_index / unacked_mutex in the broker's database: delivery bookkeeping
#   of messages a worker holds, emptied (and so deleted) when workers restart;
# - keys the running stack keeps writing on its own: beat's heartbeat (every STANDIN_BEAT_INTERVAL
#   seconds), up to the moment a restore stops Redis: every such key from before must be there
#   after, new ones may be. (No Celery result keys: as in Dify, no task stores a result.)
REDIS_FILES_WRITTEN_ON_STOP = {"dump.rdb"}
VOLATILE_BROKER_KEYS = {"1:unacked", "1:unacked_index", "1:unacked_mutex"}
WRITTEN_BY_THE_STACK = ("0:standin:beat:",)
# What B's .env says about B itself (its folders, how its gateway is reached): a restore with
# --config keeps these from the server it runs on (README, "Moving to a new server").
SERVER_KEYS = ("DIFYOPS_BACKUP_DIR", "DIFYOPS_BACKUP_AGE_IDENTITY", "DIFYOPS_BACKUP_CERTS_DIR",
               "NODE_EXPORTER_TEXTFILE_DIR", "NGINX_SSL_DIR", "NGINX_BIND_ADDRESS", "EXPOSE_NGINX_PORT",
               "DIFYOPS_ALLOW_HTTP")
ROWS = 120
A_UPLOAD_LIMIT_MB, B_UPLOAD_LIMIT_MB = 30, 20


def run(*argv: str, env: dict | None = None, check_rc: bool = True, timeout: float = 300,
        input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input,
                            env=None if env is None else {**os.environ, **env})
    if check_rc and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:7])} failed: {result.stderr[-1500:]}")
    return result


def set_env_lines(path: Path, values: dict[str, str]) -> None:
    """Replace (or add) KEY=VALUE lines of an env file, keeping every other line."""
    lines = [ln for ln in path.read_text().splitlines() if ln.split("=", 1)[0] not in values]
    path.write_text("\n".join(lines + [f"{k}={v}" for k, v in values.items()]) + "\n")


@dataclass
class Server:
    """One server: its env file, its Docker engine (None: this host's), its gateway's address."""

    name: str
    stack: str
    env_file: Path
    port: int
    docker_host: str | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {"INVOKE_DIFYOPS_ENV_FILE": str(self.env_file)}
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        return env

    def invoke(self, *args: str, check: bool = True, timeout: int = 1200,
               extra_env: dict | None = None) -> subprocess.CompletedProcess:
        result = run(sys.executable, "-m", "invoke", *args, env={**self.env(), **(extra_env or {})},
                     check_rc=False, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name}: invoke {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def docker(self, *args: str, check_rc: bool = True, timeout: float = 300) -> str:
        host = ["-H", self.docker_host] if self.docker_host else []
        for attempt in range(3):  # bounded
            result = run("docker", *host, *args, check_rc=False, timeout=timeout)
            # A docker-in-docker engine now and then fails to start a container (runc: "read init-p:
            # connection reset by peer"): the test's own read-only look is tried again, nothing else.
            if args[0] == "run" and result.returncode != 0 and "OCI runtime create failed" in result.stderr \
                    and attempt < 2:
                time.sleep(2)
                continue
            break
        if check_rc and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:6])} failed: {result.stderr[-1500:]}")
        return result.stdout

    # ---- what the server holds
    def psql(self, db: str, sql: str) -> list[str]:
        out = self.docker("exec", f"{self.stack}-data-db_postgres-1", "psql", "-X", "-U", "postgres", "-d", db,
                          "-Atc", sql)
        return [line for line in out.splitlines() if line]

    def databases(self) -> list[str]:
        return sorted(self.psql("postgres", "SELECT datname FROM pg_database WHERE NOT datistemplate"))

    def table_rows(self, db: str) -> dict[str, list[str]]:
        tables = self.psql(db, "SELECT schemaname || '.' || tablename FROM pg_tables "
                               "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")
        return {t: sorted(self.psql(db, f"SELECT md5(t::text) FROM {t} t")) for t in tables}

    def volume_files(self, volume: str) -> dict[str, str]:
        """sha256 of every file of a volume with its owner (content a restore keeps aside left out)."""
        out = self.docker("run", "--rm", "-v", f"{self.stack}-{volume}:/v:ro", "-w", "/v", BACKUP_IMAGE, "bash", "-c",
                          "find . -path './.difyops-*' -prune -o -type f -printf '%U:%G %p\\0' | "
                          "while IFS= read -r -d '' line; do owner=${line%% *}; path=${line#* }; "
                          "echo \"$(sha256sum < \"$path\" | cut -c1-64) $owner $path\"; done")
        return {line.split(" ", 2)[2]: " ".join(line.split(" ", 2)[:2]) for line in out.splitlines() if line}

    def volume_top(self, volume: str) -> list[str]:
        """The volume's top-level entries (hidden ones too) and its root's owner and mode."""
        out = self.docker("run", "--rm", "-v", f"{self.stack}-{volume}:/v:ro", BACKUP_IMAGE, "sh", "-c",
                          "stat -c 'root %u:%g %a' /v; ls -A /v")
        return out.split("\n")

    def holds(self, volume: str, path: str) -> bool:
        """Whether a volume holds `path` (a file or folder)."""
        return self.docker("run", "--rm", "-v", f"{volume}:/v:ro", BACKUP_IMAGE, "sh", "-c",
                           f"test -e '/v/{path}' && echo present", check_rc=False).strip() == "present"

    def file_text(self, volume: str, path: str) -> str:
        return self.docker("run", "--rm", "-v", f"{self.stack}-{volume}:/v:ro", BACKUP_IMAGE, "cat", f"/v/{path}")

    def redis(self, *args: str) -> str:
        return self.docker("exec", f"{self.stack}-data-redis-1", "redis-cli", "--no-auth-warning", *args)

    def redis_keys(self) -> list[str]:
        keys = []
        for db in (0, 1):  # Dify's cache (REDIS_DB) and the Celery broker (CELERY_BROKER_URL's /1)
            keys += [f"{db}:{k}" for k in self.redis("-n", str(db), "--scan").split()]
        return sorted(k for k in keys if k not in VOLATILE_BROKER_KEYS)

    def ping(self) -> dict:
        return requests.get(self.base + "/console/api/ping", timeout=TIMEOUT).json()

    def unhealthy(self) -> list[str]:
        status = self.docker("ps", "-a", "--filter", f"name=^{self.stack}-", "--format", "{{.Names}} {{.Status}}")
        return [ln for ln in status.splitlines() if "(healthy)" not in ln]

    def fingerprint(self) -> dict:
        """Everything a restore that failed must leave as it was."""
        return {
            "databases": self.databases(),
            "dify": self.table_rows("dify"),
            "dify_plugin": self.table_rows("dify_plugin"),
            "storage": self.volume_files("storage"),
            "plugin-storage": self.volume_files("plugin-storage"),
            "storage-top": self.volume_top("storage"),
            "plugin-storage-top": self.volume_top("plugin-storage"),
            "redisdata-top": [e for e in self.volume_top("redisdata") if e not in REDIS_FILES_WRITTEN_ON_STOP],
            "env": hashlib.sha256(self.env_file.read_bytes()).hexdigest(),
            "redis": self.redis_keys(),
        }


@dataclass
class Written:
    """What a server's api was given: message id -> body, file id -> sha256, Redis markers."""

    messages: dict[int, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)


def write_through_the_api(server: Server, tag: str, rows: int, sizes: list[int]) -> Written:
    written = Written()
    session = requests.Session()
    for i in range(rows):
        body = f"{tag} message {i} ünïcödé {secrets.token_hex(4)}"
        r = session.post(server.base + "/console/api/messages", json={"body": body}, timeout=TIMEOUT)
        assert r.status_code == 201, (r.status_code, r.text[:200])
        written.messages[r.json()["id"]] = body
    for n, size in enumerate(sizes):
        payload = os.urandom(size)
        r = session.post(server.base + "/console/api/files/upload", files={"file": (f"{tag}-{n}.bin", payload)},
                         timeout=120)
        assert r.status_code == 201, (r.status_code, r.text[:200])
        written.files[r.json()["id"]] = hashlib.sha256(payload).hexdigest()
    for i in range(5):
        key, value = f"movetest:{tag}:{i}", secrets.token_hex(8)
        assert server.redis("SET", key, value).strip() == "OK"
        written.markers[key] = value
    return written


def served(server: Server, written: Written) -> tuple[int, int, int]:
    """How many of the rows, files and Redis markers the server gives back as written."""
    session = requests.Session()
    rows = sum(1 for mid, body in written.messages.items()
               if (r := session.get(f"{server.base}/console/api/messages/{mid}", timeout=TIMEOUT)).status_code == 200
               and r.json().get("body") == body)
    files = sum(1 for fid, digest in written.files.items()
                if (r := session.get(f"{server.base}/console/api/files/{fid}", timeout=120)).status_code == 200
                and hashlib.sha256(r.content).hexdigest() == digest)
    markers = sum(1 for key, value in written.markers.items() if server.redis("GET", key).strip() == value)
    return rows, files, markers


def task_completes(server: Server) -> str:
    r = requests.post(server.base + "/console/api/tasks", json={"input": "move"}, timeout=TIMEOUT)
    task_id = r.json().get("task_id")
    state = "?"
    for _ in range(60):  # bounded: about 30 s
        state = requests.get(f"{server.base}/console/api/tasks/{task_id}", timeout=TIMEOUT).json().get("state")
        if state == "SUCCESS":
            break
        time.sleep(0.5)
    return state


def upload_status(server: Server, megabytes: int) -> int:
    payload = os.urandom(megabytes * 1024 * 1024)
    r = requests.post(server.base + "/console/api/files/upload", files={"file": ("big.bin", payload)}, timeout=120)
    return r.status_code


def equal_but_appended(before: dict, after: dict) -> list[str]:
    """What differs between two fingerprints (append-only tables and files may have grown)."""
    differ = []
    for key in before:
        if key in ("dify", "dify_plugin"):
            for table in sorted(set(before[key]) | set(after[key])):
                old, new = before[key].get(table, []), after[key].get(table, [])
                if table in APPEND_ONLY_TABLES:
                    if not set(old) <= set(new):
                        differ.append(f"{key}:{table} lost rows")
                elif old != new:
                    differ.append(f"{key}:{table} {len(old)} rows before, {len(new)} after")
        elif key == "redis":
            lost = sorted(set(before[key]) - set(after[key]))
            new = sorted(k for k in set(after[key]) - set(before[key]) if not k.startswith(WRITTEN_BY_THE_STACK))
            if lost or new:
                differ.append(f"redis keys lost {lost}, new {new}")
        elif key in ("storage", "plugin-storage"):
            for path in sorted(set(before[key]) | set(after[key])):
                if path not in APPEND_ONLY_FILES and before[key].get(path) != after[key].get(path):
                    differ.append(f"{key}:{path} {before[key].get(path)} -> {after[key].get(path)}")
        elif before[key] != after[key]:
            differ.append(f"{key}: {before[key]} -> {after[key]}")
    return differ


# ----------------------------------------------------------------------------- the two servers


@dataclass
class Move:
    a: Server
    b: Server
    b_dir: Path
    a_written: Written
    b_written: Written
    good_set: str
    bad_set: str
    a_fingerprint: str  # the SECRET_KEY fingerprint A's api shows
    b_fingerprint: str
    a_env: dict[str, str]
    b_env: dict[str, str]
    inner_port: int
    before_move: dict = field(default_factory=dict)  # B's fingerprint right before the move


@pytest.fixture(scope="module")
def move(stack, tmp_path_factory):
    require(run("docker", "info", check_rc=False).returncode == 0, "no Docker engine answers here",
            "nox -s smoke on a machine with one (CI starts it)")
    a = Server("A", stack.name, stack.env_file, stack.port)
    a_original = a.env_file.read_bytes()
    a_dir = tmp_path_factory.mktemp("server-a")
    b_dir = tmp_path_factory.mktemp("server-b")
    prefix = unique_name("difyops-mv")
    lab = Lab(prefix, Path(f"/tmp/{prefix}"))
    broken = f"difyops-test/move-broken-api:{unique_name('t')}"
    try:
        # ---- A: backups of its own (its .env gets the keys; put back byte for byte at the end)
        set_env_lines(a.env_file, {"DIFYOPS_BACKUP_DIR": str(a_dir / "backups"),
                                   "DIFYOPS_BACKUP_AGE_IDENTITY": str(a_dir / "age-identity.key"),
                                   "NODE_EXPORTER_TEXTFILE_DIR": str(a_dir / "textfile"),
                                   "DIFYOPS_BACKUP_RESTIC_REPOSITORY": ""})
        a.invoke("backup.keygen")
        a_written = write_through_the_api(a, "a", ROWS, [1, 70_000, 2 * 1024 * 1024 + 3])
        a_fingerprint = a.ping()["secret_key_fingerprint"]
        started = time.monotonic()
        a.invoke("backup.create")
        record("move: backup.create on A", time.monotonic() - started)
        sets = sorted(p.name for p in (a_dir / "backups").iterdir() if p.is_dir())
        good_set = sets[-1]
        # The bad set: the same data, a .env naming an api image that exits at once (A keeps serving).
        with_keys = a.env_file.read_bytes()
        set_env_lines(a.env_file, {"DIFY_API_IMAGE": broken})
        a.invoke("backup.create")
        a.env_file.write_bytes(with_keys)
        bad_set = sorted(p.name for p in (a_dir / "backups").iterdir() if p.is_dir() and p.name not in sets)[-1]
        a_env = envfile.read(a.env_file)

        # ---- B: its own engine; the checkout (read-only) and its own folder at the same paths
        dockerfile = ('FROM difyops-standin/dify-api:v1\n'
                      'ENTRYPOINT ["/bin/sh", "-c", "echo \'this api image cannot start\' >&2; exit 1"]\n')
        run("docker", "build", "-q", "-t", broken, "-", input=dockerfile)
        started = time.monotonic()
        inner, outer = free_port(), free_port()
        node = lab.start_engine("b", {inner: outer}, [(str(ROOT), str(ROOT), True), (str(b_dir), str(b_dir), False)])
        record("move: server B's engine up", time.monotonic() - started)
        check("server B is another Docker engine", node.docker("info", "--format", "{{.ID}}").stdout.strip()
              != run("docker", "info", "--format", "{{.ID}}").stdout.strip(), node.name)
        started = time.monotonic()
        lab.stream_images(node, sorted({*STANDIN_IMAGES.values(), *LOCAL_IMAGES.values(), BACKUP_IMAGE, broken}))
        record("move: images loaded into server B", time.monotonic() - started)
        (b_dir / "ssl").mkdir()
        b_env_file = make_env(b_dir, stack.name, inner, {
            # B is reached through the node's published port, which forwards to the node's address.
            "NGINX_BIND_ADDRESS": "0.0.0.0", "DIFYOPS_ALLOW_HTTP": "true",
            "UPLOAD_FILE_SIZE_LIMIT": str(B_UPLOAD_LIMIT_MB),
            "DIFYOPS_BACKUP_DIR": str(b_dir / "backups"),
            "DIFYOPS_BACKUP_AGE_IDENTITY": str(b_dir / "backups" / "age-identity.key"),
            "DIFYOPS_BACKUP_CERTS_DIR": str(b_dir / "ssl"), "NGINX_SSL_DIR": str(b_dir / "ssl"),
            "NODE_EXPORTER_TEXTFILE_DIR": str(b_dir / "textfile")})
        b = Server("B", stack.name, b_env_file, outer, node.host)
        started = time.monotonic()
        b.invoke("prod.deploy")
        record("move: prod.deploy on server B", time.monotonic() - started)
        b_written = write_through_the_api(b, "b", 10, [5000])
        b_env = envfile.read(b.env_file)
        # ---- what the user copies: the sets and the identity, nothing else
        (b_dir / "backups").mkdir()
        for name in (good_set, bad_set):
            shutil.copytree(a_dir / "backups" / name, b_dir / "backups" / name)
        shutil.copy2(a_dir / "age-identity.key", b_dir / "backups" / "age-identity.key")
        yield Move(a, b, b_dir, a_written, b_written, good_set, bad_set, a_fingerprint,
                   b.ping()["secret_key_fingerprint"], a_env, b_env, inner)
    finally:
        a.env_file.write_bytes(a_original)
        left = lab.destroy()
        run("docker", "rmi", "-f", broken, check_rc=False)
        check(f"server B ({prefix}) is removed whole (its engine's container, volume, network)", not left,
              left or "nothing left")


def test_b_is_a_server_of_its_own(move):
    ping = move.b.ping()
    check("B serves through its own gateway", ping.get("db", {}).get("ok") and ping.get("redis", {}).get("ok"),
          {k: ping.get(k) for k in ("version", "db", "redis")})
    check("B has its own SECRET_KEY (env.init)", move.b_fingerprint != move.a_fingerprint,
          f"A {move.a_fingerprint}, B {move.b_fingerprint}")
    check("B has its own database and Redis passwords",
          all(move.b_env[k] != move.a_env[k] for k in ("DB_PASSWORD", "REDIS_PASSWORD")), "differ")
    check(f"B refuses uploads over its own limit ({B_UPLOAD_LIMIT_MB} MB)",
          upload_status(move.b, B_UPLOAD_LIMIT_MB + 5) == 413, "413")


def test_a_restore_that_fails_after_the_swap_puts_everything_back(move):
    b = move.b
    before = b.fingerprint()
    check("B's data to compare is there", len(before["storage"]) == len(move.b_written.files)
          and before["plugin-storage"] and sum(len(r) for r in before["dify"].values()) >= len(move.b_written.messages)
          and all(f"0:{k}" in before["redis"] for k in move.b_written.markers),
          f"{len(before['storage'])} + {len(before['plugin-storage'])} files, {len(before['redis'])} Redis keys")
    boots_log = b.file_text("plugin-storage", "standin/boots.log")
    started = time.monotonic()
    result = b.invoke("backup.restore", "--name", move.bad_set, "--config", "--other-stack", "--yes", check=False)
    record("move: a restore that fails after the swap, and its rollback", time.monotonic() - started)
    print(result.stdout[-4000:], result.stderr[-3000:], sep="\n")
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    check("the failed restore exits non-zero with one line saying what was put back",
          result.returncode != 0 and len(errors) == 1 and "put back" in errors[0], errors or result.stderr[-600:])
    after = b.fingerprint()
    differ = equal_but_appended(before, after)
    check("tables, files (with owners), volumes, .env (byte for byte) and Redis keys are as before", not differ,
          differ or f"{sum(len(r) for r in after['dify'].values())} rows in dify, {len(after['storage'])} files, "
          f"{len(after['redis'])} Redis keys, databases {after['databases']}")
    text = b.file_text("plugin-storage", "standin/boots.log")
    check("the plugin daemon's boot log kept every line (and gained boots)", text.startswith(boots_log),
          f"{len(boots_log)} bytes before, {len(text)} after")
    check("B's own rows, files and Redis keys are served again", served(b, move.b_written)
          == (len(move.b_written.messages), len(move.b_written.files), len(move.b_written.markers)),
          served(b, move.b_written))
    ping = b.ping()
    check("B runs its own settings again (its SECRET_KEY)", ping.get("secret_key_fingerprint") == move.b_fingerprint
          and ping.get("db", {}).get("ok") and ping.get("redis", {}).get("ok"), ping.get("secret_key_fingerprint"))
    check("every container of B is healthy", not b.unhealthy(), b.unhealthy() or "all healthy")


def test_the_move_serves_every_row_and_file_of_a_with_a_settings(move):
    b = move.b
    move.before_move = b.fingerprint()
    env_before = b.env_file.read_bytes()
    check("B's data to compare afterwards is there", len(move.before_move["storage"]) == len(move.b_written.files),
          f"{len(move.before_move['storage'])} files in storage")
    started = time.monotonic()
    result = b.invoke("backup.restore", "--name", move.good_set, "--config", "--other-stack", "--yes", check=False)
    seconds = time.monotonic() - started
    record("move: backup.restore --config --other-stack on server B", seconds)
    print(result.stdout[-4000:], result.stderr[-3000:], sep="\n")
    check("backup.restore --config --other-stack succeeds", result.returncode == 0,
          [ln for ln in result.stderr.splitlines() if ln.strip()][-3:])
    check_kept_aside(result.stdout, b.stack, b.databases(), b.holds, env_before=env_before)
    rows, files, markers = served(b, move.a_written)
    check(f"every row of A is served by B through its gateway ({ROWS})", rows == len(move.a_written.messages),
          f"{rows}/{len(move.a_written.messages)}")
    check("every file of A is served by B through its gateway", files == len(move.a_written.files),
          f"{files}/{len(move.a_written.files)}")
    check("A's Redis keys are in B's Redis", markers == len(move.a_written.markers),
          f"{markers}/{len(move.a_written.markers)}")
    ping = b.ping()
    check("B's api runs A's SECRET_KEY", ping.get("secret_key_fingerprint") == move.a_fingerprint,
          f"B {ping.get('secret_key_fingerprint')}, A {move.a_fingerprint}")
    check("B's api reaches PostgreSQL and Redis with A's passwords", ping.get("db", {}).get("ok")
          and ping.get("redis", {}).get("ok"), {k: ping.get(k) for k in ("db", "redis")})
    check("B's workers take tasks through Redis with A's password", task_completes(b) == "SUCCESS", "SUCCESS")
    check(f"B's gateway and api take A's upload limit ({A_UPLOAD_LIMIT_MB} MB)",
          upload_status(b, B_UPLOAD_LIMIT_MB + 5) == 201, "201")
    env = envfile.read(b.env_file)
    wrong = sorted(k for k, v in move.a_env.items() if k not in SERVER_KEYS and env.get(k) != v)
    check("B's .env holds A's settings", not wrong, wrong or f"{len(move.a_env) - len(SERVER_KEYS)} keys equal")
    kept = sorted(k for k in SERVER_KEYS if env.get(k) != move.b_env.get(k))
    check("B's .env keeps B's own folders and gateway binding", not kept, kept or ", ".join(SERVER_KEYS))
    check("every container of B is healthy", not b.unhealthy(), b.unhealthy() or "all healthy")


def test_undo_puts_b_back_as_it_was_before_the_move(move):
    b = move.b
    require(move.before_move, "needs test_the_move_serves_every_row_and_file_of_a_with_a_settings first",
            "the whole module (nox -s smoke runs it)")
    started = time.monotonic()
    result = b.invoke("backup.restore", "--undo", "--yes", check=False)
    record("move: backup.restore --undo on server B", time.monotonic() - started)
    print(result.stdout[-2500:], result.stderr[-2000:], sep="\n")
    check("backup.restore --undo succeeds", result.returncode == 0,
          [ln for ln in result.stderr.splitlines() if ln.strip()][-3:])
    after = b.fingerprint()
    # What the move had brought is kept aside (until --drop-aside): left out of the comparison.
    undone = [d for d in after["databases"] if "_undone_" in d]
    after["databases"] = [d for d in after["databases"] if d not in undone]
    folders = {}
    for key in ("storage-top", "plugin-storage-top", "redisdata-top"):
        folders[key] = [e for e in after[key] if e.startswith(".difyops-undone-")]
        after[key] = [e for e in after[key] if e not in folders[key]]
    differ = equal_but_appended(move.before_move, after)
    check("B's tables, files, volumes, .env and Redis keys are as before the move", not differ, differ or "equal")
    check("what the move had brought is kept aside", len(undone) == 2 and all(len(f) == 1 for f in folders.values()),
          f"{undone}, {folders}")
    ping = b.ping()
    check("B runs its own SECRET_KEY again", ping.get("secret_key_fingerprint") == move.b_fingerprint,
          ping.get("secret_key_fingerprint"))
    check("B's own rows, files and Redis keys are served", served(b, move.b_written)
          == (len(move.b_written.messages), len(move.b_written.files), len(move.b_written.markers)),
          served(b, move.b_written))
    check("every container of B is healthy", not b.unhealthy(), b.unhealthy() or "all healthy")
    again = b.invoke("backup.restore", "--undo", "--yes", check=False)
    errors = [ln for ln in again.stderr.splitlines() if ln.startswith("error:")]
    check("a second --undo refuses in one line", again.returncode != 0 and len(errors) == 1, errors)


def test_drop_aside_removes_what_restores_kept(move):
    b = move.b
    result = b.invoke("backup.restore", "--drop-aside", "--yes", check=False)
    print(result.stdout[-1500:], result.stderr[-1000:], sep="\n")
    check("backup.restore --drop-aside succeeds", result.returncode == 0, result.stderr[-300:])
    kept = [d for d in b.databases() if "_old_" in d or "_undone_" in d or "_restore_" in d or "_failed_" in d]
    check("no kept-aside database is left", not kept, kept or b.databases())
    folders = {v: [e for e in b.volume_top(v) if e.startswith(".difyops-")]
               for v in ("storage", "plugin-storage", "redisdata", "letsencrypt")}
    check("no kept-aside folder is left in the volumes", not any(folders.values()), folders)
    check("B still serves its own rows", served(b, move.b_written)[0] == len(move.b_written.messages),
          served(b, move.b_written))


def test_a_new_server_restores_from_the_set_alone(move):
    """B again, as a server with nothing on it: no .env, no volumes; the set and the identity only."""
    b = move.b
    b.invoke("prod.down", "all", "--volumes", "--yes")
    left = b.docker("volume", "ls", "-q", "--filter", f"name={b.stack}-").split()
    check("B has no stack left (no containers, volumes)", not left and not b.unhealthy(), left)
    b.env_file.rename(move.b_dir / "env-of-the-first-deploy")
    shutil.move(str(move.b_dir / "var"), str(move.b_dir / "var-of-the-first-deploy"))
    # The set and the identity are in B's own folder, not in the checkout's backups/: say where.
    here = {"DIFYOPS_BACKUP_DIR": str(move.b_dir / "backups"),
            "DIFYOPS_BACKUP_AGE_IDENTITY": str(move.b_dir / "backups" / "age-identity.key"),
            "DIFYOPS_BACKUP_CERTS_DIR": str(move.b_dir / "ssl"), "NGINX_SSL_DIR": str(move.b_dir / "ssl"),
            "NODE_EXPORTER_TEXTFILE_DIR": str(move.b_dir / "textfile"),
            "NGINX_BIND_ADDRESS": "0.0.0.0", "DIFYOPS_ALLOW_HTTP": "true", "EXPOSE_NGINX_PORT": str(move.inner_port)}
    args = [arg for key, value in here.items() for arg in ("--set", f"{key}={value}")]
    started = time.monotonic()
    result = b.invoke("backup.restore", "--name", move.good_set, "--config", "--yes", *args, check=False)
    record("move: backup.restore --config on a server with no .env (deploys from the set)", time.monotonic() - started)
    print(result.stdout[-3000:], result.stderr[-2000:], sep="\n")
    check("backup.restore --config deploys from the set alone", result.returncode == 0,
          [ln for ln in result.stderr.splitlines() if ln.strip()][-3:])
    rows, files, markers = served(b, move.a_written)
    check("every row, file and Redis key of A is served by the new server",
          (rows, files, markers) == (len(move.a_written.messages), len(move.a_written.files),
                                     len(move.a_written.markers)), (rows, files, markers))
    ping = b.ping()
    check("the new server runs A's SECRET_KEY", ping.get("secret_key_fingerprint") == move.a_fingerprint,
          ping.get("secret_key_fingerprint"))
    env = envfile.read(b.env_file)
    wrong = sorted(k for k, v in move.a_env.items() if k not in here and k not in SERVER_KEYS and env.get(k) != v)
    check("its .env is A's, with what --set gave", not wrong and all(env.get(k) == v for k, v in here.items()),
          wrong or "A's settings")
    mode = oct(b.env_file.stat().st_mode & 0o777)
    check("the .env is private (0600)", mode == "0o600", mode)
    kept = [d for d in b.databases() if "_old_" in d or "_restore_" in d]
    check("nothing is kept aside on a new server", not kept, kept or "none")
    check("every container of the new server is healthy", not b.unhealthy(), b.unhealthy() or "all healthy")
