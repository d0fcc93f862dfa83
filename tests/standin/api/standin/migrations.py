# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Alembic-like migrations for the stand-in: real tables in PostgreSQL, applied revisions recorded in
# `stand_in_migrations`, idempotent. Guarded as Dify's `flask upgrade-db` guards them
# (api/commands/system.py): a Redis lock named db_upgrade_lock (TTL 60 s, renewed while the
# migration runs) taken without waiting; whoever does not get it skips the migration and exits 0
# ("Database migration skipped"), so a replica starting beside another one may start on a schema
# that is not migrated yet. v1 images know revisions 0001-0003; v2 images add 0004, v3 0005.
import logging
import threading
import time
from dataclasses import dataclass

from standin import config, db, redis_client

log = logging.getLogger("standin.migrations")

LOCK_NAME = "db_upgrade_lock"
LOCK_TTL_SECONDS = 60
TABLE = "stand_in_migrations"


class LockHeld(RuntimeError):
    """Another process holds db_upgrade_lock: Dify skips the migration."""


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
    # v3 stands in for Dify 1.16.1: an upgrade from a 1.13.3 stand-in (v1, v2) migrates once more,
    # as Dify's own chain does across releases (alembic goes to the image's head in one run).
    Migration("0005_v3_agent_runs", 3, "create agent_runs (the 1.16 New Agent's bookkeeping)", """
        CREATE TABLE agent_runs (
            id text PRIMARY KEY,
            state text NOT NULL DEFAULT 'created',
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


class _RenewedLock:
    """db_upgrade_lock, taken without blocking and renewed every third of its TTL while held."""

    def __init__(self):
        self._lock = redis_client.get().lock(LOCK_NAME, timeout=LOCK_TTL_SECONDS, thread_local=False)
        self._stop = threading.Event()
        self._renewer = None

    def __enter__(self):
        if not self._lock.acquire(blocking=False):
            raise LockHeld(f"{LOCK_NAME} is held by another process")
        self._renewer = threading.Thread(target=self._renew, daemon=True)
        self._renewer.start()
        return self

    def _renew(self):
        while not self._stop.wait(LOCK_TTL_SECONDS / 3):
            try:
                self._lock.reacquire()
            except Exception:  # noqa: BLE001 - lost it: the migration goes on, as Dify's does
                log.warning("could not renew %s", LOCK_NAME)

    def __exit__(self, *exc):
        self._stop.set()
        try:
            self._lock.release()
        except Exception:  # noqa: BLE001 - expired meanwhile
            log.warning("%s had expired before it was released", LOCK_NAME)


def upgrade():
    """Apply pending revisions under db_upgrade_lock. Returns the revisions applied now; raises
    LockHeld when another process holds the lock (nothing is done)."""
    if config.DB_TYPE not in ("postgresql", "postgres"):
        raise MigrationError(f"DB_TYPE={config.DB_TYPE}: the stand-in supports PostgreSQL only")
    with _RenewedLock():
        # Test hook: hold the lock a while so concurrency can be observed.
        delay = float(config.env("STANDIN_MIGRATION_DELAY", "0"))
        if delay > 0:
            log.info("STANDIN_MIGRATION_DELAY: holding %s for %ss", LOCK_NAME, delay)
            time.sleep(min(delay, 600))
        conn = db.connect_with_retry()
        done = []
        try:
            with conn.cursor() as cur:
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
            conn.close()
    return done
