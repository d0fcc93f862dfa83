"""HA PostgreSQL: Patroni elects a leader with a synchronous replica; HAProxy's fronts route writes
to the leader and reads to the replicas; pgvector works; killing the leader under a steady write
load loses no acknowledged write; the old leader rejoins as a replica; the stand-in's api answers."""

from __future__ import annotations

from halib import sh
from smokelib import check

WRITES_TABLE = "ha_failover_writes"


def test_patroni_cluster_has_a_leader_and_a_synchronous_replica(ha_stack):
    members = ha_stack.cluster_state()["members"]
    roles = sorted((m["name"], m["role"], m["state"]) for m in members)
    leaders = [m for m in members if m["role"] == "leader" and m["state"] == "running"]
    sync = [m for m in members if m["role"] == "sync_standby" and m["state"] == "streaming"]
    check("Patroni: one running leader and one streaming synchronous standby",
          len(leaders) == 1 and len(sync) == 1, roles)
    names = ha_stack.psql("SHOW synchronous_standby_names").stdout.strip()
    check("the leader requires a synchronous standby (synchronous_mode)", sync and sync[0]["name"] in names, names)


def test_read_write_endpoint_reaches_the_leader(ha_stack):
    out = ha_stack.psql("SELECT pg_is_in_recovery(), inet_server_addr() IS NOT NULL").stdout.strip()
    check("db_postgres:5432 (read-write) reaches a node that is not in recovery", out == "f|t", out)


def test_read_only_endpoint_reaches_a_replica(ha_stack):
    out = ha_stack.psql("SELECT pg_is_in_recovery()", port=5433)
    check("db_postgres:5433 (read-only) reaches a streaming replica", out.stdout.strip() == "t",
          out.stdout.strip() or out.stderr.strip()[-200:])
    refused = ha_stack.psql("CREATE TABLE ha_must_not_exist (id int)", port=5433)
    check("a write through the read-only endpoint is refused", refused.returncode != 0
          and "read-only" in refused.stderr, refused.stderr.strip()[-120:])


def test_pgvector_on_the_ha_cluster(ha_stack):
    env = ha_stack.env
    check("VECTOR_STORE=pgvector on the HA data layer", env.get("VECTOR_STORE") == "pgvector"
          and env.get("PGVECTOR_HOST") == "db_postgres" and env.get("PGVECTOR_PORT") == "5432",
          {k: env.get(k) for k in ("VECTOR_STORE", "PGVECTOR_HOST", "PGVECTOR_PORT")})
    sql = ("CREATE EXTENSION IF NOT EXISTS vector; "
           "CREATE TABLE IF NOT EXISTS ha_vectors (id int PRIMARY KEY, embedding vector(3)); "
           "INSERT INTO ha_vectors VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0,0,1]') ON CONFLICT DO NOTHING; "
           "SELECT id FROM ha_vectors ORDER BY embedding <-> '[0.1,0.9,0]' LIMIT 1")
    out = ha_stack.psql(sql, database=env.get("PGVECTOR_DATABASE", "dify"))
    check("CREATE EXTENSION vector and a nearest-neighbour query through the read-write endpoint",
          out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == ["2"], out.stdout.strip() or out.stderr[-200:])
    replica = ha_stack.wait_for("the vectors on the replica", lambda: ha_stack.psql(
        "SELECT count(*) FROM ha_vectors", port=5433).stdout.strip() == "3", 30)
    check("the vectors are on the replica (read-only endpoint)", replica, replica)


def test_leader_killed_under_write_load_loses_no_acknowledged_write(ha_stack):
    from halib import measure_failover

    result = measure_failover(ha_stack, WRITES_TABLE)
    acked = result["acked"]
    present_rows = ha_stack.psql(f"SELECT id FROM {WRITES_TABLE}")
    present = {int(x) for x in present_rows.stdout.split()}
    missing = sorted(acked - present)
    print(f"COUNTS postgres failover: acknowledged={len(acked)} (before kill {result['acked_before_kill']}) "
          f"failed attempts={result['errors']} rows present={len(present)} acknowledged but missing={len(missing)} "
          f"old leader={result['old_leader']} new leader={result['new_leader']} "
          f"first write after the kill={result['seconds_to_first_write']:.1f}s")
    check("writes resume on a new leader after the leader is killed",
          result["new_leader"] not in (None, result["old_leader"]) and len(acked) > result["acked_before_kill"],
          f"{result['old_leader']} -> {result['new_leader']}, {len(acked) - result['acked_before_kill']} acks after the kill")
    check("synchronous replication: every acknowledged write is present after the failover",
          not missing and present_rows.returncode == 0,
          f"{len(acked)} acknowledged, {len(present)} present, missing {missing[:10]}")
    ha_stack.failover = result  # read by the tests below


def test_old_leader_rejoins_as_a_replica_and_serves_reads(ha_stack):
    old = ha_stack.failover["old_leader"]
    container = ha_stack.container("data", old)
    if not ha_stack.running(container):
        sh(["docker", "start", container], check=True)

    def rejoined():
        members = {m["name"]: m for m in ha_stack.cluster_state()["members"]}
        member = members.get(old, {})
        return member if member.get("state") == "streaming" else None

    member = ha_stack.wait_for(f"{old} streaming again", rejoined, 180, 2)
    check(f"the old leader {old} rejoins as a replica", member["role"] in ("replica", "sync_standby"),
          {k: member.get(k) for k in ("role", "state", "timeline", "lag")})
    expected = ha_stack.psql(f"SELECT count(*) FROM {WRITES_TABLE}").stdout.strip()

    def replica_caught_up():
        out = ha_stack.psql(f"SELECT pg_is_in_recovery(), count(*) FROM {WRITES_TABLE}", port=5433).stdout.strip()
        return out if out == f"t|{expected}" else None

    seen = ha_stack.wait_for("the read-only endpoint to serve every row", replica_caught_up, 60, 1)
    check("the read-only endpoint serves a replica with every row after the failover", seen, f"{seen} (leader {expected})")


def test_standin_api_answers_after_the_failover(ha_stack):
    def post():
        code, doc = ha_stack.api("POST", "/console/api/messages", {"body": "after failover"})
        return doc if code == 201 and doc.get("id") else None

    created = ha_stack.wait_for("the api to write through the new leader", post, 60, 1)
    code, back = ha_stack.api("GET", f"/console/api/messages/{created['id']}")
    check("the stand-in api writes and reads back a row after the failover",
          code == 200 and back.get("body") == "after failover", f"{code} {back}")
    code, ping = ha_stack.api("GET", "/console/api/ping")
    check("the api's ping sees the database and Redis", code == 200 and ping.get("db", {}).get("ok")
          and ping.get("redis", {}).get("ok"), {k: ping.get(k) for k in ("db", "redis")})
