# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# `celery -A celery_entrypoint.celery worker -P gevent ...` (MODE=worker) and `... beat` (MODE=beat), as in
# Dify: celery's gevent pool has monkeypatched the stdlib already; psycopg2 is made gevent-aware here.
import logging

import psycogreen.gevent as psycogreen_gevent

from standin import logs

logs.setup_logging()
psycogreen_gevent.patch_psycopg()
logging.getLogger("standin.celery").info("psycopg2 patched with gevent.")

from app import app, celery  # noqa: E402

__all__ = ["app", "celery"]
