"""One way to fail: a one-line message and a non-zero exit, never a traceback."""

import sys

from invoke.exceptions import Exit


class DifyopsError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do."""


def fail(message: str, code: int = 1) -> Exit:
    """Return an invoke Exit carrying a one-line message (raise it)."""
    return Exit(f"error: {message}", code=code)


def refuse(problems: list[str], consequence: str) -> None:
    """Pre-flight verdict: return when there is no problem; otherwise raise one Exit.

    One problem becomes the error line itself; several are printed one per line first, so
    each says what is wrong and what to do.
    """
    if not problems:
        return
    if len(problems) == 1:
        raise fail(f"{problems[0]} (pre-flight: {consequence})")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    raise fail(f"pre-flight found {len(problems)} problems (listed above): {consequence}")
