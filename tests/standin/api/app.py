# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Entry module of the dify-api stand-in: `gunicorn app:app`, `flask run` (FLASK_APP=app.py) and
# `celery -A app.celery` all start here, as with Dify's api/app.py. Gevent monkeypatching happens in
# gunicorn.conf.py (gunicorn's gevent worker) and celery_entrypoint.py (celery -P gevent), as in Dify.
import logging
import sys
import time

from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from standin import commands, config, db, logs, privkeys, views
from standin.tasks import celery  # noqa: F401  (celery -A app.celery beat / worker)

log = logging.getLogger("standin.app")


def _is_flask_cli_command():
    """True for `flask <command>` other than `flask run` (migrations and jobs need no SECRET_KEY)."""
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0.endswith("flask") and len(sys.argv) > 1 and sys.argv[1] != "run"


def create_app():
    logs.setup_logging()
    if not config.SECRET_KEY and not _is_flask_cli_command():
        # Dify cannot sign sessions or file URLs without it; the stand-in refuses just as plainly.
        raise SystemExit("SECRET_KEY is empty: set SECRET_KEY (e.g. `openssl rand -base64 42`) "
                         "before starting the api")
    app = Flask("dify-standin")
    app.secret_key = config.SECRET_KEY or "unset-cli-only"
    app.json.sort_keys = False

    for name, prefix in views.PREFIXES.items():
        app.register_blueprint(views.bp, url_prefix=prefix, name=name)
    app.register_blueprint(views.root_bp)
    app.register_blueprint(privkeys.bp, url_prefix="/console/api")  # tenant key pairs (privkeys/)
    commands.register(app)

    @app.before_request
    def _start_timer():
        g.standin_started = time.monotonic()

    @app.after_request
    def _log_request(resp):
        started = g.get("standin_started")
        ms = (time.monotonic() - started) * 1000 if started else -1
        if request.path != "/health":
            log.info("%s %s %s %.1fms", request.method, request.full_path.rstrip("?"), resp.status_code, ms)
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        return views.error(exc.code or 500, exc.name.lower().replace(" ", "_"), exc.description)

    @app.errorhandler(db.PoolTimeout)
    @app.errorhandler(db.psycopg2.OperationalError)
    @app.errorhandler(db.psycopg2.InterfaceError)
    def _db_down(exc):
        log.warning("database unavailable: %s", str(exc).strip())
        return views.error(503, "database_unavailable", f"{type(exc).__name__}: {str(exc).strip()}")

    @app.errorhandler(db.psycopg2.errors.UndefinedTable)
    @app.errorhandler(db.psycopg2.errors.UndefinedColumn)
    def _schema_missing(exc):
        return views.error(503, "schema_not_migrated",
                           f"{str(exc).strip()} (run MODE=migration or set MIGRATION_ENABLED=true)")

    @app.errorhandler(Exception)
    def _unexpected(exc):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return views.error(500, "internal_server_error", f"{type(exc).__name__}: {exc}")

    log.info("dify-api stand-in %s loaded (mode=%s, image %s) on %s", config.reported_version(), config.MODE,
             config.image_version(), config.HOSTNAME)
    return app


app = create_app()
