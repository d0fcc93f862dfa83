"""Smoke: backups round trip on the shared stack, and damaged sets are refused.

Writes rows and uploads files through the stand-in (a test double) via the gateway, backs up while
the stack keeps serving, verifies the set, refuses a truncated, a tampered and a mismatched set
without changing anything, destroys the data volumes, redeploys empty, restores, and compares every
table (row count and a content hash) and every file (sha256). Leaves the stack working.

The stand-in's plugin daemon appends one row to standin_daemon_boots and one line to
standin/boots.log each time it starts (and a restore restarts it): for those two, "equal" means
everything from before is still there, plus the new boot.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from aside import check_kept_aside
from testkit import check, record

TIMEOUT = 10
BACKUP_IMAGE = "difyops-local/backup:1"
APPEND_ONLY_TABLES = {"public.standin_daemon_boots"}
APPEND_ONLY_FILES = {"./standin/boots.log"}


def sh(*argv: str, check_rc: bool = True) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=300)
    if check_rc and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:6])} failed: {result.stderr[-1500:]}")
    return result.stdout


def env_value(env_file: Path, key: str) -> str:
    for line in env_file.read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1]
    return ""


class State:
    """What the module's tests share: folders, the sets made, the data written."""

    folder: Path
    online_set: str = ""
    quiet_set: str = ""
    uploads: dict[str, str] = {}


@pytest.fixture(scope="module")
def bk(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backup")
    state = State()
    state.uploads = {}
    state.folder = tmp / "backups"
    state.textfile = tmp / "textfile"
    state.restic = tmp / "restic-repo"
    # Backup settings are additive keys no other test reads.
    with open(stack.env_file, "a") as handle:
        handle.write(f"\n# test_60_backup\nDIFYOPS_BACKUP_DIR={state.folder}\n"
                     f"DIFYOPS_BACKUP_AGE_IDENTITY={tmp / 'age-identity.key'}\n"
                     f"NODE_EXPORTER_TEXTFILE_DIR={state.textfile}\n"
                     f"DIFYOPS_BACKUP_RESTIC_REPOSITORY={state.restic}\n")
    stack.invoke("backup.keygen")
    state.identity = tmp / "age-identity.key"
    return state


def post_message(stack, body: str) -> requests.Response:
    return requests.post(stack.base + "/console/api/messages", json={"body": body}, timeout=TIMEOUT)


def db_container(stack) -> str:
    return f"{stack.name}-data-db_postgres-1"


def psql(stack, db: str, sql: str) -> list[str]:
    out = sh("docker", "exec", db_container(stack), "psql", "-X", "-U", "postgres", "-d", db, "-Atc", sql)
    return [line for line in out.splitlines() if line]


def databases(stack) -> list[str]:
    return sorted(psql(stack, "postgres", "SELECT datname FROM pg_database WHERE NOT datistemplate"))


def table_rows(stack, db: str) -> dict[str, list[str]]:
    """Every table of a database: the md5 of each row, sorted (a content fingerprint)."""
    tables = psql(stack, db, "SELECT schemaname || '.' || tablename FROM pg_tables "
                             "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")
    return {t: sorted(psql(stack, db, f"SELECT md5(t::text) FROM {t} t")) for t in tables}


def volume_files(stack, volume: str) -> dict[str, str]:
    """sha256 of every file in a volume (content a restore moved aside, .difyops-*, left out)."""
    out = sh("docker", "run", "--rm", "-v", f"{stack.name}-{volume}:/v:ro", "-w", "/v", BACKUP_IMAGE, "sh", "-c",
             "find . -path './.difyops-*' -prune -o -type f -print0 | xargs -0 -r sha256sum")
    return {line[66:]: line[:64] for line in out.splitlines() if line}


def file_text(stack, volume: str, path: str) -> str:
    return sh("docker", "run", "--rm", "-v", f"{stack.name}-{volume}:/v:ro", BACKUP_IMAGE, "cat", f"/v/{path}")


def fingerprint(stack) -> dict:
    """Everything a refused restore must leave unchanged."""
    return {
        "databases": databases(stack),
        "dify": table_rows(stack, "dify"),
        "dify_plugin": table_rows(stack, "dify_plugin"),
        "storage": volume_files(stack, "storage"),
        "plugin-storage": volume_files(stack, "plugin-storage"),
        "containers": sorted(sh("docker", "ps", "--filter", f"name=^{stack.name}-", "--format",
                                "{{.Names}} {{.ID}} {{.State}}").split("\n")),
    }


def fingerprint_summary(fp: dict) -> str:
    counts = {f"{db}:{t}": len(rows) for db in ("dify", "dify_plugin") for t, rows in fp[db].items()}
    return f"{counts}, {len(fp['storage'])} + {len(fp['plugin-storage'])} files, {len(fp['containers'])} containers"


def sets(bk) -> list[str]:
    if not bk.folder.is_dir():
        return []
    return sorted(p.name for p in bk.folder.iterdir() if p.is_dir())


def new_set(bk, before: list[str]) -> str:
    made = [name for name in sets(bk) if name not in before]
    assert len(made) == 1, made
    return made[0]


# ----------------------------------------------------------------------------- tests


def test_write_data_through_the_gateway(stack, bk):
    ids = [post_message(stack, f"backup message {i} ünïcödé").status_code for i in range(25)]
    check("25 messages written through the gateway", ids == [201] * 25, f"status codes {sorted(set(ids))}")
    sizes = [1, 4096, 300_000, 2 * 1024 * 1024 + 7]
    for n, size in enumerate(sizes):
        payload = os.urandom(size)
        r = requests.post(stack.base + "/console/api/files/upload",
                          files={"file": (f"backup-{n}.bin", payload)}, timeout=60)
        body = r.json()
        check(f"upload of {size} bytes", r.status_code == 201 and body.get("sha256") == hashlib.sha256(payload).hexdigest(),
              f"{r.status_code} {body.get('size')}")
        bk.uploads[body["id"]] = body["sha256"]
    r = requests.post(stack.base + "/console/api/tasks", json={"input": "backup"}, timeout=TIMEOUT)
    check("a Celery task queued (a task_results row)", r.status_code == 202, r.status_code)


def test_create_while_the_stack_serves(stack, bk):
    """backup.create under a steady write load: every request answered, the set complete."""
    before = sets(bk)
    answered: list[int] = []
    stop = threading.Event()

    def load():
        deadline = time.monotonic() + 300
        for i in range(3000):  # bounded in count and time
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                answered.append(post_message(stack, f"online {i}").status_code)
            except requests.RequestException:
                answered.append(0)
            time.sleep(0.05)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    started = time.monotonic()
    try:
        result = stack.invoke("backup.create")
    finally:
        stop.set()
        worker.join(timeout=30)
    record("backup.create (online, under write load)", time.monotonic() - started)
    print(result.stdout[-1500:])
    bk.online_set = new_set(bk, before)
    check("every request during the backup was answered (201)", answered and set(answered) == {201},
          f"{len(answered)} requests, status codes {sorted(set(answered))}")
    manifest = json.loads((bk.folder / bk.online_set / "manifest.json").read_text())
    parts = sorted(manifest["parts"])
    check("the set has every part", {"config", "plugin-storage", "postgres-dify", "postgres-dify_plugin",
                                     "redis", "storage"} <= set(parts), parts)
    rows = manifest["parts"]["postgres-dify"]["tables"]
    check("manifest counts the rows of each table", rows.get("public.messages", 0) >= 25, rows)
    files = [p.name for p in (bk.folder / bk.online_set).iterdir()]
    plain = [f for f in files if f not in ("manifest.json", "SHA256SUMS") and not f.endswith(".age")]
    check("every part is encrypted (.age), nothing else in plain text", not plain and len(files) == len(parts) + 2,
          sorted(files))
    head = (bk.folder / bk.online_set / "postgres-dify.dump.zst.age").read_bytes()[:40]
    check("parts are age files", head.startswith(b"age-encryption.org/v1"), head[:22])
    sums = sh("sh", "-c", f"cd {bk.folder / bk.online_set} && sha256sum -c SHA256SUMS")
    check("sha256sum -c SHA256SUMS passes", sums.count(": OK") == len(parts) + 1, sums.strip().replace("\n", "; "))
    mode = oct((bk.identity).stat().st_mode & 0o777)
    check("the age identity is private (0600)", mode == "0o600", mode)
    metric = (bk.textfile / f"difyops_backup_{stack.name}.prom").read_text()
    check("the backup metric is written for node_exporter", "difyops_backup_last_success_timestamp_seconds{" in metric,
          metric.splitlines()[-1])
    password = env_value(stack.env_file, "DIFYOPS_BACKUP_RESTIC_PASSWORD")
    snaps = subprocess.run(["docker", "run", "--rm", "-e", "RESTIC_PASSWORD", "-v", f"{bk.restic}:/repo:ro",
                            BACKUP_IMAGE, "restic", "-r", "/repo", "--no-lock", "snapshots", "--json"],
                           capture_output=True, text=True, env=dict(os.environ, RESTIC_PASSWORD=password), timeout=120)
    found = json.loads(snaps.stdout or "[]")
    check("the set was copied off the host (local restic repository)",
          snaps.returncode == 0 and any(f"/backups/{bk.online_set}" in s.get("paths", []) for s in found),
          f"{len(found)} snapshot(s) {[s.get('paths') for s in found]}")


def test_verify_passes_on_a_good_set(stack, bk):
    # A quiet set (no writes meanwhile) is the one the round trip compares against.
    before = sets(bk)
    stack.invoke("backup.create")
    bk.quiet_set = new_set(bk, before)
    started = time.monotonic()
    result = stack.invoke("backup.verify", "--name", bk.quiet_set, check=False)
    record("backup.verify", time.monotonic() - started)
    text = " ".join(result.stdout.split())
    check("backup.verify passes on a good set", result.returncode == 0 and "verified" in text
          and text.count("match the manifest") == 2, text[-400:])
    check("verify leaves no scratch database behind", not [d for d in databases(stack) if "_verify_" in d],
          databases(stack))


def _damaged_copy(bk, name: str, how: str) -> str:
    source = bk.folder / bk.quiet_set
    target = bk.folder / name
    shutil.copytree(source, target)
    part = target / "postgres-dify.dump.zst.age"
    data = part.read_bytes()
    if how == "truncated":
        part.write_bytes(data[: len(data) // 2])
    elif how == "tampered":
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x01
        part.write_bytes(bytes(flipped))
    elif how == "mismatched":  # another stack's set, consistent in itself
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["stack"] = "someotherstack"
        (target / "manifest.json").write_text(json.dumps(manifest))
        digest = hashlib.sha256((target / "manifest.json").read_bytes()).hexdigest()
        sums = [ln if not ln.endswith("manifest.json") else f"{digest}  manifest.json"
                for ln in (target / "SHA256SUMS").read_text().splitlines()]
        (target / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return name


@pytest.mark.parametrize("how", ["truncated", "tampered", "mismatched"])
def test_a_damaged_set_is_refused_before_anything_is_touched(stack, bk, how):
    stamp = {"truncated": "20990101T000001Z", "tampered": "20990101T000002Z", "mismatched": "20990101T000003Z"}[how]
    name = _damaged_copy(bk, f"{stack.name}-{stamp}", how)
    try:
        before = fingerprint(stack)
        result = stack.invoke("backup.restore", "--name", name, "--yes", check=False)
        after = fingerprint(stack)
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
        check(f"restore of a {how} set exits non-zero with one line", result.returncode != 0 and len(lines) == 1
              and lines[0].startswith("error: refusing"), lines)
        check(f"a refused {how} set changed nothing (tables, files, databases, containers)", before == after,
              fingerprint_summary(after))
        result = stack.invoke("backup.verify", "--name", name, check=False)
        seen = " ".join((result.stdout + result.stderr).split())[-200:]
        if how == "mismatched":  # a sound set of another stack: verify passes, only restoring it here is refused
            check("backup.verify passes on another stack's sound set", result.returncode == 0, seen)
        else:
            check(f"backup.verify fails on the {how} set", result.returncode != 0, seen)
    finally:
        shutil.rmtree(bk.folder / name, ignore_errors=True)


def test_round_trip_after_destroying_the_data(stack, bk):
    before = fingerprint(stack)
    check("data to back up is there", len(before["dify"]["public.messages"]) >= 25 and len(before["storage"]) >= 4,
          fingerprint_summary(before))
    boots_log_before = file_text(stack, "plugin-storage", "standin/boots.log")

    # Destroy: take down every cluster holding data, delete the four data volumes, redeploy empty.
    started = time.monotonic()
    stack.invoke("prod.down", "worker,api,support,data")
    volumes = [f"{stack.name}-{v}" for v in ("pgdata", "redisdata", "storage", "plugin-storage")]
    removed = subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True, text=True)
    check("the data volumes are deleted", removed.returncode == 0, (removed.stdout + removed.stderr).split())
    stack.invoke("prod.deploy", timeout=1200)
    record("destroy data volumes and redeploy empty", time.monotonic() - started)
    empty = fingerprint(stack)
    check("after the redeploy the data is gone", not empty["dify"].get("public.messages") and not empty["storage"],
          fingerprint_summary(empty))

    started = time.monotonic()
    result = stack.invoke("backup.restore", "--name", bk.quiet_set, "--yes", timeout=1200)
    record("backup.restore", time.monotonic() - started)
    print(" ".join(result.stdout.split())[-1500:])
    after = fingerprint(stack)

    for db in ("dify", "dify_plugin"):
        for table, rows in before[db].items():
            got = after[db].get(table, [])
            if table in APPEND_ONLY_TABLES:
                ok = set(rows) <= set(got) and len(got) == len(rows) + 1
                seen = f"{len(rows)} rows before, {len(got)} after (one new boot)"
            else:
                ok = got == rows
                seen = (f"{len(got)} rows, content md5-of-rows "
                        f"{hashlib.sha256(''.join(got).encode()).hexdigest()[:12]} "
                        f"(before {len(rows)}, {hashlib.sha256(''.join(rows).encode()).hexdigest()[:12]})")
            check(f"table {db}:{table} restored", ok, seen)
    for volume in ("storage", "plugin-storage"):
        for path, digest in before[volume].items():
            got = after[volume].get(path)
            if path in APPEND_ONLY_FILES:
                text = file_text(stack, volume, path.removeprefix("./"))
                check(f"file {volume}:{path} restored", text.startswith(boots_log_before),
                      f"{len(boots_log_before)} bytes before, {len(text)} after (one new boot)")
            else:
                check(f"file {volume}:{path} restored", got == digest, f"sha256 {str(got)[:12]} (before {digest[:12]})")
    for file_id, digest in bk.uploads.items():
        r = requests.get(f"{stack.base}/console/api/files/{file_id}", timeout=60)
        check(f"upload {file_id[:8]} comes back through the gateway", r.status_code == 200
              and hashlib.sha256(r.content).hexdigest() == digest, f"{r.status_code} {len(r.content)} bytes")
    status = sh("docker", "ps", "-a", "--filter", f"name=^{stack.name}-", "--format", "{{.Names}} {{.Status}}")
    unhealthy = [ln for ln in status.splitlines() if "(healthy)" not in ln]
    check("every container is healthy after the restore", not unhealthy, unhealthy or "all healthy")
    r = post_message(stack, "after restore")
    check("the restored stack takes new writes", r.status_code == 201, r.status_code)
    olds = [d for d in databases(stack) if "_old_" in d and d not in before["databases"]]
    check("the replaced databases are kept aside, not dropped", len(olds) == 2, olds)
    aside = check_kept_aside(result.stdout, stack.name, databases(stack), lambda volume, folder: subprocess.run(
        ["docker", "run", "--rm", "-v", f"{volume}:/v:ro", BACKUP_IMAGE, "test", "-d", f"/v/{folder}"],
        capture_output=True, timeout=120).returncode == 0)
    check("the databases named as kept aside are the two replaced ones", sorted(aside["databases"]) == sorted(olds),
          aside["databases"])


def test_prune_keeps_what_the_policy_says(stack, bk):
    # Five older sets (copies under older names) beside the two real ones.
    for day in range(1, 6):
        shutil.copytree(bk.folder / bk.quiet_set, bk.folder / f"{stack.name}-202001{day:02d}T030000Z")
    result = stack.invoke("backup.prune", "--keep-last", "2", "--keep-daily", "3")
    left = sets(bk)
    expected = sorted([bk.online_set, bk.quiet_set, f"{stack.name}-20200105T030000Z",
                       f"{stack.name}-20200104T030000Z"])
    check("prune keeps the 2 newest and the newest of 3 days", left == expected,
          f"{left}; {' '.join(result.stdout.split())[-200:]}")
