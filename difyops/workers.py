"""Worker groups: Celery workers split by queue, each group with its own concurrency.

``WORKER_GROUPS`` in .env names extra groups (empty: one group, the `worker` service on every
queue, as Dify ships it). Each extra group G reads ``WORKER_<G>_QUEUES`` (required),
``WORKER_<G>_AMOUNT``, ``WORKER_<G>_AUTO_SCALE``, ``WORKER_<G>_MAX_WORKERS``,
``WORKER_<G>_MIN_WORKERS`` and ``WORKER_<G>_REPLICAS``, and runs as its own compose project of
compose/worker.yml (``<stack>-worker_<g>``, the `worker` service only; beat stays in the main
group). The main group is always given its queues explicitly (CELERY_WORKER_QUEUES): every queue
of the release (difyops/release_sets, the deployment's DIFY_VERSION), or of the list .env sets,
that no extra group took.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import release_sets
from .config import Settings
from .errors import DifyopsError

_NAME = re.compile(r"^[a-z][a-z0-9]{0,19}$")


class WorkerGroupError(DifyopsError):
    pass


@dataclass(frozen=True)
class WorkerGroup:
    name: str  # "worker" for the main group, else "worker_<g>"
    queues: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # compose variables for this group

    @property
    def is_main(self) -> bool:
        return self.name == "worker"


def _split(text: str) -> list[str]:
    return [part for part in re.split(r"[,\s]+", text or "") if part]


def release_queues(settings: Settings) -> tuple[str, ...]:
    """The Celery queues of the deployment's Dify release (its DIFY_VERSION's release set)."""
    try:
        return release_sets.for_env(settings.env).queues
    except release_sets.ReleaseSetError as exc:
        raise WorkerGroupError(str(exc)) from None


def groups(settings: Settings) -> list[WorkerGroup]:
    """The main group first, then each extra group of WORKER_GROUPS, validated."""
    names = _split(settings.get("WORKER_GROUPS"))
    known = release_queues(settings)
    extra: list[WorkerGroup] = []
    taken: dict[str, str] = {}
    for raw in names:
        name = raw.lower()
        if not _NAME.match(name) or name == "worker":
            raise WorkerGroupError(f"WORKER_GROUPS: {raw!r} is not a group name (lower case letters and digits)")
        prefix = f"WORKER_{name.upper()}_"
        queues = _split(settings.get(prefix + "QUEUES"))
        if not queues:
            raise WorkerGroupError(f"{prefix}QUEUES is empty: list the Celery queues group {name} consumes")
        for queue in queues:
            if queue not in known:
                raise WorkerGroupError(f"{prefix}QUEUES: {queue!r} is not a queue of Dify "
                                       f"{release_sets.for_env(settings.env).release} ({', '.join(known)})")
            if queue in taken:
                raise WorkerGroupError(f"queue {queue} is in worker groups {taken[queue]} and {name}: give it to one")
            taken[queue] = name
        env = {"CELERY_WORKER_QUEUES": ",".join(queues)}
        for key in ("AMOUNT", "AUTO_SCALE", "MAX_WORKERS", "MIN_WORKERS"):
            value = settings.get(prefix + key)
            if value:
                env["CELERY_" + ("WORKER_AMOUNT" if key == "AMOUNT" else key)] = value
        # Always set: the main group's WORKER_REPLICAS must not leak into this one.
        env["WORKER_REPLICAS"] = settings.get(prefix + "REPLICAS", "1")
        extra.append(WorkerGroup(f"worker_{name}", tuple(queues), env))
    configured = _split(settings.get("CELERY_WORKER_QUEUES")) or list(known)
    rest = [q for q in configured if q not in taken]
    if not rest:
        raise WorkerGroupError("the worker groups take every queue: the main worker would have none")
    main = WorkerGroup("worker", tuple(rest), {"CELERY_WORKER_QUEUES": ",".join(rest)})
    return [main, *extra]


def extra_groups(settings: Settings) -> list[WorkerGroup]:
    return [g for g in groups(settings) if not g.is_main]


# ------------------------------------------------------------------ draining
# A worker that stops (upgrade, scale-down, prod.down) first stops taking tasks and lets the ones it
# runs finish: Celery's warm shutdown on SIGTERM. Since Dify 1.13 workflow and chatflow runs execute
# in workers and may each last up to the release's limits (WORKFLOW_MAX_EXECUTION_TIME,
# APP_MAX_EXECUTION_TIME: 1200 s by default), so a worker is given that long, and a margin, before
# it is killed.
DRAIN_MARGIN_SECONDS = 30


def drain_seconds(env: dict[str, str]) -> int:
    """How long a stopping worker may take: the longest run the release allows, and a margin.
    Raises ValueError for a limit that is not a whole number of seconds."""
    try:
        runs = release_sets.for_env(env).workflow_runs
    except release_sets.ReleaseSetError:
        runs = release_sets.default().workflow_runs
    if runs is None:
        raise ValueError("the release set records no workflow run limits (workflow_runs:)")
    longest = 0
    for variable in runs.limit_variables:
        raw = (env.get(variable) or "").strip() or str(runs.default_seconds)
        if not raw.isdigit() or int(raw) <= 0:
            raise ValueError(f"{variable}={raw!r} is not a whole number of seconds")
        longest = max(longest, int(raw))
    return longest + DRAIN_MARGIN_SECONDS


def drain_env(env: dict[str, str]) -> dict[str, str]:
    """WORKER_STOP_GRACE_PERIOD for compose (the worker's stop_grace_period) unless .env sets it."""
    if (env.get("WORKER_STOP_GRACE_PERIOD") or "").strip():
        return {}
    try:
        return {"WORKER_STOP_GRACE_PERIOD": f"{drain_seconds(env)}s"}
    except ValueError:
        return {}  # pre-flight reports it


def drain_problems(env: dict[str, str]) -> list[str]:
    try:
        drain_seconds(env)
    except ValueError as exc:
        return [f"{exc}: it caps a workflow run, and a stopping worker waits that long"]
    return []
