# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# A lightweight Celery instance for the worker healthcheck, as in Dify:
#   celery -A celery_healthcheck.celery inspect ping -d celery@$HOSTNAME
# It does not import app.py (no Flask, no database), only the broker settings.
from standin.celery_app import make_celery

celery = make_celery(name="dify-standin-healthcheck")
