"""The bundle's images: which ones, where they come from, and the docker commands that get them.

- The catalogue: every image variable of the compose files (docs/CONVENTIONS.md), its official
  default, and the local build that stands in for it when no registry is reachable.
- Resolution: the ref each variable has for a deployment, from its .env (empty = the default,
  as Compose's ``${VAR:-default}`` does).
- Registry mirrors: ``DIFYOPS_IMAGE_MIRROR=registry.example.cn/dockerhub`` pulls
  ``registry.example.cn/dockerhub/library/redis:6-alpine`` and tags it ``redis:6-alpine``, so the
  compose files never change.
- Command lines (argv lists) for ``docker pull``, ``docker tag``, ``docker image inspect``,
  ``docker build`` (with an optional extra CA bundle) and the Debian base image.

Everything here is pure, except :func:`stage_build_context` and :func:`install_base_files` (copy
files) and :func:`pull_one` (runs the commands it builds through an invoke context).
"""

from .build import (  # noqa: F401
    BuildPlan,
    base_image_problems,
    base_import_command,
    ca_bundle_path,
    debian_mirror,
    debootstrap_argv,
    install_base_files,
    plan_build,
    stage_build_context,
)
from .catalogue import (  # noqa: F401
    BASE_IMAGE,
    BASE_ROOTFS,
    BASE_SUITES,
    BOOKWORM_BASE_IMAGE,
    CA_BUNDLE_SETTING,
    CATALOGUE,
    DEBIAN_MIRROR_SETTING,
    DEBIAN_SUITE,
    DEFAULT_DEBIAN_MIRROR,
    DEFAULT_DIFY_VERSION,
    EXTRA_CA_FILE,
    LOCAL_PREFIXES,
    MIRROR_SETTING,
    ON_REQUEST,
    PROMETHEUS_FAMILY,
    ImageSpec,
    LocalBuild,
    ResolvedImage,
    dify_version,
    find,
    is_local_ref,
    local_env_lines,
    local_images,
    release_of,
    resolve,
    resolve_ref,
    select,
    standin_images,
)
from .references import (  # noqa: F401
    DOCKER_HUB,
    ImageRef,
    PullResult,
    inspect_argv,
    mirror_ref,
    normalize_mirror,
    normalize_ref,
    parse_ref,
    pull_argv,
    pull_commands,
    pull_one,
    tag_argv,
)
