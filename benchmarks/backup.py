"""Backup throughput and restore time, against a raw pg_dump / pg_restore of the same database in
the same run.

Deploys a throwaway stack (the Dify stand-in, a test double, with local images), seeds Dify's
database with BENCH_BACKUP_MB (default 80) MB of rows, then times:
- `invoke backup.create` (both databases, Redis, volumes, config; zstd; age) against
  `pg_dump --format=custom` of Dify's database alone, to a file, from the same kind of container on
  the same network (best of BENCH_BACKUP_RUNS, default 2);
- `invoke backup.restore` (restore into new databases, count check, switch, files, Redis, restart
  of api, worker and plugin daemon) against `pg_restore` of the raw dump into a new database.
The stack is removed at the end, whatever happened.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import BACKUP_IMAGE, STANDIN_STACK, Measure

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(argv, env=None, timeout=1800, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:5]))} failed: {result.stderr[-1500:]}")
    return result


def _timed(argv, env=None) -> float:
    started = time.monotonic()
    _run(argv, env=env)
    return time.monotonic() - started


class BenchStack:
    def __init__(self, tmp: Path):
        self.name = f"bench{secrets.token_hex(3)}"
        self.tmp = tmp
        self.env_file = tmp / ".env"
        self.env = dict(os.environ, INVOKE_DIFYOPS_ENV_FILE=str(self.env_file))

    def invoke(self, *args: str) -> subprocess.CompletedProcess:
        return _run([sys.executable, "-m", "invoke", *args], env=self.env)

    def setup(self) -> None:
        sets = {"DIFYOPS_STACK": self.name, "EXPOSE_NGINX_PORT": str(_free_port()), **STANDIN_STACK,
                "DIFYOPS_BACKUP_DIR": str(self.tmp / "backups"),
                "DIFYOPS_BACKUP_AGE_IDENTITY": str(self.tmp / "age-identity.key"),
                "NODE_EXPORTER_TEXTFILE_DIR": str(self.tmp / "textfile")}
        argv = [sys.executable, "-m", "invoke", "env.init", "--env-file", str(self.env_file)]
        for key, value in sets.items():
            argv += ["--set", f"{key}={value}"]
        _run(argv)
        self.invoke("prod.deploy")
        self.invoke("backup.keygen")

    def value(self, key: str) -> str:
        for line in self.env_file.read_text().splitlines():
            if line.startswith(f"{key}="):
                return line.split("=", 1)[1]
        return ""

    def psql(self, sql: str, db: str = "dify") -> str:
        return _run(["docker", "exec", f"{self.name}-data-db_postgres-1", "psql", "-X", "-U", "postgres",
                     "-d", db, "-Atc", sql]).stdout.strip()

    def tool(self, *args: str, mounts=()) -> list[str]:
        argv = ["docker", "run", "--rm", "--network", f"{self.name}-backend", "-e", "PGPASSWORD",
                "-e", "PGHOST=db_postgres", "-e", "PGUSER=postgres"]
        for source, target in mounts:
            argv += ["-v", f"{source}:{target}"]
        return argv + [BACKUP_IMAGE, *args]

    def teardown(self) -> None:
        subprocess.run([sys.executable, "-m", "invoke", "prod.down", "all", "--volumes", "--yes"], cwd=ROOT, env=self.env,
                       capture_output=True, timeout=600)


def run() -> list[Measure]:
    megabytes = int(os.environ.get("BENCH_BACKUP_MB", "80"))
    runs = max(1, int(os.environ.get("BENCH_BACKUP_RUNS", "2")))
    tmp = Path(tempfile.mkdtemp(prefix="difyops-bench-backup-"))
    st = BenchStack(tmp)
    try:
        st.setup()
        # ~250 bytes a row on disk; text that compresses about as well as real chat logs (hex, some repeats).
        rows = megabytes * 1024 * 1024 // 250
        st.psql("CREATE TABLE bench_rows AS SELECT g AS id, md5(g::text) || ' ' || repeat(md5((g * 7)::text), 3) "
                f"|| ' message ' || g AS body, now() AS at FROM generate_series(1, {rows}) g")
        db_bytes = int(st.psql("SELECT pg_database_size('dify')"))
        mb = db_bytes / 1024 / 1024
        pg_env = dict(os.environ, PGPASSWORD=st.value("DB_PASSWORD"))
        raw_dir = tmp / "raw"
        raw_dir.mkdir()

        raw_dump, ours_create = [], []
        for i in range(runs):
            raw_dump.append(_timed(st.tool("pg_dump", "--format=custom", "-d", "dify", "-f", f"/out/raw{i}.dump",
                                           mounts=[(raw_dir, "/out")]), env=pg_env))
            ours_create.append(_timed([sys.executable, "-m", "invoke", "backup.create"], env=st.env))
        sets = sorted(p for p in (tmp / "backups").iterdir() if p.is_dir())
        set_bytes = sum(f.stat().st_size for f in sets[-1].iterdir())
        raw_bytes = (raw_dir / "raw0.dump").stat().st_size

        raw_restore = _timed(st.tool("bash", "-c", "createdb bench_raw_restore && "
                                     "pg_restore --exit-on-error -d bench_raw_restore /out/raw0.dump",
                                     mounts=[(raw_dir, "/out")]), env=pg_env)
        st.psql("DROP DATABASE bench_raw_restore", db="postgres")
        started = time.monotonic()
        restored = _run([sys.executable, "-m", "invoke", "backup.restore", "--name", sets[-1].name, "--yes"],
                        env=st.env)
        ours_restore = time.monotonic() - started
        text = " ".join(restored.stdout.split())
        match = re.search(r"restored into dify_restore_\d+ in ([\d.]+)s", text)
        ours_db_restore = float(match.group(1)) if match else float("nan")
        manifest = json.loads((sets[-1] / "manifest.json").read_text())
        ours_db_dump = manifest["parts"]["postgres-dify"]["seconds"]
        restored_rows = int(st.psql("SELECT count(*) FROM bench_rows"))
        if restored_rows != rows:
            raise RuntimeError(f"the restore brought back {restored_rows} rows of bench_rows, not {rows}")

        best_create, best_dump = min(ours_create), min(raw_dump)
        return [
            Measure("backup", f"dump step of a {mb:.0f} MB database (time)", ours_db_dump, best_dump, "s",
                    "pg_dump -Fc -Z0 | zstd | age, counts in the same snapshot (one container)",
                    "pg_dump -Fc of the dify db (gzip 6)",
                    f"throughput {mb / ours_db_dump:.1f} MB/s vs {mb / best_dump:.1f} MB/s; last set's step vs "
                    "best raw run"),
            Measure("backup", f"database restore step of a {mb:.0f} MB database (time)", ours_db_restore, raw_restore,
                    "s", "age -d | zstd -d | pg_restore into a new db + row counts",
                    "pg_restore of the raw dump into a new db", "the step inside backup.restore"),
            Measure("backup", f"backup of a {mb:.0f} MB database (time, best of {runs})", best_create, best_dump, "s",
                    "backup.create: 2 dbs + redis + volumes + config, zstd, age, sha256",
                    "pg_dump -Fc of the dify db alone",
                    f"throughput {mb / best_create:.1f} MB/s vs {mb / best_dump:.1f} MB/s; "
                    f"set {set_bytes / 1024 / 1024:.1f} MB vs dump {raw_bytes / 1024 / 1024:.1f} MB; "
                    f"runs {', '.join(f'{t:.1f}' for t in ours_create)} / {', '.join(f'{t:.1f}' for t in raw_dump)}"),
            Measure("backup", f"restore of a {mb:.0f} MB database (time)", ours_restore, raw_restore, "s",
                    "backup.restore: checks, decrypt, new dbs, count check, switch, files, redis, restart clusters",
                    "pg_restore of the raw dump into a new db",
                    f"{restored_rows} rows of bench_rows back; shared 2-core host, single run"),
        ]
    finally:
        st.teardown()
        shutil.rmtree(tmp, ignore_errors=True)
