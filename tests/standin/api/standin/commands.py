# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Flask CLI commands of the stand-in (MODE=job runs `flask <args>`):
#   flask upgrade-db      Dify's: migrate under db_upgrade_lock; "Database migration skipped" and exit 0
#                         when another holds it; exit 1 when the migration fails (since Dify PR 32024)
#   flask db upgrade      the same, Alembic/Flask-Migrate spelling
#   flask db current      as Alembic prints it: the applied revision, " (head)" after it when it is
#                         this image's head; exit 1 on a revision this image does not know
#   flask db heads        as Alembic: this image's head revision, "<rev> (head)"
#   flask db status       the schema state as JSON (stand-in only)
#   flask db history      list this image's revisions
#   flask standin-info    version, image version, the settings it resolved (no secrets)
import json
import sys

import click

from standin import config, migrations


def _upgrade():
    click.echo("Preparing database migration...")
    try:
        done = migrations.upgrade()
    except migrations.LockHeld:
        click.echo("Database migration skipped")
        return
    except Exception as exc:  # noqa: BLE001 - a clear message and a non-zero exit
        click.echo(click.style(f"Database migration failed: {exc}", fg="red"), err=True)
        sys.exit(1)
    if done:
        click.echo(click.style(f"Database migration successful! applied: {', '.join(done)}", fg="green"))
    else:
        click.echo(f"Database migration successful! already at head {migrations.head()}.")


def register(app):
    @app.cli.command("upgrade-db", help="Upgrade the database (stand-in migrations).")
    def upgrade_db():
        _upgrade()

    @app.cli.group("db", help="Alembic-like migration commands.")
    def db_group():
        pass

    @db_group.command("upgrade")
    def db_upgrade():
        _upgrade()

    @db_group.command("current")
    def db_current():
        state = migrations.status()
        if state["unknown"]:
            click.echo(f"FAILED: Can't locate revision identified by '{state['unknown'][-1]}'", err=True)
            sys.exit(1)
        if state["current"]:
            click.echo(state["current"] + (" (head)" if state["current"] == state["head"] else ""))

    @db_group.command("heads")
    def db_heads():
        click.echo(f"{migrations.head()} (head)")

    @db_group.command("status")
    def db_status():
        click.echo(json.dumps(migrations.status(), indent=2))

    @db_group.command("history")
    def db_history():
        for m in migrations.known_migrations():
            click.echo(f"{m.revision}  (image v{m.introduced_in})  {m.description}")

    @app.cli.command("standin-info", help="Show what this stand-in resolved from its environment.")
    def standin_info():
        root, problem = config.storage_root()
        click.echo(json.dumps({
            "test_double": True,
            "version": config.reported_version(),
            "image_version": config.image_version(),
            "head": migrations.head(),
            "db": f"{config.DB_USERNAME}@{config.DB_HOST}:{config.DB_PORT}/{config.DB_DATABASE}",
            "redis": f"{config.REDIS_HOST}:{config.REDIS_PORT}/{config.REDIS_DB}",
            "storage_root": root,
            "storage_problem": problem,
            "code_execution_endpoint": config.CODE_EXECUTION_ENDPOINT,
            "plugin_daemon_url": config.PLUGIN_DAEMON_URL,
        }, indent=2))
