# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# The stand-in's database pool is SQLAlchemy's own QueuePool, built the way Dify 1.13.3 builds its
# engine (configs/middleware DatabaseConfig: the URL with DB_EXTRAS as its query, pool_size,
# max_overflow, pool_recycle, pool_pre_ping, pool_use_lifo, pool_reset_on_return, pool_timeout,
# connect_args timezone=UTC), so a pooled connection behaves as Dify's does when the database goes
# away: no connect or statement timeout of its own, a dead connection found by pre-ping (when
# SQLALCHEMY_POOL_PRE_PING is on) or by the query that fails on it, and on a disconnect the whole
# pool invalidated. gevent-friendly once psycogreen has patched psycopg2 (gunicorn.conf.py,
# celery_entrypoint.py), as in Dify.
import contextlib
import logging
import os
import time

import psycopg2
import sqlalchemy
import sqlalchemy.exc

from standin import config

log = logging.getLogger("standin.db")


class PoolTimeout(Exception):
    pass


class _Cursor:
    """What callers use of a psycopg2 RealDictCursor (execute, fetchone, fetchall, rowcount), on a
    SQLAlchemy connection: statements go through SQLAlchemy, so its disconnect handling applies."""

    def __init__(self, conn):
        self._conn = conn
        self._result = None

    def execute(self, sql, params=None):
        self._result = self._conn.exec_driver_sql(sql, params) if params is not None \
            else self._conn.exec_driver_sql(sql)

    def fetchone(self):
        return self._result.mappings().fetchone()

    def fetchall(self):
        return self._result.mappings().fetchall()

    @property
    def rowcount(self):
        return self._result.rowcount


class Pool:
    def __init__(self):
        self._engine = None
        self._pid = None

    @property
    def engine(self):
        # Created on first use; a forked process (gunicorn worker, celery prefork child) never
        # shares its parent's sockets: it drops the inherited pool without closing it, as
        # SQLAlchemy's documentation advises, and builds its own.
        if self._engine is not None and self._pid != os.getpid():
            self._engine.dispose(close=False)
            self._engine = None
        if self._engine is None:
            self._engine = sqlalchemy.create_engine(config.database_uri(), **config.engine_options())
            self._pid = os.getpid()
        return self._engine

    @contextlib.contextmanager
    def cursor(self):
        """One transaction on a pooled connection: commit on success, roll back on error. Errors
        come out as psycopg2's (the stand-in's error handlers and callers know those)."""
        try:
            with self.engine.connect() as conn:
                yield _Cursor(conn)
                conn.commit()
        except sqlalchemy.exc.TimeoutError as exc:
            raise PoolTimeout(f"no free database connection within {config.SQLALCHEMY_POOL_TIMEOUT}s "
                              f"(pool size {config.SQLALCHEMY_POOL_SIZE} + overflow "
                              f"{config.SQLALCHEMY_MAX_OVERFLOW})") from exc
        except sqlalchemy.exc.DBAPIError as exc:
            if exc.orig is not None:
                raise exc.orig from exc
            raise


pool = Pool()


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
