"""A skip for a missing tool or engine that says where the check does run, and fails under CI=true.

CI (`bash .ci/run`, CI=true) installs and starts everything the tests need: there a missing tool or
engine is a broken setup, and a suite that skips itself green would hide it.
"""

from __future__ import annotations

import os


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require(condition: object, reason: str, runs_in: str) -> None:
    """Go on when `condition` holds; otherwise skip, naming the condition (`reason`) and where the
    check does run (`runs_in`), or fail under CI=true."""
    if condition:
        return
    import pytest

    message = f"{reason}; this check runs in {runs_in}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing tool or engine fails the run instead of skipping)",
                    pytrace=False)
    pytest.skip(message)
