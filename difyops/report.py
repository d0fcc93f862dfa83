"""Progress from logic to the user, one way: a logic function that has something to say takes a
`say` (one line a call, rich markup allowed) that the task hands in; nothing else in difyops/
prints. `quiet` says nothing (the default, and what tests pass)."""

from __future__ import annotations

from typing import Callable

from rich.console import Console

Say = Callable[[str], None]


def quiet(line: str) -> None:
    """A reporter that says nothing."""


def to_stderr() -> Say:
    """Progress on stderr, one line each, never wrapped (so a problem stays one line)."""
    return Console(stderr=True, highlight=False, soft_wrap=True).print


def last_line(text: str | None, default: str = "") -> str:
    """The last non-empty line of a command's output (what it said last), stripped."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else default


def failure_line(result: object) -> str:
    """What a failed command said last (stderr, else stdout, else its exit code), at most 300
    characters: the tail of one `error:` line."""
    for text in (getattr(result, "stderr", ""), getattr(result, "stdout", "")):
        line = last_line(text)
        if line:
            return line[:300]
    return f"exit {getattr(result, 'exited', '?')}"
