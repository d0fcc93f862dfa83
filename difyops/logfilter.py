"""Filter container log lines by level, for `prod.logs --level`.

Dify logs JSON when LOG_OUTPUT_FORMAT=json (a "severity" or "level" field) and text otherwise
("... ERROR ..."). A line with no level of its own (a traceback's next lines) follows the line
before it, so an error is shown whole.
"""

from __future__ import annotations

import io
import json
import re
from typing import TextIO

from .errors import DifyopsError

LEVELS = {"debug": 10, "info": 20, "notice": 25, "warn": 30, "warning": 30, "error": 40, "err": 40,
          "critical": 50, "crit": 50, "fatal": 50, "panic": 50}
_WORD = re.compile(r"\b(DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|CRITICAL|FATAL|PANIC)\b")


class UnknownLevel(DifyopsError):
    pass


def threshold(name: str) -> int:
    try:
        return LEVELS[name.strip().lower()]
    except KeyError:
        raise UnknownLevel(f"unknown level {name!r}: choose from debug, info, warning, error, critical")


def line_level(line: str) -> int | None:
    """The level a log line states, or None. Compose prefixes lines with `service-1  | `."""
    payload = line.split(" | ", 1)[1] if " | " in line else line
    payload = payload.strip()
    if payload.startswith("{"):
        try:
            record = json.loads(payload)
        except ValueError:
            record = None
        if isinstance(record, dict):
            for key in ("severity", "level", "levelname", "log.level"):
                value = record.get(key)
                if isinstance(value, str) and value.lower() in LEVELS:
                    return LEVELS[value.lower()]
    match = _WORD.search(payload)
    return LEVELS[match.group(1).lower()] if match else None


class LevelFilter(io.TextIOBase):
    """A text stream that passes on whole lines at or above a level."""

    def __init__(self, target: TextIO, minimum: int):
        self.target = target
        self.minimum = minimum
        self._partial = ""
        self._keeping = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._emit(line)
        return len(text)

    def _emit(self, line: str) -> None:
        level = line_level(line)
        if level is not None:
            self._keeping = level >= self.minimum
        if self._keeping:
            self.target.write(line + "\n")
            self.target.flush()

    def flush(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = ""
        self.target.flush()
