"""Deploy the clusters to Docker Swarm: the same compose files, one stack per cluster.

How a cluster becomes a Swarm stack (``prod.deploy --target swarm``):

1. ``docker compose -f compose/<cluster>.yml -f compose/swarm/<cluster>.yml config`` renders it
   locally (Compose interpolates .env, merges the Swarm overlay, resolves env_file and paths).
2. :func:`to_stack` turns that into a file ``docker stack deploy`` accepts, and takes out every
   secret on the way:
   - an environment variable whose value holds a secret of .env (DB_PASSWORD, REDIS_PASSWORD,
     SECRET_KEY, ... and values built from them such as CELERY_BROKER_URL) becomes a Docker secret
     mounted as ``/run/secrets/<VAR>``. The image reads it either natively (``<VAR>_FILE``, for the
     names listed as ``file_variables`` under the overlay's ``x-difyops-swarm``: PostgreSQL's
     POSTGRES_PASSWORD) or through ``compose/swarm/secrets-env.sh``, a shim put in front of the
     image's own entrypoint (``entrypoint`` under ``x-difyops-swarm``) that exports each secret file as its variable.
     Dify's api, worker and plugin daemon read only plain variables (no ``*_FILE`` support), so
     they get the shim; healthchecks of such services run through the shim too.
   - bind mounts become Docker configs (one per file, mode kept: executable or not), because a
     bind source exists only on the machine that renders, not on the node that runs the task.
   - keys Swarm does not use (restart, depends_on, ...) are dropped and listed; the overlay's
     ``deploy`` (placement, update_config start-first with rollback, restart_policy) replaces them.
   Anything secret left in a command, healthcheck or label afterwards is refused.
3. Overlay networks ``<stack>-backend`` / ``-ssrf`` (internal) and ``-app`` are created attachable;
   secrets and configs are created with content-hashed names (Swarm's are immutable, so a changed
   value is a new object and a rolling update); the stack is deployed with ``docker stack deploy
   -c -``, and the task waits, bounded, until every service has all replicas and no update running.

``--context NAME`` is passed to every docker command, so a manager can be driven from elsewhere
(``docker context create prod --docker host=ssh://deploy@manager``). Rendering always happens
here, where the compose files and .env are.
"""

from .stacks import (  # noqa: F401
    deploy,
    deploy_cluster,
)
from .jobs import (  # noqa: F401
    ensure_owners,
    migrate,
    one_shot,
)
from .nodes import (  # noqa: F401
    LABEL_PREFIX,
    ROLE_CONSTRAINT,
    ROLES,
    constraint,
    crowding,
    deploy_argv,
    docker,
    label_argv,
    network_create_argv,
    nodes_for,
    parse_roles,
    required_roles,
    swarm_problems,
    unsupported_problems,
)
from .render import (  # noqa: F401
    ensure_networks,
    ensure_objects,
    make_stack_file,
    render,
    render_argv,
    render_env,
    start_commands,
)
from .services import (  # noqa: F401
    ServiceState,
    converged,
    crowded,
    deploy_stack,
    parse_service_ls,
    remove,
    rolled_back,
    service_states,
    stack_name,
    wait_converged,
)
from .stackfile import (  # noqa: F401
    EXTRA_SECRET_KEYS,
    HINTS_KEY,
    NAME_MAX,
    QUIET_DROPS,
    SECRETS_DIR,
    SERVICE_KEYS,
    SHIM_FILE,
    SHIM_TARGET,
    STACK_FILE_VERSION,
    SWARM_DIR,
    StackFile,
    object_name,
    parse_start_command,
    publish_mode,
    secret_values,
    shimmed_images,
    to_stack,
    wrapped_command,
)
