"""The one place a task's failure becomes what the user sees: `task` is invoke's, with the body
wrapped so that a DifyopsError (logic's errors, difyops/errors.py) ends as `problem:` lines for
a pre-flight's several problems, then one `error:` line and exit status 1, never a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import invoke
from invoke.exceptions import Exit

from ..errors import DifyopsError, Refused


def as_exit(exc: DifyopsError) -> Exit:
    """The Exit for a DifyopsError (a Refused one's problems printed first, one line each)."""
    if isinstance(exc, Refused):
        for problem in exc.problems:
            print(f"problem: {problem}", file=sys.stderr)
    return Exit(f"error: {exc}", code=1)


def _wrapped(body: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return body(*args, **kwargs)
        except DifyopsError as exc:
            raise as_exit(exc) from None

    return run


def task(*args: Any, **kwargs: Any) -> Any:
    """invoke.task (bare or with options), the body wrapped as the module says."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return invoke.task(_wrapped(args[0]))
    return lambda body: invoke.task(*args, **kwargs)(_wrapped(body))
