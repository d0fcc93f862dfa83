"""`docker compose ps --format json`, read in one place (prod.status, rollouts, dev, adopt).

Compose has printed it two ways: one JSON array (before 2.21), or one object per line.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import DifyopsError


def records(stdout: str | None) -> list[dict[str, Any]]:
    """One dict per container; DifyopsError (one line) for output that is not Compose's JSON."""
    text = (stdout or "").strip()
    if not text:
        return []
    try:
        if text.startswith("["):
            found = json.loads(text)
        else:
            found = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise DifyopsError(f"`docker compose ps --format json` printed something that is not JSON ({exc})") from None
    if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
        raise DifyopsError("`docker compose ps --format json` printed JSON that is not a list of containers")
    return found


def of_service(found: list[dict[str, Any]], service: str) -> list[dict[str, Any]]:
    return [r for r in found if r.get("Service") == service]


def running(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in found if r.get("State") == "running"]


def health(record: dict[str, Any]) -> str:
    """The container's health: healthy, unhealthy, starting, or none without a healthcheck."""
    return record.get("Health") or "none"


def ports(record: dict[str, Any]) -> list[str]:
    """What a container publishes, as `address:published->target`."""
    out = []
    for pub in record.get("Publishers") or []:
        if pub.get("PublishedPort"):
            out.append(f"{pub.get('URL') or '0.0.0.0'}:{pub['PublishedPort']}->{pub['TargetPort']}")
    return out


def published_ports(found: list[dict[str, Any]]) -> set[int]:
    return {int(p["PublishedPort"]) for r in found for p in (r.get("Publishers") or []) if p.get("PublishedPort")}


def by_service(found: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Each service's state, container name and health (the last container listed wins)."""
    states, names, healths = {}, {}, {}
    for record in found:
        service = record.get("Service")
        if service:
            states[service] = record.get("State", "")
            names[service] = record.get("Name", "")
            healths[service] = record.get("Health") or ""
    return states, names, healths
