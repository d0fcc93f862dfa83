"""Per-run names for what the tests create on the Docker engine, recorded for the session's end.

Every stack, network, node or container a suite creates is named from `unique_name(prefix)` (or
starts with such a name and a `-` or `_`). Under nox, DIFYOPS_TEST_NAMES names a file the names are
appended to: the end-of-session check (leftovers.py) reads it to tell this session's resources from
anything else on the engine (other sessions, other people's containers).
"""

from __future__ import annotations

import os
import secrets


def unique_name(prefix: str) -> str:
    """`prefix` and six random hex digits, recorded as this session's own."""
    name = f"{prefix}{secrets.token_hex(3)}"
    path = os.environ.get("DIFYOPS_TEST_NAMES")
    if path:
        with open(path, "a") as handle:
            handle.write(name + "\n")
    return name


def owns(names, candidate: str) -> bool:
    """Whether `candidate` (a container, network, volume or project name) is one of `names` or
    starts with one of them and a separator."""
    return any(candidate == n or candidate.startswith((f"{n}-", f"{n}_")) for n in names)
