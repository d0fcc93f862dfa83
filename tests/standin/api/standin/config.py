# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Settings of the dify-api stand-in, read from Dify 1.13.3's own environment variable names.
import hashlib
import os
import socket
from urllib.parse import quote, quote_plus

API_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # /app/api
UPSTREAM_VERSION = "1.13.3"
# The release each image version stands in for: v1 and v2 are Dify 1.13.3 (UPSTREAM_VERSION), v3 is
# the default release, Dify 1.16.1 (difyops/release_sets/dify-1.16.1.yaml).
UPSTREAM_VERSIONS = {"v3": "1.16.1"}

# Dify's self-hosted queue list of each release (api/docker/entrypoint.sh; difyops/release_sets/
# dify-<release>.yaml `queues` says where each was read, tests/unit/test_contract.py keeps them equal).
# Workflow and chatflow runs are published on workflow_based_app_execution (Dify 1.13, PR 32060),
# summary indexes on dataset_summary (PR 32972).
QUEUES_BY_RELEASE = {
    "1.13.3": (
        "api_token,dataset,dataset_summary,priority_dataset,priority_pipeline,pipeline,mail,ops_trace,"
        "app_deletion,plugin,workflow_storage,conversation,workflow,schedule_poller,schedule_executor,"
        "triggered_workflow_dispatcher,trigger_refresh_executor,retention,workflow_based_app_execution"
    ),
    "1.16.1": (
        "api_token,dataset,dataset_summary,priority_dataset,priority_pipeline,pipeline,mail,ops_trace,"
        "app_deletion,plugin,workflow_storage,conversation,workflow,schedule_poller,schedule_executor,"
        "triggered_workflow_dispatcher,trigger_refresh_publisher,trigger_refresh_executor,retention,"
        "workflow_based_app_execution"
    ),
}
WORKFLOW_QUEUE = "workflow_based_app_execution"
SUMMARY_QUEUE = "dataset_summary"


def env(name, default=""):
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def env_int(name, default):
    try:
        return int(env(name, str(default)))
    except ValueError:
        return default


def image_version():
    """v1 or v2: baked into the image at build time (not an env var), so migrations follow the image."""
    try:
        with open(os.path.join(API_ROOT, "STANDIN_VERSION")) as fh:
            value = fh.read().strip()
    except OSError:
        value = os.environ.get("STANDIN_VERSION", "v1")  # running from a source checkout
    return value or "v1"


def image_version_number():
    v = image_version().lstrip("v")
    return int(v) if v.isdigit() else 1


def upstream_version():
    """The Dify release this image stands in for."""
    return UPSTREAM_VERSIONS.get(image_version(), UPSTREAM_VERSION)


def reported_version():
    # STANDIN_REPORTED_VERSION lets a test pretend to be another release; the default names the double.
    return env("STANDIN_REPORTED_VERSION", f"{upstream_version()}-standin.{image_version()}")


# The queues a worker consumes when none are named: its release's.
DEFAULT_QUEUES = QUEUES_BY_RELEASE.get(upstream_version(), QUEUES_BY_RELEASE["1.13.3"])


HOSTNAME = socket.gethostname()
MODE = env("MODE", "api")

SECRET_KEY = os.environ.get("SECRET_KEY", "")


def secret_fingerprint():
    if not SECRET_KEY:
        return None
    return hashlib.sha256(SECRET_KEY.encode()).hexdigest()[:12]


# ---- database (Dify: DB_TYPE, DB_USERNAME, DB_PASSWORD, DB_HOST, DB_PORT, DB_DATABASE)
DB_TYPE = env("DB_TYPE", "postgresql")
DB_USERNAME = env("DB_USERNAME", "postgres")
DB_PASSWORD = os.environ.get("DB_PASSWORD", "difyai123456")
DB_HOST = env("DB_HOST", "localhost")
DB_PORT = env_int("DB_PORT", 5432)
DB_DATABASE = env("DB_DATABASE", "dify")
DB_EXTRAS = env("DB_EXTRAS", "")
DB_CHARSET = env("DB_CHARSET", "")
# Dify's engine options (DatabaseConfig.SQLALCHEMY_ENGINE_OPTIONS), with Dify's defaults: a pool of
# SQLALCHEMY_POOL_SIZE plus SQLALCHEMY_MAX_OVERFLOW connections, recycled after
# SQLALCHEMY_POOL_RECYCLE seconds, pinged on checkout only with SQLALCHEMY_POOL_PRE_PING, no
# connect or statement timeout of its own (tests/standin/CONTRACT.md, "Database connections").
SQLALCHEMY_POOL_SIZE = env_int("SQLALCHEMY_POOL_SIZE", 30)
SQLALCHEMY_MAX_OVERFLOW = env_int("SQLALCHEMY_MAX_OVERFLOW", 10)
SQLALCHEMY_POOL_RECYCLE = env_int("SQLALCHEMY_POOL_RECYCLE", 3600)
SQLALCHEMY_POOL_PRE_PING = env_bool("SQLALCHEMY_POOL_PRE_PING", False)
SQLALCHEMY_POOL_USE_LIFO = env_bool("SQLALCHEMY_POOL_USE_LIFO", False)
SQLALCHEMY_POOL_TIMEOUT = env_int("SQLALCHEMY_POOL_TIMEOUT", 30)


def database_uri():
    """SQLALCHEMY_DATABASE_URI as Dify builds it: DB_EXTRAS (and DB_CHARSET) as the URL's query,
    which the psycopg2 dialect hands to libpq as connection parameters."""
    extras = (f"{DB_EXTRAS}&client_encoding={DB_CHARSET}" if DB_CHARSET else DB_EXTRAS).strip("&")
    return (f"postgresql://{quote_plus(DB_USERNAME)}:{quote_plus(DB_PASSWORD)}@{DB_HOST}:{DB_PORT}/"
            f"{DB_DATABASE}" + (f"?{extras}" if extras else ""))


def engine_options():
    """SQLALCHEMY_ENGINE_OPTIONS as Dify passes them to create_engine (timezone forced to UTC)."""
    return {
        "pool_size": SQLALCHEMY_POOL_SIZE,
        "max_overflow": SQLALCHEMY_MAX_OVERFLOW,
        "pool_recycle": SQLALCHEMY_POOL_RECYCLE,
        "pool_pre_ping": SQLALCHEMY_POOL_PRE_PING,
        "pool_use_lifo": SQLALCHEMY_POOL_USE_LIFO,
        "pool_reset_on_return": "rollback",
        "pool_timeout": SQLALCHEMY_POOL_TIMEOUT,
        "connect_args": {"options": "-c timezone=UTC", "application_name": f"dify-standin-{MODE}"},
    }


def db_params(database=None):
    return dict(
        host=DB_HOST,
        port=DB_PORT,
        user=DB_USERNAME,
        password=DB_PASSWORD,
        dbname=database or DB_DATABASE,
        connect_timeout=env_int("STANDIN_DB_CONNECT_TIMEOUT", 5),
        application_name=f"dify-standin-{MODE}",
    )


# ---- redis (Dify: REDIS_HOST, REDIS_PORT, REDIS_USERNAME, REDIS_PASSWORD, REDIS_DB, REDIS_USE_SSL,
# REDIS_USE_SENTINEL + REDIS_SENTINELS + REDIS_SENTINEL_SERVICE_NAME + REDIS_SENTINEL_PASSWORD
# + REDIS_SENTINEL_SOCKET_TIMEOUT,
# REDIS_USE_CLUSTERS + REDIS_CLUSTERS + REDIS_CLUSTERS_PASSWORD)
REDIS_HOST = env("REDIS_HOST", "localhost")
REDIS_PORT = env_int("REDIS_PORT", 6379)
REDIS_USERNAME = env("REDIS_USERNAME", "") or None
REDIS_PASSWORD = env("REDIS_PASSWORD", "") or None
REDIS_DB = env_int("REDIS_DB", 0)
REDIS_USE_SSL = env_bool("REDIS_USE_SSL", False)
REDIS_USE_SENTINEL = env_bool("REDIS_USE_SENTINEL", False)
REDIS_SENTINELS = env("REDIS_SENTINELS", "")
REDIS_SENTINEL_SERVICE_NAME = env("REDIS_SENTINEL_SERVICE_NAME", "")
REDIS_SENTINEL_USERNAME = env("REDIS_SENTINEL_USERNAME", "") or None
REDIS_SENTINEL_PASSWORD = env("REDIS_SENTINEL_PASSWORD", "") or None
REDIS_SENTINEL_SOCKET_TIMEOUT = float(env("REDIS_SENTINEL_SOCKET_TIMEOUT", "0.1"))
REDIS_USE_CLUSTERS = env_bool("REDIS_USE_CLUSTERS", False)
REDIS_CLUSTERS = env("REDIS_CLUSTERS", "")
REDIS_CLUSTERS_PASSWORD = env("REDIS_CLUSTERS_PASSWORD", "") or None


def _redis_default_url(db):
    auth = ""
    if REDIS_PASSWORD or REDIS_USERNAME:
        auth = f"{quote(REDIS_USERNAME or '', safe='')}:{quote(REDIS_PASSWORD or '', safe='')}@"
    scheme = "rediss" if REDIS_USE_SSL else "redis"
    return f"{scheme}://{auth}{REDIS_HOST}:{REDIS_PORT}/{db}"


# ---- celery (Dify: CELERY_BROKER_URL, CELERY_BACKEND, CELERY_USE_SENTINEL, CELERY_SENTINEL_MASTER_NAME,
# CELERY_SENTINEL_PASSWORD, CELERY_SENTINEL_SOCKET_TIMEOUT)
CELERY_BROKER_URL = env("CELERY_BROKER_URL", _redis_default_url(1))
CELERY_BACKEND = env("CELERY_BACKEND", "redis")
CELERY_USE_SENTINEL = env_bool("CELERY_USE_SENTINEL", False)
CELERY_SENTINEL_MASTER_NAME = env("CELERY_SENTINEL_MASTER_NAME", "")
CELERY_SENTINEL_PASSWORD = env("CELERY_SENTINEL_PASSWORD", "") or None
CELERY_SENTINEL_SOCKET_TIMEOUT = float(env("CELERY_SENTINEL_SOCKET_TIMEOUT", "0.1"))
DEFAULT_TASK_QUEUE = env("STANDIN_DEFAULT_TASK_QUEUE", "dataset")
BEAT_HEARTBEAT_INTERVAL = float(env("STANDIN_BEAT_INTERVAL", "10"))
BEAT_HEARTBEAT_QUEUE = env("STANDIN_BEAT_QUEUE", "schedule_poller")

# ---- workflow runs (Dify: WORKFLOW_MAX_EXECUTION_TIME, APP_MAX_EXECUTION_TIME, 1200 s each in
# docker/.env.example): a run that would last longer is stopped and fails, as Dify's engine does.
def workflow_max_seconds():
    return min(env_int("WORKFLOW_MAX_EXECUTION_TIME", 1200), env_int("APP_MAX_EXECUTION_TIME", 1200))


# ---- storage (Dify: STORAGE_TYPE=opendal + OPENDAL_SCHEME=fs + OPENDAL_FS_ROOT; or STORAGE_TYPE=local +
# STORAGE_LOCAL_PATH). Relative roots are relative to /app/api, as in Dify.
STORAGE_TYPE = env("STORAGE_TYPE", "opendal")
OPENDAL_SCHEME = env("OPENDAL_SCHEME", "fs")
UPLOAD_FILE_SIZE_LIMIT_MB = env_int("UPLOAD_FILE_SIZE_LIMIT", 15)


def storage_root():
    """(root, problem): problem is None when this storage type is one the stand-in can serve."""
    if STORAGE_TYPE == "opendal":
        if OPENDAL_SCHEME != "fs":
            return None, f"OPENDAL_SCHEME={OPENDAL_SCHEME} is not supported by the stand-in (only fs)"
        root = env("OPENDAL_FS_ROOT", "storage")
    elif STORAGE_TYPE == "local":
        root = env("STORAGE_LOCAL_PATH", "storage")
    else:
        return None, f"STORAGE_TYPE={STORAGE_TYPE} is not supported by the stand-in (opendal/fs or local)"
    if not os.path.isabs(root):
        root = os.path.join(API_ROOT, root)
    return root, None


# ---- sandbox and plugin daemon
CODE_EXECUTION_ENDPOINT = env("CODE_EXECUTION_ENDPOINT", "http://sandbox:8194")
CODE_EXECUTION_API_KEY = env("CODE_EXECUTION_API_KEY", "dify-sandbox")
PLUGIN_DAEMON_URL = env("PLUGIN_DAEMON_URL", "http://plugin_daemon:5002")
PLUGIN_DAEMON_KEY = env("PLUGIN_DAEMON_KEY", "")
INNER_API_KEY_FOR_PLUGIN = env("INNER_API_KEY_FOR_PLUGIN", "") or env("PLUGIN_DIFY_INNER_API_KEY", "")
SSRF_PROXY_HTTP_URL = env("SSRF_PROXY_HTTP_URL", "")
SSRF_PROXY_HTTPS_URL = env("SSRF_PROXY_HTTPS_URL", "")

# ---- logging
LOG_LEVEL = env("LOG_LEVEL", "INFO").upper()
LOG_OUTPUT_FORMAT = env("LOG_OUTPUT_FORMAT", "text").lower()
