"""`invoke prod.status --json` read into rows, for every suite that looks at a stack's services.

Compose: one object per service, {"cluster", "service", "state", "health", "replicas": {"running",
"total"}, "ports": [...]}. Swarm (`--target swarm`): {"cluster", "service", "replicas": {"running",
"desired"}, "update"}.

Where this checkout's prod.status has no --json yet (before issue 13's change), the table it prints
is read into the same rows, with a line saying so; under CI=true that is a failure, not a fallback.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .require import in_ci

UNKNOWN_FLAG = "No idea what '--json' is"


def prod_status(run: Callable, *args: str) -> list[dict]:
    """The rows of `invoke prod.status --json ARGS`, run through `run` (a suite's invoke: it takes the
    task's arguments and `check=False`, and returns a CompletedProcess)."""
    result = run("prod.status", "--json", *args, check=False)
    if result.returncode == 0:
        try:
            rows = json.loads(result.stdout)
        except ValueError:
            raise AssertionError(f"prod.status --json printed no JSON: {result.stdout[-500:]!r}") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise AssertionError(f"prod.status --json is not an array of objects: {result.stdout[-500:]!r}")
        return rows
    if UNKNOWN_FLAG not in result.stdout + result.stderr:
        raise AssertionError(f"prod.status --json {' '.join(args)} failed ({result.returncode}): "
                             f"{(result.stdout + result.stderr).strip()[-800:]}")
    message = "prod.status has no --json in this checkout (issue 13 adds it)"
    if in_ci():
        raise AssertionError(f"{message}: the tests read its JSON, never its table")
    print(f"NOTE {message}: reading its table instead")
    return _table_rows(run("prod.status", *args).stdout, swarm="swarm" in args)


def _table_rows(text: str, swarm: bool) -> list[dict]:
    """The rich table prod.status prints, read column by column into the JSON's shape."""
    rows = []
    for line in text.splitlines():
        if "│" not in line:
            continue
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if swarm and len(cells) == 4 and cells[1] != "-":
            running, desired = cells[2].split("/")
            rows.append({"cluster": cells[0], "service": cells[1], "update": cells[3],
                         "replicas": {"running": int(running), "desired": int(desired)}})
        elif not swarm and len(cells) == 6:
            running, total = cells[4].split("/")
            rows.append({"cluster": cells[0], "service": cells[1], "state": cells[2], "health": cells[3],
                         "replicas": {"running": int(running), "total": int(total)},
                         "ports": cells[5].split()})
    return rows


def swarm_status(run: Callable, context: str) -> list[dict]:
    return prod_status(run, "--target", "swarm", "--context", context)


def healths(row: dict) -> list[str]:
    value = row.get("health")
    return sorted(value if isinstance(value, list) else str(value).split(","))


def healthy(row: dict, replicas: int | None = None) -> bool:
    """Running, every replica healthy (none unhealthy or starting), all of them up (and `replicas`)."""
    count = row.get("replicas") or {}
    running = count.get("running", -1)
    return (row.get("state") == "running" and healths(row) == ["healthy"] and running >= 1
            and running == count.get("total") and (replicas is None or running == replicas))


def row_of(rows: list[dict], service: str, cluster: str | None = None) -> dict:
    """The one row of `service` (in `cluster`); an empty dict when there is none."""
    found = [r for r in rows if r.get("service") == service and cluster in (None, r.get("cluster"))]
    assert len(found) <= 1, f"{len(found)} rows for {service}: {found}"
    return found[0] if found else {}
