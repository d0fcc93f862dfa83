"""Restoring a backup set onto a stack, all or nothing, with a way back (``invoke backup.restore``).

check   Nothing changes. The set (checksums, stack, every part decrypts), the identity, Docker. With
        --config, the settings to restore: the set's .env with this server's own keys kept
        (SERVER_KEYS: its folders, how its gateway is reached), checked as prod.deploy's pre-flight
        checks a .env; what a restore cannot change under a running stack (the data layer's
        shape, a PostgreSQL role that does not exist) is refused in one line.
load    Each database restored into <db>_restore_<t> and compared with the manifest while the stack
        still serves.
switch  Journaled from here (var/<stack>/restores/<t>.json, beside the .env). api, the workers and
        the plugin daemon stop; the databases are swapped in one transaction (the current ones
        kept as <db>_old_<t>); the volumes and Redis restored (their current content kept in
        .difyops-pre-restore-<t> inside each volume); with --config the .env (the current one
        copied beside it), the certificates folder and the passwords of the PostgreSQL roles the
        stack logs in as; then the clusters start again, each one whose configuration changed
        recreated (Redis, Sentinel, Patroni and every service take the restored secrets).

Any failure in switch walks the journal backwards: what was replaced is put back, the roles get
their passwords back, and the clusters start as they were (``rollback``). ``undo`` walks the
last restore's journal the same way later, keeping what the restore had brought aside;
``drop_aside`` removes what restores keep aside, after which there is no way back.

A server with no .env (a new one) restores with --config from the set alone: the set's .env is
written (with this server's default folders), the stack's networks and volumes are created, the
data cluster starts, the set is restored into it and the other clusters start, as prod.deploy does.
A failure there takes down what it started and removes what it created.
"""

from .journal import (  # noqa: F401
    Journal,
    journal_dir,
    journals,
    last_journal,
)
from .plan import (  # noqa: F401
    Plan,
    check,
    extract_config,
)
from .putback import (  # noqa: F401
    put_back,
)
from .restoring import (  # noqa: F401
    restore,
)
from .steps import (  # noqa: F401
    existing_roles,
    existing_volumes,
    redis_services,
    refresh_monitoring,
    rendered,
    restore_names,
    run_sql,
    set_role_passwords,
    stop_users,
    swap_back_sql,
    swap_sql,
    up_clusters,
)
from .undo import (  # noqa: F401
    aside_summary,
    drop_aside,
    undo,
    undo_problems,
)
from .values import (  # noqa: F401
    ASIDE,
    FIXED_KEYS,
    MONITORING_READERS,
    RESTIC_KEY,
    SERVER_KEYS,
    SERVER_NETWORK_KEYS,
    SERVER_PATH_KEYS,
    STARTED_AGAIN,
    UNDONE,
    USERS,
    RestoreFailed,
    changed_clusters,
    fixed_problems,
    is_local_repository,
    role_changes,
    role_passwords,
    server_values,
)
