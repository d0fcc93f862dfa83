"""Named checks and stage timings, as every suite prints them."""

from __future__ import annotations

import os


def check(name: str, ok: bool, seen) -> None:
    """A named check: prints PASS or FAIL with what it saw, then asserts."""
    print(f"{'PASS' if ok else 'FAIL'} {name}: {seen}")
    assert ok, f"{name}: {seen}"


def record(stage: str, seconds: float) -> None:
    """A stage's time, printed (and appended to DIFYOPS_SMOKE_TIMINGS when the session sets it)."""
    print(f"TIMING {stage}: {seconds:.1f}s")
    path = os.environ.get("DIFYOPS_SMOKE_TIMINGS")
    if path:
        with open(path, "a") as handle:
            handle.write(f"{stage}\t{seconds:.1f}\n")
