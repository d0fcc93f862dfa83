"""Adopt an install of Dify's official docker/ bundle: what it is, what moves where, what changes.

This module finds and describes (the plan); it changes nothing. difyops/adopt_run.py does the move
and the way back, with the steps this module plans.

An official install is a folder (Dify's docker/, whatever it is called now) holding
docker-compose.yaml (and perhaps docker-compose.override.yaml), its settings in .env (from 1.15
also envs/**/*.env, read first, .env last) and its data in bind mounts under ./volumes/: PostgreSQL
15 in volumes/db/data, files in volumes/app/storage, plugins in volumes/plugin_daemon, Redis in
volumes/redis/data, the sandbox's extra Python packages in volumes/sandbox/dependencies, the vector
store (volumes/weaviate, or a second PostgreSQL in volumes/pgvector/data), certificates in
nginx/ssl and volumes/certbot/. It is one compose project, named after its folder unless
COMPOSE_PROJECT_NAME or the file's `name:` says otherwise; Compose itself is asked
(`docker compose config`), so overrides and interpolation count exactly as they do for the install.

What the secrets protect, as Dify's source says (tests/standin/CONTRACT.md has the files and commits):
- the private keys in storage (privkeys/<tenant>/private.pem) are the only way to read every
  provider credential stored encrypted with the tenant's public key (core/helper/encrypter.py,
  libs/rsa.py): they move with the storage, byte for byte;
- SECRET_KEY signs console and web-app sessions (JWT, libs/passport.py) and signed file links
  (FILES_ACCESS_TIMEOUT), and is the AES key of the system OAuth client settings stored in
  tool_oauth_system_clients and trigger_oauth_system_clients (core/tools/utils/
  system_oauth_encryption.py); later releases also seal the private keys with it (ENCPK1: prefix).
  It is carried unchanged. Only when it is Dify's public example value, and nothing stored depends
  on it, is it replaced (this project refuses public secrets): everyone signs in again.
- every other secret only connects two services that this project now runs both ends of: the new
  stack's own generated values are used.
"""

from .disk import (  # noqa: F401
    DB_MBPS,
    FILES_MBPS,
    HEADROOM_BYTES,
    HEADROOM_RATIO,
    START_SECONDS,
    Disk,
    Part,
    certs_source,
    database_parts,
    disk_needs,
    docker_root,
    downtime_seconds,
    file_parts,
    human,
    pg_data_dir,
    probe_volumes,
    redis_dataset_bytes,
    redis_part,
    tree_bytes,
    volume_probe_argv,
    with_headroom,
)
from .install import (  # noqa: F401
    COMPOSE_FILES,
    DB_SERVICES,
    FILE_DEFAULTS,
    FILE_PARTS,
    LAYOUT,
    OVERRIDE_FILES,
    PG_DATA,
    PUBLIC_DEFAULTS,
    READ_LIVE,
    SEALED_PRIVKEY_PREFIX,
    SECRET_KEY_TABLES,
    AdoptError,
    Install,
    Mount,
    Service,
    compose_files,
    declared_api_image,
    dir_problems,
    find_install,
    install_problems,
    official_env,
    parse_config,
    release_for,
    sealed_privkeys,
    shape_problems,
    version_of_image,
    version_tuple,
)
from .mapping import (  # noqa: F401
    CONNECTION_SECRETS,
    NOT_CARRIED,
    ROTATION_BREAKS,
    SECRET_HINTS,
    WEB_KEYS,
    Setting,
    certbot_cert_path,
    cluster_of,
    is_secret,
    map_settings,
    public_secrets,
    target_base_text,
    vector_database_name,
    vector_plan,
    written_values,
)
from .planning import (  # noqa: F401
    Plan,
    load_state,
    make_plan,
    not_carried_parts,
    plan_lines,
    save_state,
    ssl_dir,
    state_path,
)
