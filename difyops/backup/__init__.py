"""Backups of one deployment: what a set holds, the commands that make, check and restore it, and
the retention policy.

A set is one folder under the backups folder, ``<stack>-<YYYYmmddTHHMMSSZ>``, holding:

- ``postgres-<db>.dump.zst.age``: pg_dump (custom format) of Dify's and the plugin daemon's
  databases, read online from DIFYOPS_BACKUP_DB_HOST (a replica when there is one);
- ``redis.rdb.zst.age``: a Redis snapshot taken over the replication protocol;
- ``storage.tar.zst.age``, ``plugin-storage.tar.zst.age``: the upload and plugin volumes;
- ``config.tar.zst.age``: the .env file and the certificates folder, if present;
- ``manifest.json``: versions, stack, sizes, per-table row counts, file and key counts;
- ``SHA256SUMS``: sha256 of every file above (``sha256sum -c SHA256SUMS`` works).

Every part is compressed with zstd and encrypted with age to DIFYOPS_BACKUP_AGE_RECIPIENT; only the
identity file (``backup.keygen``, mode 0600) opens them. A set is written as ``<id>.partial`` and
renamed when complete, so a set with its final name is always whole.

Every step runs in a one-shot container of the backup image (images/backup: pg_dump 17, redis-cli,
age, zstd, restic) on the stack's backend network; the step scripts are mounted read-only from
images/backup/bin. Secrets reach the containers through the environment (``docker run -e NAME``
with the value in the docker client's environment), never on a command line.
"""

from .config import (  # noqa: F401
    ASIDE_PREFIX,
    BIN_DIR,
    DEFAULTS,
    FILE_VOLUMES,
    FORMAT,
    MANIFEST,
    PARTIAL_SUFFIX,
    SUMS,
    BackupConfig,
    BackupError,
    config_from,
    create_problems,
    dir_size,
    human_bytes,
    identity_problems,
    secret_env,
    set_env_values,
)
from .creation import (  # noqa: F401
    copy_off_host,
    create,
    create_and_record,
    parts_info,
)
from .schedule import (  # noqa: F401
    cron_entry,
    next_run,
    textfile_metric,
    write_textfile,
)
from .sets import (  # noqa: F401
    BackupSet,
    check_set,
    compare_counts,
    find_set,
    list_sets,
    remove_set,
    retention,
    set_name,
    set_time,
    stamp_now,
)
from .steps import (  # noqa: F401
    Part,
    aside_argv,
    build_default_image,
    check_part_argv,
    drop_database_argv,
    identity_mount,
    image_present,
    keygen_argv,
    parse_counts,
    parse_tsv,
    part_file,
    pg_dump_argv,
    pg_env,
    pg_restore_argv,
    preflight,
    psql_argv,
    redis_dump_argv,
    redis_restore_argv,
    restic_argv,
    role_passwords_argv,
    run_step,
    tar_argv,
    tool_argv,
    untar_argv,
    volume_exists,
)
from .verification import (  # noqa: F401
    check_parts,
    restore_database,
    verify,
)
