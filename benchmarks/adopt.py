"""Adopting an official install, against a raw `pg_dump | pg_restore` of the same database in the
same run.

Builds an official-layout install (tests/adopt/official.py: PostgreSQL 15 from Debian, the Dify
stand-in, a test double), writes BENCH_ADOPT_MB (default 80) MB of rows into Dify's database, then
times:
- the baseline: `pg_dump -Fc -Z0 dify | pg_restore` from that PostgreSQL 15 into a new database of a
  PostgreSQL 17 (difyops-local/postgres:17 on the install's network), in the backup image, the way
  anyone would move it by hand (no check of any kind);
- `invoke adopt.run`'s move of the same database (pgmove: one snapshot, the fingerprint of every
  table on both sides, the same dump and restore, ANALYZE), from its record;
- the whole `invoke adopt.run` (every database, files, Redis, the switch, every cluster started and
  checked): the downtime a user sees, against the raw move of all its databases.
Everything is removed at the end, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import BACKUP_IMAGE, STANDIN_STACK, Measure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "adopt"))

import official as off  # noqa: E402



def _run(argv, env=None, timeout=1800) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:6]))} failed: {result.stdout[-1000:]} {result.stderr[-1500:]}")
    return result


def raw_move(install: off.Official, target: str, database: str, new: str) -> float:
    """pg_dump | pg_restore from the install's PostgreSQL 15 into a new database on `target`."""
    network = f"{install.project}_default"
    script = (f"createdb -h {target} -U postgres {new} && pg_dump -h db_postgres -U postgres -Fc -Z0 {database} "
              f"| pg_restore -h {target} -U postgres --no-owner --no-acl -d {new}")
    started = time.monotonic()
    _run(["docker", "run", "--rm", "--network", network, "-e", f"PGPASSWORD={off.PUBLIC['DB_PASSWORD']}",
          BACKUP_IMAGE, "bash", "-c", f"set -o pipefail; {script}"])
    return time.monotonic() - started


def run() -> list[Measure]:
    megabytes = int(os.environ.get("BENCH_ADOPT_MB", "80"))
    tmp = Path(tempfile.mkdtemp(prefix="difyops-bench-adopt-"))
    install = off.create(tmp, f"benchofficial{secrets.token_hex(3)}")
    name = f"benchadopt{secrets.token_hex(3)}"
    env_file = tmp / ".env"
    env = dict(os.environ, INVOKE_DIFYOPS_ENV_FILE=str(env_file))
    pg17 = f"{name}-pg17"
    try:
        argv = [sys.executable, "-m", "invoke", "env.init", "--env-file", str(env_file)]
        for key, value in {"DIFYOPS_STACK": name, **STANDIN_STACK, "NGINX_SSL_DIR": str(tmp / "ssl")}.items():
            argv += ["--set", f"{key}={value}"]
        _run(argv)
        install.up()
        off.seed(install, megabytes)
        sizes = {db: int(install.psql(f"SELECT pg_database_size('{db}')")[0]) for db in ("dify", "dify_plugin")}
        vector = int(install.psql("SELECT pg_database_size('dify')", service="pgvector")[0])
        all_bytes = sum(sizes.values()) + vector
        _run(["docker", "run", "-d", "--name", pg17, "--network", f"{install.project}_default", "--network-alias",
              "bench_pg17", "-e", f"POSTGRES_PASSWORD={off.PUBLIC['DB_PASSWORD']}", STANDIN_STACK["POSTGRES_IMAGE"]])
        for _ in range(60):
            if subprocess.run(["docker", "exec", pg17, "pg_isready", "-h", "127.0.0.1"], capture_output=True).returncode == 0:
                break
            time.sleep(1)
        time.sleep(2)  # past the entrypoint's temporary server
        raw = raw_move(install, "bench_pg17", "dify", "raw_dify")
        raw_all = raw + raw_move(install, "bench_pg17", "dify_plugin", "raw_plugin")
        subprocess.run(["docker", "rm", "-f", pg17], capture_output=True)
        started = time.monotonic()
        _run([sys.executable, "-m", "invoke", "adopt.run", "--from", str(install.dir), "--stop", "--yes"], env=env)
        total = time.monotonic() - started
        state = json.loads((tmp / "var" / name / "adopt.json").read_text())
        ours = state["databases"]["dify"]
        mb = sizes["dify"] / 1024 / 1024
        all_mb = all_bytes / 1024 / 1024
        return [
            Measure("adopt", f"move of a {mb:.0f} MB database, PostgreSQL 15 to 17 (time)", ours["seconds"], raw, "s",
                    "pgmove: snapshot, fingerprints of every table on both sides, dump | restore, ANALYZE",
                    "pg_dump -Fc | pg_restore, no checks",
                    f"{mb / ours['seconds']:.1f} MB/s vs {mb / raw:.1f} MB/s; of ours: dump | restore "
                    f"{ours['move_ms'] / 1000:.1f}s, fingerprints {ours['fingerprint_ms'] / 1000:.1f}s"),
            Measure("adopt", f"adopt.run of an install with {all_mb:.0f} MB of databases (downtime)", total, raw_all, "s",
                    "adopt.run: stop, move and verify databases, files, Redis; switch; start every cluster; checks",
                    "pg_dump | pg_restore of its two main databases",
                    f"{all_mb / total:.1f} MB/s end to end; stages {state['timings']}"),
        ]
    finally:
        subprocess.run(["docker", "rm", "-f", pg17], capture_output=True)
        subprocess.run([sys.executable, "-m", "invoke", "prod.down", "all", "--volumes", "--yes"], cwd=ROOT, env=env,
                       capture_output=True, timeout=600)
        install.compose("down", "--remove-orphans", "--timeout", "20", check=False, timeout=300)
        shutil.rmtree(tmp, ignore_errors=True)
