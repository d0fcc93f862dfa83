"""HA PostgreSQL: Patroni elects a leader with a synchronous replica; HAProxy's fronts route writes
to the leader and reads to the replicas; pgvector works; losing the leader for good under load
(clients with no timeouts, the stand-in api's Dify-shaped pool) leaves no session hanging past the
bound, service comes back within the failover bound and loses no acknowledged write; the old
leader, brought back, rejoins as a replica; the stand-in's api answers. The leader is lost twice:
killed (issue 15's scenario), then its host gone."""

from __future__ import annotations

import secrets
import time

from halib import PG_IDLE, PSQL_BUSY, PSQL_WRITER, ClientLoad, lose_node, restore_node, sh
from testkit import check

from difyops.ha import FAILOVER_BOUND_SECONDS, SESSION_CUT_SECONDS

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


def _wait_until(predicate, deadline: float, every: float = 0.5) -> bool:
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def _bring_back_the_lost_leader(ha_stack) -> None:
    """Before another loss: the node lost last is started again and is the synchronous standby
    (with synchronous_mode only that one may be promoted)."""
    lost = getattr(ha_stack, "failover", None)
    if not lost:
        return
    container = ha_stack.container("data", lost["old_leader"])
    if not ha_stack.running(container):
        if lost["networks"]:
            restore_node(container, lost["networks"])
        else:
            sh(["docker", "start", container], check=True)
    ha_stack.wait_for(f"{lost['old_leader']} to be the synchronous standby again", lambda: any(
        m["name"] == lost["old_leader"] and m.get("role") == "sync_standby" and m.get("state") == "streaming"
        for m in ha_stack.cluster_state()["members"]), 180, 2)


def _leader_lost_under_load(ha_stack, how: str, table: str) -> None:
    """The leader lost for good (`killed`: SIGKILL, as in issue 15; `host gone`: off every network
    first, so no FIN or RST reaches anyone, then SIGKILL) while clients that set no timeouts write
    through db_postgres (six psql loops, a connection per INSERT; the stand-in api with its
    Dify-shaped pool, three requests at a time) and hold a busy and an idle session. Several
    connections are being opened at the moment of the loss: a session caught connecting is what
    HAProxy used to leave waiting."""
    created = ha_stack.psql(f"CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
    assert created.returncode == 0, created.stderr
    old = ha_stack.leader()
    assert old, "no Patroni leader before the loss"
    tag = f"failover-{secrets.token_hex(3)}"
    writers = {
        "psql writers": ClientLoad.psql(ha_stack, "writer", PSQL_WRITER, TABLE=table, WRITERS="6",
                                        MAX_ATTEMPTS="20000", MAX_SECONDS="300"),
        "api writers": ClientLoad.api(ha_stack, "apiload", TAG=tag, WRITERS="3", MAX_ATTEMPTS="20000",
                                      MAX_SECONDS="300"),
    }
    sessions = {
        "busy session": ClientLoad.psql(ha_stack, "busy", PSQL_BUSY, MAX_SECONDS="600"),
        "idle session": ClientLoad.python(ha_stack, "idle", PG_IDLE, MAX_SECONDS="600"),
    }
    clients = {**writers, **sessions}
    networks: dict = {}
    try:
        for client in clients.values():
            client.start()
        ha_stack.wait_for("both writers acknowledged and both sessions open", lambda: all(
            len(w.acked()) >= 20 for w in writers.values()) and all(s.attempts() for s in sessions.values()), 120, 0.5)
        container = ha_stack.container("data", old)
        if how == "host gone":
            lost_at, networks = lose_node(ha_stack, container)
        else:
            sh(["docker", "kill", container], check=True)
            lost_at = time.time()  # dead from here on (a write acknowledged before this was not lost)
        # Done when every writer is back (10 acknowledged writes begun after the loss) and every
        # session opened before it has ended; bounded: the failover bound plus the cut bound.
        _wait_until(lambda: all(len(w.acks_started_after(lost_at)) >= 10 for w in writers.values())
                    and not any(s.waiting() for s in sessions.values()),
                    lost_at + FAILOVER_BOUND_SECONDS + SESSION_CUT_SECONDS)
        longest = {label: c.longest_after(lost_at) for label, c in clients.items()}
        back = {label: w.back_after(lost_at) for label, w in writers.items()}
        outcome = {label: (s.attempts()[0].outcome or "still open") for label, s in sessions.items()}
    finally:
        for client in clients.values():
            client.stop()
        ha_stack.failover = {"old_leader": old, "networks": networks}  # read by the tests below
    new = ha_stack.leader(exclude=old)
    for label, (seconds, attempt) in longest.items():
        state = "still waiting" if attempt and attempt.end is None else (attempt.outcome if attempt else "-")
        print(f"SECONDS postgres leader {how}: {label}: longest session past the loss {seconds:.1f}s ({state})"
              + (f", first acknowledged write begun after the loss {back[label]:.1f}s after it"
                 if back.get(label) is not None else (", no write acknowledged since" if label in back else "")))
    check(f"leader {how}: no session through db_postgres outlives the loss of {old} by more than "
          f"{SESSION_CUT_SECONDS}s", all(seconds <= SESSION_CUT_SECONDS for seconds, _ in longest.values()),
          {label: round(seconds, 1) for label, (seconds, _) in longest.items()})
    check(f"leader {how}: the busy and the idle session to the lost leader are closed, not left open",
          all(o == "cut" for o in outcome.values()), outcome)
    check(f"leader {how}: writes through db_postgres and through the api are acknowledged again within "
          f"{FAILOVER_BOUND_SECONDS}s, on a new leader",
          new not in (None, old) and all(b is not None and b <= FAILOVER_BOUND_SECONDS for b in back.values()),
          {"new leader": new, **{k: (round(v, 1) if v is not None else None) for k, v in back.items()}})
    rows = ha_stack.psql(f"SELECT id FROM {table}")
    present = set(rows.stdout.split())
    messages = ha_stack.psql(f"SELECT id FROM messages WHERE body LIKE '{tag}-%'")
    present_messages = set(messages.stdout.split())
    acked, acked_messages = writers["psql writers"].acked(), writers["api writers"].acked()
    print(f"COUNTS postgres failover ({how}): psql writes acknowledged={len(acked)} present={len(acked & present)}; "
          f"api writes acknowledged={len(acked_messages)} present={len(acked_messages & present_messages)}; "
          f"leader {old} -> {new}")
    check(f"leader {how}: synchronous replication: every acknowledged write (psql and api) is present",
          rows.returncode == 0 and messages.returncode == 0 and acked <= present and acked_messages <= present_messages,
          {"psql missing": sorted(acked - present)[:10], "api missing": sorted(acked_messages - present_messages)[:10]})


def test_leader_killed_for_good_under_load_no_session_hangs(ha_stack):
    _leader_lost_under_load(ha_stack, "killed", WRITES_TABLE)


def test_leader_host_gone_for_good_under_load_no_session_hangs(ha_stack):
    _bring_back_the_lost_leader(ha_stack)
    _leader_lost_under_load(ha_stack, "host gone", WRITES_TABLE + "_gone")


def test_old_leader_rejoins_as_a_replica_and_serves_reads(ha_stack):
    old = ha_stack.failover["old_leader"]
    container = ha_stack.container("data", old)
    if not ha_stack.running(container):
        restore_node(container, ha_stack.failover["networks"])
    expected_table = WRITES_TABLE + "_gone"

    def rejoined():
        members = {m["name"]: m for m in ha_stack.cluster_state()["members"]}
        member = members.get(old, {})
        return member if member.get("state") == "streaming" else None

    member = ha_stack.wait_for(f"{old} streaming again", rejoined, 180, 2)
    check(f"the old leader {old} rejoins as a replica", member["role"] in ("replica", "sync_standby"),
          {k: member.get(k) for k in ("role", "state", "timeline", "lag")})
    expected = ha_stack.psql(f"SELECT count(*) FROM {expected_table}").stdout.strip()

    def replica_caught_up():
        out = ha_stack.psql(f"SELECT pg_is_in_recovery(), count(*) FROM {expected_table}", port=5433).stdout.strip()
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
