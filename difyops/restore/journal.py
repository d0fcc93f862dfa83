"""The journal of each restore (var/<stack>/restores/<t>.json): every step, so a failure or --undo can put things back."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import backup as bk
from .. import releases
from ..config import Settings


def journal_dir(settings: Settings) -> Path:
    return releases.state_dir(settings) / "restores"


@dataclass
class Journal:
    """What a restore changed, in order, on disk after every step (no secrets in it)."""

    path: Path
    data: dict

    @classmethod
    def start(cls, settings: Settings, stamp: str, **fields: Any) -> "Journal":
        folder = journal_dir(settings)
        folder.mkdir(parents=True, exist_ok=True)
        journal = cls(folder / f"{stamp}.json", {"stamp": stamp, "stack": settings.stack, "state": "running",
                                                  "env_file": str(settings.env_file),
                                                  "wait_timeout": settings.wait_timeout,
                                                  "started": _now(), "steps": [], **fields})
        journal.save()
        return journal

    @classmethod
    def load(cls, path: Path) -> "Journal":
        return cls(path, json.loads(path.read_text()))

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def add(self, kind: str, **fields: Any) -> dict:
        step = {"kind": kind, **fields}
        self.data["steps"].append(step)
        self.save()
        return step

    def mark(self, step: dict, **fields: Any) -> None:
        step.update(fields)
        self.save()

    def steps(self, kind: str | None = None, pending: bool = False) -> list[dict]:
        return [s for s in self.data["steps"] if (kind is None or s["kind"] == kind)
                and not (pending and s.get("put_back"))]

    def set_state(self, state: str, **fields: Any) -> None:
        self.data.update(state=state, **fields)
        self.save()


def journals(settings: Settings) -> list[Journal]:
    folder = journal_dir(settings)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            out.append(Journal.load(path))
        except (OSError, ValueError):
            continue
    return out


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def last_journal(settings: Settings) -> Journal:
    found = journals(settings)
    if not found:
        raise bk.BackupError(f"no restore of stack {settings.stack} is recorded here ({journal_dir(settings)}): "
                             "nothing to undo")
    return found[-1]
