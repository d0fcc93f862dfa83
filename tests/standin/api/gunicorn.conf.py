# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Read by gunicorn from the working directory (/app/api), as Dify's api/gunicorn.conf.py is. Gunicorn's
# gevent worker monkeypatches the stdlib when it starts; once it has, psycopg2 is made gevent-aware too,
# so database calls yield to other greenlets (Dify does the same with a gevent patch-event subscriber).
import logging

from gevent import events as gevent_events

from standin import logs


def _post_patch(event):
    if not isinstance(event, gevent_events.GeventDidPatchBuiltinModulesEvent):
        return
    import psycogreen.gevent

    psycogreen.gevent.patch_psycopg()
    logging.getLogger("standin.gunicorn").info("psycopg2 patched with gevent.")


gevent_events.subscribers.append(_post_patch)

# Logs to stdout, text or JSON after LOG_OUTPUT_FORMAT.
logconfig_dict = logs.gunicorn_logconfig_dict()
