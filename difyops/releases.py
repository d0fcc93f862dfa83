"""Releases of the app clusters (api, web, worker): which compose project of each cluster is live,
the replica counts chosen with `prod.scale`, and the deploy history.

An upgrade starts the new release as a second compose project of the same cluster
(``<stack>-api-green`` beside ``<stack>-api``), so both serve under the same DNS name on the app
network while traffic moves; then the old project is drained and removed. Which project is live is
kept here, in ``var/<stack>/state.json`` beside the .env file (git-ignored), and nowhere else:
``clusters.project`` asks this module. The history is ``var/<stack>/history.jsonl``, one JSON object
per deploy, upgrade, rollback or scale.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from . import dotenv
from .config import Settings

# Clusters replaced by an upgrade. The others (data, support, gateway) are not versioned with Dify.
APP_CLUSTERS = ("api", "web", "worker")
COLORS = ("blue", "green")
# prod.scale KEY -> the compose variable giving that service's replica count.
REPLICA_VARIABLES = {"api": "API_REPLICAS", "web": "WEB_REPLICAS", "worker": "WORKER_REPLICAS"}
# .env keys an upgrade may change: the Dify release and the two images that follow it.
VERSION_KEYS = ("DIFY_VERSION", "DIFY_API_IMAGE", "DIFY_WEB_IMAGE")


def state_dir(settings: Settings) -> Path:
    return settings.env_file.parent / "var" / settings.stack


def state_path(settings: Settings) -> Path:
    return state_dir(settings) / "state.json"


def history_path(settings: Settings) -> Path:
    return state_dir(settings) / "history.jsonl"


def load_state(settings: Settings) -> dict[str, Any]:
    path = state_path(settings)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(settings: Settings, state: dict[str, Any]) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def base_project(settings: Settings, cluster: str) -> str:
    return f"{settings.stack}-{cluster}"


def active_project(settings: Settings, cluster: str) -> str:
    """The compose project serving a cluster now: the first deploy's, or the last upgrade's."""
    project = (load_state(settings).get("projects") or {}).get(cluster)
    return project or base_project(settings, cluster)


def every_project(settings: Settings, cluster: str) -> list[str]:
    """Every project name a cluster may run under (for a teardown that leaves nothing)."""
    names = [base_project(settings, cluster)]
    if cluster in APP_CLUSTERS:
        names += [f"{base_project(settings, cluster)}-{color}" for color in COLORS]
    return names


def next_project(settings: Settings, cluster: str) -> str:
    """The project name a new release of a cluster starts under: never the live one."""
    current = active_project(settings, cluster)
    color = "blue" if current.endswith("-green") else "green"
    return f"{base_project(settings, cluster)}-{color}"


def set_active(settings: Settings, projects: dict[str, str]) -> None:
    state = load_state(settings)
    state.setdefault("projects", {}).update(projects)
    save_state(settings, state)


def replicas(settings: Settings) -> dict[str, int]:
    return {k: int(v) for k, v in (load_state(settings).get("replicas") or {}).items()}


def set_replicas(settings: Settings, counts: dict[str, int]) -> None:
    state = load_state(settings)
    state.setdefault("replicas", {}).update(counts)
    save_state(settings, state)


def replica_env(settings: Settings) -> dict[str, str]:
    """Compose variables for the replica counts chosen with prod.scale (they win over .env)."""
    # Worker groups other than the main one get theirs in units.unit_env.
    return {REPLICA_VARIABLES[key]: str(count) for key, count in replicas(settings).items()
            if key in REPLICA_VARIABLES}


# ------------------------------------------------------------------ history
def record(settings: Settings, action: str, result: str, **fields: Any) -> dict[str, Any]:
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stack": settings.stack,
             "action": action, "result": result, **fields}
    path = history_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry


def history(settings: Settings) -> list[dict[str, Any]]:
    path = history_path(settings)
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a torn line from a crash is skipped, not fatal
    return entries


def previous_release(settings: Settings) -> dict[str, str] | None:
    """The images the last successful upgrade or rollback replaced (where a rollback goes)."""
    for entry in reversed(history(settings)):
        if entry.get("action") in ("upgrade", "rollback") and entry.get("result") == "ok":
            return entry.get("from") or None
    return None


# ------------------------------------------------------------------ target images
def version_updates(env: dict[str, str], version: str | None, api_image: str | None,
                    web_image: str | None) -> dict[str, str]:
    """The .env values a release sets. --version moves DIFY_VERSION, and the tag of an image
    that .env pins explicitly (a mirror, say); explicit image refs win."""
    updates: dict[str, str] = {}
    if version:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", version):
            raise ValueError(f"--version {version!r} is not an image tag (e.g. 1.13.3)")
        updates["DIFY_VERSION"] = version
        for key in ("DIFY_API_IMAGE", "DIFY_WEB_IMAGE"):
            pinned = (env.get(key) or "").strip()
            if pinned:
                repo = pinned.split("@", 1)[0]
                if repo.rfind(":") > repo.rfind("/"):
                    repo = repo[: repo.rfind(":")]
                updates[key] = f"{repo}:{version}"
    for key, ref in (("DIFY_API_IMAGE", api_image), ("DIFY_WEB_IMAGE", web_image)):
        if ref:
            if any(ch.isspace() for ch in ref) or ref.startswith("-"):
                raise ValueError(f"{ref!r} is not an image reference")
            updates[key] = ref
    return updates


def update_env_file(path: Path, updates: dict[str, str]) -> None:
    """Set keys in .env where they are (appending missing ones), keeping the rest and mode 0600."""
    if updates:
        dotenv.set_values(path, updates, keep_backup=False)
