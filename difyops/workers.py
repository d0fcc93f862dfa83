"""Worker groups: Celery workers split by queue, each group with its own concurrency.

``WORKER_GROUPS`` in .env names extra groups (empty: one group, the `worker` service on every
queue, as Dify ships it). Each extra group G reads ``WORKER_<G>_QUEUES`` (required),
``WORKER_<G>_AMOUNT``, ``WORKER_<G>_AUTO_SCALE``, ``WORKER_<G>_MAX_WORKERS``,
``WORKER_<G>_MIN_WORKERS`` and ``WORKER_<G>_REPLICAS``, and runs as its own compose project of
compose/worker.yml (``<stack>-worker_<g>``, the `worker` service only; beat stays in the main
group). The main group then consumes every queue no extra group took.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import Settings

# Dify 1.13.3's self-hosted queues (api/docker/entrypoint.sh).
DIFY_QUEUES = ("dataset", "priority_dataset", "priority_pipeline", "pipeline", "mail", "ops_trace",
               "app_deletion", "plugin", "workflow_storage", "conversation", "workflow",
               "schedule_poller", "schedule_executor", "triggered_workflow_dispatcher",
               "trigger_refresh_executor", "retention")
_NAME = re.compile(r"^[a-z][a-z0-9]{0,19}$")


class WorkerGroupError(ValueError):
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


def groups(settings: Settings) -> list[WorkerGroup]:
    """The main group first, then each extra group of WORKER_GROUPS, validated."""
    names = _split(settings.get("WORKER_GROUPS"))
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
    main_env: dict[str, str] = {}
    if extra:
        configured = _split(settings.get("CELERY_WORKER_QUEUES")) or list(DIFY_QUEUES)
        rest = [q for q in configured if q not in taken]
        if not rest:
            raise WorkerGroupError("the worker groups take every queue: the main worker would have none")
        main_env["CELERY_WORKER_QUEUES"] = ",".join(rest)
    return [WorkerGroup("worker", tuple(_split(main_env.get("CELERY_WORKER_QUEUES", ""))), main_env), *extra]


def extra_groups(settings: Settings) -> list[WorkerGroup]:
    return [g for g in groups(settings) if not g.is_main]
