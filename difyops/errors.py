"""One way to fail: logic raises DifyopsError (or a subclass); the task wrapper
(difyops/tasks/base.py) turns it into one `error:` line and a non-zero exit, never a traceback."""

from __future__ import annotations

from collections.abc import Sequence


class DifyopsError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do."""


class Refused(DifyopsError):
    """Pre-flight's verdict: several problems, each its own line, before anything changed."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


def fail(message: str) -> DifyopsError:
    """A DifyopsError carrying a one-line message (raise it)."""
    return DifyopsError(message)


def refuse(problems: Sequence[str], consequence: str) -> None:
    """Pre-flight verdict: return when there is no problem; otherwise raise Refused.

    One problem becomes the error line itself; several are listed one per line first (by the task
    wrapper), so each says what is wrong and what to do.
    """
    if not problems:
        return
    if len(problems) == 1:
        raise Refused(f"{problems[0]} (pre-flight: {consequence})")
    raise Refused(f"pre-flight found {len(problems)} problems (listed above): {consequence}", problems)
