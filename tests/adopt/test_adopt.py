"""adopt: an official-layout install (PostgreSQL 15, the stand-in, a test double, writing real data)
planned, refused where it must be, adopted into a difyops stack (PostgreSQL 17), compared table by
table, file by file and key by key, used through the new gateway, and rolled back to serve again.

The tests run in order and share the install and the stack (conftest.py)."""

from __future__ import annotations

import re
import subprocess
import time

import requests
from official import PUBLIC, SEED_MB, host_files, redis_test_keys, sh, tables
from testkit import check, record

from difyops import envfile

TIMEOUT = 15
APPEND_ONLY_TABLES = {"public.standin_daemon_boots"}  # the plugin daemon stand-in logs each start
APPEND_ONLY_FILES = {"standin/boots.log"}


class Seen:
    """What the tests learn along the way (the install before adoption, the run's output)."""

    before: dict = {}
    run_output: str = ""


def fingerprint(official) -> dict:
    """The official install's data, read from its own running services."""
    out = {db: tables(lambda sql, d: official.psql(sql, d), db) for db in ("dify", "dify_plugin")}
    out["vector"] = tables(lambda sql, d: official.psql(sql, d, service="pgvector"), "dify")
    for name, sub in (("storage", "volumes/app/storage"), ("plugin-storage", "volumes/plugin_daemon"),
                      ("sandbox-dependencies", "volumes/sandbox/dependencies"),
                      ("letsencrypt", "volumes/certbot/conf"), ("certbot-www", "volumes/certbot/www")):
        out[name] = host_files(official.dir / sub)
    out["redis"] = redis_test_keys(official.redis)
    return out


def bundle_files(official) -> dict[str, str]:
    """The install's own files (compose files, settings, gateway configuration, certificates)."""
    files = {p: h for p, h in host_files(official.dir).items() if not p.startswith("volumes/")}
    files.update({f"volumes/app/storage/{p}": h for p, h in host_files(official.dir / "volumes/app/storage").items()})
    return files


def stack_state(target) -> dict:
    return target.owned() | {"env": target.env_file.read_text()}


def test_01_plan_describes_the_install_and_changes_nothing(official, target):
    before = stack_state(target)
    files = bundle_files(official)
    started = time.monotonic()
    result = target.invoke("adopt.plan", "--from", str(official.dir))
    record("adopt.plan", time.monotonic() - started)
    out = result.stdout
    print(out)
    check("plan names the install, its version and project",
          f"compose project {official.project}" in out and "Dify version: 1.13.3" in out, out.splitlines()[:2])
    check("plan lists the services running", re.search(r"services running: .*api.*db_postgres.*redis", out) is not None,
          next((ln for ln in out.splitlines() if ln.startswith("services running")), ""))
    check("plan maps it to the 1.13.3 release set", "release set: 1.13.3" in out, "release set line")
    for part in ("PostgreSQL (db_postgres)", "pgvector", "Redis", "storage", "plugin storage", "sandbox dependencies",
                 "certbot certificates", "certificates"):
        check(f"plan says where {part} moves and its size", re.search(rf"^  {re.escape(part)}: \S+ \([\d.]+ \w+\) -> ", out,
                                                                       re.M) is not None, part)
    check("plan weighs free disk against the need", re.search(r"free, needs .* \(enough\)", out) is not None, "disk lines")
    check("plan says what happens to the vector store", "pgvector: the official pgvector server's databases move" in out,
          "vector store line")
    check("plan lists carried settings by cluster and the ones that change, with why",
          "settings carried over" in out and "MIGRATION_ENABLED (api): migrations run once" in out
          and "PGVECTOR_DATABASE (data) -> dify_vector" in out, "settings sections")
    check("plan flags the public default secrets with what rotating each breaks",
          "DB_PASSWORD is Dify's public example value" in out and "Rotating it breaks" in out, "flags")
    check("plan says what cannot be carried", "cannot be carried:" in out and "COMPOSE_PROFILES" in out, "cannot")
    check("plan estimates the downtime", re.search(r"^downtime: about \d+ min", out, re.M) is not None, "downtime")
    check("plan prints no secret value", official.secret_key not in out and PUBLIC["PLUGIN_DAEMON_KEY"] not in out,
          "no SECRET_KEY, no key")
    check("plan changes nothing (stack, .env, install files)",
          stack_state(target) == before and bundle_files(official) == files, "unchanged")


def test_02_plan_refuses_when_the_disk_is_too_small(official, target):
    volume = f"{target.name}-pgdata"
    sh("docker", "volume", "create", "--driver", "local", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
       "--opt", "o=size=16m", volume)
    try:
        result = target.invoke("adopt.plan", "--from", str(official.dir), check=False)
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        check("plan on a 16 MiB volume refuses with one line", result.returncode != 0 and
              f"too little disk: volume {volume} has 16.0 MiB free" in last, last)
    finally:
        sh("docker", "volume", "rm", volume)


def test_03_run_refuses_a_running_install_without_stop(official, target):
    before = stack_state(target)
    result = target.invoke("adopt.run", "--from", str(official.dir), "--yes", check=False)
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    check("run refuses a running install without --stop, in one line",
          result.returncode != 0 and "is running" in last and "--stop" in last, last)
    check("the refused run changed nothing", stack_state(target) == before, "unchanged")
    result = target.invoke("adopt.run", "--from", str(official.dir / "volumes"), "--yes", check=False)
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    check("run refuses a folder that is not an official install", result.returncode != 0 and
          "is not an official Dify install" in last, last)


def test_04_a_tampered_source_is_never_half_imported(official, target):
    """A damaged table in the second database: the first one was already moved when the second
    fails, and none of it may stay in the stack; the official install runs again."""
    official.psql("CREATE TABLE adopt_tamper_probe AS SELECT g, md5(g::text) AS h FROM generate_series(1, 5000) g",
                  db="dify_plugin")
    relpath = official.psql("SELECT pg_relation_filepath('adopt_tamper_probe')", db="dify_plugin")[0]
    official.compose("stop", "db_postgres")
    data = official.dir / "volumes/db/data/pgdata" / relpath
    with open(data, "r+b") as handle:  # a page header PostgreSQL refuses to read
        handle.seek(0)
        handle.write(b"\xde\xad\xbe\xef" * 64)
    official.up()
    before = stack_state(target)
    started = time.monotonic()
    try:
        result = target.invoke("adopt.run", "--from", str(official.dir), "--stop", "--yes", check=False)
    finally:
        official.psql("DROP TABLE adopt_tamper_probe", db="dify_plugin")
    record("adopt.run on a damaged source (refused, undone)", time.monotonic() - started)
    print(result.stdout[-3000:], result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    check("the run fails on the damaged table and says nothing was imported",
          result.returncode != 0 and "dify_plugin" in last and "invalid page" in last and "Nothing was imported" in last,
          last)
    check("the first database had moved before the failure", "database db_postgres/dify -> dify" in result.stdout,
          "dify moved first")
    check("nothing of the source is left in the stack (no volume, network, container; .env as before)",
          stack_state(target) == before, target.owned())
    response = requests.get(f"{official.base}/console/api/messages/{next(iter(official.messages))}", timeout=TIMEOUT)
    check("the official install serves again", response.status_code == 200, response.status_code)
    states = dict(line.split() for line in official.compose("ps", "--format", "{{.Service}} {{.State}}").stdout.splitlines())
    check("every official service runs again", set(states.values()) == {"running"} and len(states) == 10, states)


def test_05_run_adopts_everything(official, target):
    Seen.before = fingerprint(official)
    Seen.files = bundle_files(official)
    db_bytes = int(official.psql("SELECT sum(pg_database_size(datname)) FROM pg_database WHERE datname <> 'postgres' "
                                 "AND NOT datistemplate")[0])
    started = time.monotonic()
    result = target.invoke("adopt.run", "--from", str(official.dir), "--stop", "--yes", timeout=1500)
    seconds = time.monotonic() - started
    record(f"adopt.run ({db_bytes / 1024 / 1024:.0f} MB of PostgreSQL 15 databases, deploy included)", seconds)
    Seen.run_output = result.stdout
    print(result.stdout[-6000:])
    timings = next((ln for ln in result.stdout.splitlines() if ln.startswith("timings:")), "")
    moved = next((ln for ln in result.stdout.splitlines() if ln.startswith("moved:")), "")
    print(f"TIMING adopt.run total: {seconds:.1f}s for {db_bytes / 1024 / 1024:.1f} MB of databases "
          f"(seeded {SEED_MB} MB)\nTIMING {timings}\nTIMING {moved}")
    check("run reports every database verified table by table",
          "every table's rows and content hash equal" in result.stdout and "database pgvector/dify -> dify_vector" in result.stdout,
          moved)
    check("run reports every file verified by sha256", "every file's sha256 equal" in result.stdout, "files")
    check("run reports every Redis key compared", "every key's type and value equal" in result.stdout, "redis")
    check("run starts every cluster and the gateway answers", "adopted " in result.stdout, result.stdout.splitlines()[-1])


def test_06_every_table_file_and_key_is_identical(official, target):
    before = Seen.before
    for db, name in (("dify", "dify"), ("dify_plugin", "dify_plugin"), ("dify_vector", "vector")):
        after = tables(lambda sql, d: target.psql(sql, d), db)
        expected = before[name]
        same = {t for t in expected if after.get(t) == expected[t]}
        grown = {t for t in APPEND_ONLY_TABLES & set(expected) if set(expected[t]) <= set(after.get(t, []))}
        missing = sorted(set(expected) - same - grown)
        check(f"database {db}: every table identical ({len(expected)} tables, "
              f"{sum(len(v) for v in expected.values())} rows)", not missing and set(after) == set(expected),
              missing or "identical")
    for volume in ("storage", "plugin-storage", "sandbox-dependencies", "letsencrypt", "certbot-www"):
        after = target.volume_files(volume)
        expected = before[volume]
        differ = sorted(p for p in expected if after.get(p) != expected[p] and p not in APPEND_ONLY_FILES)
        check(f"volume {volume}: every file identical ({len(expected)} files)", not differ and set(after) >= set(expected),
              differ or "identical")
    check("storage is owned by uid 1001, as Dify's api runs", target.volume_owners("storage") == {"1001:1001"},
          target.volume_owners("storage"))
    redis_after = redis_test_keys(lambda *args: sh("docker", "exec", f"{target.name}-data-redis-1", "redis-cli",
                                                   "--no-auth-warning", "-a", envfile.read(target.env_file)["REDIS_PASSWORD"],
                                                   *args).stdout)
    check("Redis: every key of the test, its type, value and TTL-ness, identical", redis_after == before["redis"],
          sorted(set(redis_after) ^ set(before["redis"])) or f"{len(redis_after)} keys")
    ssl = target.tmp / "ssl"
    check("certificates copied into NGINX_SSL_DIR", host_files(ssl) == host_files(official.dir / "nginx/ssl"),
          sorted(host_files(ssl)))


def test_07_the_adopted_stack_serves_the_data(official, target):
    env = envfile.read(target.env_file)
    base = f"http://127.0.0.1:{env['EXPOSE_NGINX_PORT']}"
    ping = requests.get(f"{base}/console/api/ping", timeout=TIMEOUT).json()
    check("the adopted api runs on the data cluster's PostgreSQL 17", ping["db"]["ok"] and "PostgreSQL 17" in ping["db"]["server"],
          ping["db"])
    import hashlib

    expected_fp = hashlib.sha256(official.secret_key.encode()).hexdigest()[:12]
    check("SECRET_KEY carried (sessions and signed links stay valid)", ping["secret_key_fingerprint"] == expected_fp,
          ping["secret_key_fingerprint"])
    wrong = [i for i, body in official.messages.items()
             if requests.get(f"{base}/console/api/messages/{i}", timeout=TIMEOUT).json().get("body") != body]
    check(f"every message is served through the gateway ({len(official.messages)})", not wrong, wrong or "all")
    bad = []
    for file_id, digest in official.uploads.items():
        response = requests.get(f"{base}/files/{file_id}", timeout=TIMEOUT)
        if response.status_code != 200 or hashlib.sha256(response.content).hexdigest() != digest:
            bad.append(file_id)
    check(f"every uploaded file is served byte for byte ({len(official.uploads)})", not bad, bad or "all")
    for tenant, info in official.tenants.items():
        row = target.psql(f"SELECT encrypted_config FROM providers WHERE tenant_id = '{tenant}'")[0]
        token = __import__("json").loads(row)["openai_api_key"]
        response = requests.post(f"{base}/console/api/standin/tenants/{tenant}/decrypt", json={"token": token},
                                 timeout=TIMEOUT)
        check(f"workspace {tenant[:8]}: the stored provider credential decrypts with its moved private key",
              response.status_code == 200 and response.json().get("text") == info["text"], response.status_code)
    response = requests.post(f"{base}/console/api/files/upload", files={"file": ("new.bin", b"after adoption")},
                             timeout=TIMEOUT)
    check("a new upload works (the api, uid 1001, writes the moved storage)", response.status_code == 201,
          response.status_code)
    response = requests.post(f"{base}/console/api/tasks", json={"input": "after", "rounds": 2}, timeout=TIMEOUT)
    task = response.json().get("task_id")
    state = ""
    for _ in range(60):
        state = requests.get(f"{base}/console/api/tasks/{task}", timeout=TIMEOUT).json().get("state")
        if state == "SUCCESS":
            break
        time.sleep(1)
    check("a Celery task runs on the adopted stack", state == "SUCCESS", state)
    problems = envfile.check(env)
    check("the adopted .env passes env.check (no public default secret left)", not problems, problems or "ok")
    public = [k for k, v in env.items() if v in PUBLIC.values()]
    check("no public example secret was carried", not public, public or "none")
    check("the official install's files are untouched", bundle_files(official) == Seen.files, "unchanged")
    states = dict(line.split() for line in official.compose("ps", "-a", "--format", "{{.Service}} {{.State}}").stdout.splitlines())
    check("the official stack is stopped, its containers kept", states and "running" not in states.values(), states)


def test_08_rollback_serves_the_old_install_again(official, target):
    started = time.monotonic()
    result = target.invoke("adopt.rollback", "--from", str(official.dir))
    record("adopt.rollback", time.monotonic() - started)
    print(result.stdout[-2000:])
    left = target.owned()
    data = [f"{target.name}-{v}" for v in ("pgdata", "redisdata", "storage", "plugin-storage")]
    check("rollback stops the adopted stack and keeps its data volumes", not left["containers"]
          and set(data) <= set(left["volumes"]), left)
    states = dict(line.split() for line in official.compose("ps", "--format", "{{.Service}} {{.State}}").stdout.splitlines())
    check("every official service that ran before runs again", set(states.values()) == {"running"} and len(states) == 10,
          states)
    wrong = [i for i, body in official.messages.items()
             if requests.get(f"{official.base}/console/api/messages/{i}", timeout=TIMEOUT).json().get("body") != body]
    check("the old install serves its data again through its own gateway", not wrong, wrong or "all messages")
    after = fingerprint(official)
    differ = [key for key in ("dify", "vector", "storage", "plugin-storage", "redis")
              if {k: v for k, v in after[key].items() if k not in APPEND_ONLY_FILES}
              != {k: v for k, v in Seen.before[key].items() if k not in APPEND_ONLY_FILES}]
    check("its data is exactly what it was before adoption", not differ, differ or "identical")
    policies = subprocess.run(["docker", "inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}",
                               official.container("api")], capture_output=True, text=True).stdout.strip()
    check("its restart policies are back", policies == "always", policies)
