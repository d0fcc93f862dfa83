"""The steps of `invoke adopt.run` and `invoke adopt.rollback`: move an official install's data into
this stack, verified, with the official install kept to fall back to (difyops/adopt.py plans them).

Order, so that nothing is half imported:
1. pre-flight (adopt.make_plan and the stack's own pre-flight on the mapped .env): refusals, one
   line each, before anything changes; then the confirmation (or --yes). With --force over a
   stack that holds data, backup.create first.
2. the official stack's app services stop (`docker compose stop`: containers and files stay; their
   restart policy is set to "no" meanwhile, so a reboot does not start them again beside this
   stack); its PostgreSQL servers and Redis run on, or start, to be read.
3. this stack's .env is written (the previous one kept beside it), its networks and volumes are
   created and its data cluster starts.
4. every database moves into a new database (difyops/pgmove.py: dump and restore, every table's
   row count and content hash compared); every folder is copied into a staging folder inside its
   volume (every file's sha256 compared); Redis is snapshotted (RDB) and digested.
   Any failure up to here undoes all of it (scratch databases dropped, staging folders removed, the
   volumes and networks this run created removed, the previous .env back, the official services
   started again): nothing of the source is left in the stack.
5. the switch: the official data services stop; Redis's snapshot goes in place and its keys are
   compared with the source's; the staged folders and the certificates go in place; the databases
   are renamed into place in one transaction (with --force the current ones are kept aside).
6. every cluster starts (the api's one-shot migration job first: the release's migrations when it
   is newer than the install), then the health checks: every container healthy, the gateway answers.
The record (var/<stack>/adopt.json) says what was stopped, so adopt.rollback stops this stack and
starts exactly those services of the official install again.
"""

from .checks import (  # noqa: F401
    confirm_text,
    mapped_env_text,
    preflight,
    redis_problems,
    source_certificate_problems,
    target_problems,
)
from .commands import (  # noqa: F401
    LABEL,
    USER_TABLES_SQL,
    RunError,
    Source,
    compare_digests,
    list_databases_sql,
    mbps,
    parse_digest,
    parse_tree,
    pg_source,
    plugin_packages,
    redis_source,
    redis_version_of_image,
    run,
    secret_key_problem,
    source_psql_argv,
    stamp_now,
    tool_argv,
)
from .moving import (  # noqa: F401
    move_databases,
    place_certificates,
    place_redis,
    prepare_target,
    snapshot_redis,
    stage_files,
)
from .official import (  # noqa: F401
    Adoption,
    restore_policies,
    running_count,
    start_official,
    stop_official,
    wait_source_db,
)
from .running import (  # noqa: F401
    adopt,
    health,
    record,
    rollback,
    switch,
    undo,
)
