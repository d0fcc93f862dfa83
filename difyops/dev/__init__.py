"""The development environment: Dify from source on the host, middleware in containers.

Pure parts (commands, env-file merging, the table) are plain functions; the tasks in
tasks/dev.py, middleware.py, api.py and web.py only parse arguments and call them.
App processes are tracked by pid files in <dev_dir>/run, so `dev.stop` ends what difyops
started and only that.
"""

from .checkout import (  # noqa: F401
    APPS,
    CORE_SERVICES,
    HOST,
    MIDDLEWARE_SERVICES,
    MIN_NODE,
    VECTOR_PROFILES,
    checkout_problem,
    find_source,
    node_problems,
    python_problems,
)
from .commands import (  # noqa: F401
    api_argv,
    bridge_gateway,
    celery_argv,
    celery_queues,
    migrate_argv,
    procfile,
    relay_argv,
    web_argv,
    worker_argv,
)
from .envfiles import (  # noqa: F401
    EnvMerge,
    api_env_values,
    app_env,
    ensure_middleware_env,
    merge_app_env,
    web_env_values,
)
from .middleware import (  # noqa: F401
    ServiceRow,
    compose_argv,
    middleware_down_problem,
    middleware_preflight,
    middleware_rows,
    port_keys,
    profiles,
    ps_records,
    published_ports,
    run_compose,
    start_middleware,
    stop_middleware,
)
from .processes import (  # noqa: F401
    AppRow,
    Tracked,
    alive,
    app_rows,
    health,
    pidfile,
    port_free_or_fail,
    record,
    run_app,
    running,
    stop_all,
    stop_tracked,
    tracked,
    wait_ready,
)
from .setup import (  # noqa: F401
    fail_on,
    migrate_db,
    ready_checkout,
)
