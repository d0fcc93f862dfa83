# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# `celery -A celery_entrypoint.celery worker -P gevent ...` (MODE=worker) and `... beat` (MODE=beat), as in
# Dify: celery's gevent pool has monkeypatched the stdlib already; psycopg2 is made gevent-aware here.
import faulthandler
import logging
import signal
import sys

import gevent.monkey
import psycogreen.gevent as psycogreen_gevent

from standin import logs

logs.setup_logging()
# SIGUSR2 prints every Python stack to stderr (the container's log): how a hang is read. In the
# worker (gevent pool) the stacks that matter are the greenlets', which gevent prints; beat has threads.
if gevent.monkey.is_module_patched("socket"):
    import gevent
    import gevent.util

    gevent.signal_handler(signal.SIGUSR2, lambda: gevent.util.print_run_info(file=sys.stderr))
else:
    faulthandler.register(signal.SIGUSR2, all_threads=True)
psycogreen_gevent.patch_psycopg()
logging.getLogger("standin.celery").info("psycopg2 patched with gevent.")

from app import app, celery  # noqa: E402

__all__ = ["app", "celery"]
