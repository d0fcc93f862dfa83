# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Celery configuration from Dify's variables: CELERY_BROKER_URL (redis://:pw@redis:6379/1, or
# sentinel://...;sentinel://... with CELERY_USE_SENTINEL), CELERY_BACKEND (redis: results next to the
# broker; database: the stand-in keeps results only in its task_results table). As in Dify
# (api/extensions/ext_celery.py), task_ignore_result=True: no task stores a Celery result and no sender
# subscribes to one, so beat holds no pub/sub connection (tests/standin/CONTRACT.md, "Celery results").
import logging
from datetime import timedelta

from celery import Celery

from standin import config

log = logging.getLogger("standin.celery")


def make_celery(name="dify-standin", with_beat_schedule=False):
    broker_transport_options = {}
    if config.CELERY_USE_SENTINEL:
        broker_transport_options = {
            "master_name": config.CELERY_SENTINEL_MASTER_NAME,
            "sentinel_kwargs": {"socket_timeout": config.CELERY_SENTINEL_SOCKET_TIMEOUT,
                                "password": config.CELERY_SENTINEL_PASSWORD},
        }
    backend = None
    if config.CELERY_BACKEND == "redis":
        backend = config.CELERY_BROKER_URL
    celery = Celery(name, broker=config.CELERY_BROKER_URL, backend=backend)
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker_transport_options,
        result_backend_transport_options=broker_transport_options,
        task_default_queue=config.DEFAULT_TASK_QUEUE,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        beat_schedule_filename=config.env("CELERY_BEAT_SCHEDULE_FILE", "/tmp/celerybeat-schedule"),
        timezone="UTC",
    )
    if with_beat_schedule:
        celery.conf.beat_schedule = {
            "standin-beat-heartbeat": {
                "task": "standin.beat_heartbeat",
                "schedule": timedelta(seconds=config.BEAT_HEARTBEAT_INTERVAL),
                "options": {"queue": config.BEAT_HEARTBEAT_QUEUE,
                            "expires": config.BEAT_HEARTBEAT_INTERVAL * 3},
            }
        }
    return celery
