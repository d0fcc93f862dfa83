# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Logging to stdout as text or JSON lines (Dify's LOG_OUTPUT_FORMAT=text|json, LOG_LEVEL).
import json
import logging
import sys
import time

from standin import config


class JsonFormatter(logging.Formatter):
    def format(self, record):
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "severity": record.levelname,
            "service": "dify-api-standin",
            "mode": config.MODE,
            "hostname": config.HOSTNAME,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s [%(processName)s] [%(name)s] %(message)s"


def make_formatter():
    if config.LOG_OUTPUT_FORMAT == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")


_done = False


def setup_logging(force=False):
    """Root logger -> stdout, in the chosen format. Idempotent."""
    global _done
    if _done and not force:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(make_formatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, config.LOG_LEVEL, logging.INFO))
    # Gunicorn's and werkzeug's loggers go through the same handler.
    for name in ("gunicorn.error", "gunicorn.access", "werkzeug", "celery", "kombu"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.propagate = True
    _done = True


def gunicorn_logconfig_dict():
    fmt = {"()": "standin.logs.JsonFormatter"} if config.LOG_OUTPUT_FORMAT == "json" else {
        "format": TEXT_FORMAT, "datefmt": "%Y-%m-%d %H:%M:%S"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"standin": fmt},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                                "formatter": "standin"}},
        "root": {"level": config.LOG_LEVEL, "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": config.LOG_LEVEL, "handlers": [], "propagate": True},
            # The app logs each request itself (not /health); gunicorn's access lines would double them.
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }
