"""One way to fail: a one-line message and a non-zero exit, never a traceback."""

from invoke.exceptions import Exit


class DifyopsError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do."""


def fail(message: str, code: int = 1) -> Exit:
    """Return an invoke Exit carrying a one-line message (raise it)."""
    return Exit(f"error: {message}", code=code)
