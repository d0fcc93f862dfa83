# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# A small PostgreSQL connection pool (psycopg2; gevent-friendly once psycogreen has patched psycopg2,
# because the locks below are the patched ones under gevent). Size SQLALCHEMY_POOL_SIZE, optional
# pre-ping (SQLALCHEMY_POOL_PRE_PING), broken connections are dropped so a restarted database is survived.
import contextlib
import logging
import os
import threading
import time

import psycopg2
import psycopg2.extras

from standin import config

log = logging.getLogger("standin.db")


class PoolTimeout(Exception):
    pass


class Pool:
    def __init__(self, size):
        self.size = max(1, size)
        self._reset()

    def _reset(self):
        self._pid = os.getpid()
        self._sem = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()
        self._idle = []

    def _checkout(self):
        if os.getpid() != self._pid:  # forked: never share a socket with the parent
            self._reset()
        if not self._sem.acquire(timeout=30):
            raise PoolTimeout(f"no free database connection within 30s (pool size {self.size})")
        conn = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is not None and (conn.closed or (config.SQLALCHEMY_POOL_PRE_PING and not _ping(conn))):
                _close(conn)
                conn = None
            if conn is None:
                conn = psycopg2.connect(**config.db_params())
            return conn
        except BaseException:
            _close(conn)
            self._sem.release()
            raise

    def _checkin(self, conn, broken):
        try:
            if broken or conn.closed:
                _close(conn)
            else:
                with self._lock:
                    self._idle.append(conn)
        finally:
            self._sem.release()

    @contextlib.contextmanager
    def cursor(self):
        """One transaction: commit on success, roll back on error, drop the connection if it broke."""
        conn = self._checkout()
        broken = False
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                yield cur
            conn.commit()
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        except BaseException:
            try:
                conn.rollback()
            except Exception:
                broken = True
            raise
        finally:
            self._checkin(conn, broken)


def _ping(conn):
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.rollback()
        return True
    except Exception:
        return False


def _close(conn):
    if conn is None:
        return
    try:
        conn.close()
    except Exception:
        pass


pool = Pool(config.SQLALCHEMY_POOL_SIZE)


def connect_with_retry(database=None, attempts=None, delay=1.0, autocommit=True):
    """A dedicated connection, retried a bounded number of times (database still starting)."""
    attempts = attempts or config.env_int("STANDIN_DB_CONNECT_RETRIES", 30)
    last = None
    for i in range(attempts):
        try:
            conn = psycopg2.connect(**config.db_params(database))
            conn.autocommit = autocommit
            return conn
        except psycopg2.OperationalError as exc:
            last = exc
            log.warning("database %s:%s not reachable (attempt %d/%d): %s",
                        config.DB_HOST, config.DB_PORT, i + 1, attempts, str(exc).strip())
            time.sleep(delay)
    raise RuntimeError(f"database {config.DB_HOST}:{config.DB_PORT}/{database or config.DB_DATABASE} "
                       f"not reachable after {attempts} attempts: {last}")
