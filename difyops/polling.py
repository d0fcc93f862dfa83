"""Waiting with a deadline: the one polling loop of the task library."""

from __future__ import annotations

import math
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def until(check: Callable[[], T], timeout: float, interval: float = 1.0, *,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> T | None:
    """Call ``check`` until it returns something truthy and return that, or None once ``timeout``
    seconds have passed. ``check`` runs at least once and at most timeout/interval + 1 times, so
    the loop is bounded in count as well as in time even when ``check`` itself is slow or fast."""
    deadline = clock() + timeout
    for _attempt in range(max(1, math.ceil(timeout / interval) + 1) if interval > 0 else 1):
        got = check()
        if got:
            return got
        left = deadline - clock()
        if left <= 0:
            return None
        sleep(min(interval, left))
    return None
