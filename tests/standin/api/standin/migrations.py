# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Alembic-like migrations for the stand-in: real tables in PostgreSQL, applied revisions recorded in
# `stand_in_migrations`, idempotent, and serialised across replicas with a PostgreSQL advisory lock
# (two api containers starting at once with MIGRATION_ENABLED=true: one migrates, the other waits and
# then finds nothing to do). v1 images know revisions 0001-0003; v2 images add 0004.
import logging
import time
from dataclasses import dataclass

from standin import config, db

log = logging.getLogger("standin.migrations")

# pg_advisory_lock key: a fixed 64-bit number ("difyops-standin-migrations").
LOCK_KEY = 0x5DA7_0B5D_0001
TABLE = "stand_in_migrations"


@dataclass(frozen=True)
class Migration:
    revision: str
    introduced_in: int  # image version (v1 -> 1, v2 -> 2) that ships this revision
    description: str
    sql: str


ALL_MIGRATIONS = (
    Migration("0001_messages", 1, "create messages", """
        CREATE TABLE messages (
            id serial PRIMARY KEY,
            body text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
    """),
    Migration("0002_task_results", 1, "create task_results", """
        CREATE TABLE task_results (
            task_id text PRIMARY KEY,
            state text NOT NULL DEFAULT 'PENDING',
            queue text,
            input_sha256 text,
            result text,
            error text,
            worker text,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz
        );
    """),
    Migration("0003_upload_files", 1, "create upload_files", """
        CREATE TABLE upload_files (
            id text PRIMARY KEY,
            name text NOT NULL,
            size bigint NOT NULL,
            sha256 text NOT NULL,
            key text NOT NULL,
            mime_type text,
            created_by text,
            created_at timestamptz NOT NULL DEFAULT now()
        );
    """),
    Migration("0004_v2_message_tag_end_users", 2, "add messages.tag, create end_users", """
        ALTER TABLE messages ADD COLUMN tag text;
        CREATE TABLE end_users (
            id text PRIMARY KEY,
            session_id text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
    """),
)


class MigrationError(RuntimeError):
    pass


def known_migrations():
    n = config.image_version_number()
    return [m for m in ALL_MIGRATIONS if m.introduced_in <= n]


def head():
    return known_migrations()[-1].revision


def _ensure_table(cur):
    cur.execute(f"""
        CREATE TABLE IF NOT EXISTS {TABLE} (
            version text PRIMARY KEY,
            description text,
            image_version text,
            applied_by text,
            applied_at timestamptz NOT NULL DEFAULT now()
        )""")


def _applied(cur):
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
    if not cur.fetchone()[0]:
        return []
    cur.execute(f"SELECT version FROM {TABLE} ORDER BY version")
    return [r[0] for r in cur.fetchall()]


def status(conn=None):
    """Schema state as seen by this image: applied, pending, unknown (applied by a newer image)."""
    own = conn is None
    conn = conn or db.connect_with_retry(attempts=1)
    try:
        with conn.cursor() as cur:
            applied = _applied(cur)
    finally:
        if own:
            conn.close()
    known = [m.revision for m in known_migrations()]
    return {
        "head": known[-1],
        "current": applied[-1] if applied else None,
        "applied": applied,
        "pending": [r for r in known if r not in applied],
        "unknown": [r for r in applied if r not in known],
    }


def _lock(cur, timeout):
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        if cur.fetchone()[0]:
            if waited:
                log.info("migration lock acquired")
            return
        if not waited:
            log.info("another replica holds the migration lock; waiting (at most %ss)", timeout)
            waited = True
        if time.monotonic() > deadline:
            raise MigrationError(f"could not take the migration lock within {timeout}s")
        time.sleep(0.5)


def upgrade():
    """Apply pending revisions under the advisory lock. Returns the list of revisions applied now."""
    if config.DB_TYPE not in ("postgresql", "postgres"):
        raise MigrationError(f"DB_TYPE={config.DB_TYPE}: the stand-in supports PostgreSQL only")
    conn = db.connect_with_retry()
    done = []
    try:
        with conn.cursor() as cur:
            _lock(cur, config.env_int("STANDIN_MIGRATION_LOCK_TIMEOUT", 300))
            try:
                # Test hook: hold the lock a while so concurrency can be observed.
                delay = float(config.env("STANDIN_MIGRATION_DELAY", "0"))
                if delay > 0:
                    log.info("STANDIN_MIGRATION_DELAY: holding the migration lock for %ss", delay)
                    time.sleep(min(delay, 600))
                _ensure_table(cur)
                applied = _applied(cur)
                known = {m.revision for m in known_migrations()}
                unknown = [r for r in applied if r not in known]
                if unknown:
                    raise MigrationError(
                        f"database has revision(s) {', '.join(unknown)} that this image "
                        f"({config.reported_version()}) does not know: it was migrated by a newer image. "
                        "Restore a backup taken before the upgrade to roll back.")
                for m in known_migrations():
                    if m.revision in applied:
                        continue
                    log.info("applying migration %s (%s)", m.revision, m.description)
                    conn.autocommit = False
                    try:
                        with conn.cursor() as tx:
                            tx.execute(m.sql)
                            tx.execute(
                                f"INSERT INTO {TABLE} (version, description, image_version, applied_by) "
                                "VALUES (%s, %s, %s, %s)",
                                (m.revision, m.description, config.reported_version(), config.HOSTNAME))
                        conn.commit()
                    except Exception:
                        conn.rollback()
                        raise
                    finally:
                        conn.autocommit = True
                    done.append(m.revision)
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    finally:
        conn.close()
    return done
