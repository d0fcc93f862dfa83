"""Backup sets on disk: names, listing, checksums and identity, retention."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..digests import file_sha256, parse_sums
from ..errors import DifyopsError
from .config import FORMAT, MANIFEST, PARTIAL_SUFFIX, SUMS, BackupError

_SET_NAME = re.compile(r"^(?P<stack>[a-z0-9][a-z0-9_.-]*)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?$")


def set_name(stack: str, when: dt.datetime, existing: Iterable[str] = ()) -> str:
    base = f"{stack}-{when.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    taken = set(existing)
    name, n = base, 1
    while name in taken or name + PARTIAL_SUFFIX in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def set_time(name: str) -> dt.datetime | None:
    match = _SET_NAME.match(name)
    if not match:
        return None
    return dt.datetime.strptime(match.group("stamp"), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)


@dataclass
class BackupSet:
    name: str
    path: Path
    complete: bool

    @property
    def created(self) -> dt.datetime | None:
        return set_time(self.name.removesuffix(PARTIAL_SUFFIX))

    def manifest(self) -> dict:
        return json.loads((self.path / MANIFEST).read_text())


def list_sets(folder: Path, stack: str | None = None) -> list[BackupSet]:
    """Sets in the backups folder, oldest first (partial ones too, marked)."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        if not entry.is_dir():
            continue
        complete = not entry.name.endswith(PARTIAL_SUFFIX)
        match = _SET_NAME.match(entry.name.removesuffix(PARTIAL_SUFFIX))
        if not match or (stack and match.group("stack") != stack):
            continue
        found.append(BackupSet(entry.name, entry, complete))
    return sorted(found, key=lambda s: (s.created or dt.datetime.min.replace(tzinfo=dt.timezone.utc), s.name))


def find_set(folder: Path, name: str | None, stack: str) -> BackupSet:
    """A complete set by name or path, or the newest of the stack when name is empty."""
    if name:
        candidate = Path(name)
        path = candidate if candidate.is_absolute() or "/" in name else folder / name
        path = path.resolve()
        if not path.is_dir():
            raise BackupError(f"no backup set {name} in {folder}: `invoke backup.list` shows them")
        if path.name.endswith(PARTIAL_SUFFIX):
            raise BackupError(f"{path.name} is an unfinished set (its backup did not complete): choose another")
        return BackupSet(path.name, path, True)
    sets = [s for s in list_sets(folder, stack) if s.complete]
    if not sets:
        raise BackupError(f"no backup set of stack {stack} in {folder}: run `invoke backup.create` first")
    return sets[-1]


def check_set(path: Path, expected_stack: str | None = None) -> tuple[dict | None, list[str]]:
    """Checksums, completeness and identity of a set, without decrypting: (manifest, problems).

    Refuses: a missing or unreadable manifest or SHA256SUMS, a file missing, truncated or changed
    (size or sha256 differ), a file nobody listed, a manifest of another format or another stack.
    """
    problems: list[str] = []
    sums_path, manifest_path = path / SUMS, path / MANIFEST
    if not sums_path.is_file():
        return None, [f"{path.name}: {SUMS} is missing: the set is incomplete or damaged"]
    try:
        sums = parse_sums(sums_path.read_text(errors="replace"))
    except DifyopsError as exc:
        return None, [f"{path.name}: {exc}: the set is damaged"]
    if MANIFEST not in sums:
        problems.append(f"{path.name}: {SUMS} does not list {MANIFEST}")
    if not manifest_path.is_file():
        return None, problems + [f"{path.name}: {MANIFEST} is missing"]
    if MANIFEST in sums and file_sha256(manifest_path) != sums[MANIFEST]:
        problems.append(f"{path.name}: {MANIFEST} does not match its checksum (changed after the backup)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None, problems + [f"{path.name}: {MANIFEST} is not valid JSON"]
    if manifest.get("format") != FORMAT:
        problems.append(f"{path.name}: format {manifest.get('format')!r} is not {FORMAT}")
    if expected_stack and manifest.get("stack") != expected_stack:
        problems.append(f"{path.name} is a backup of stack {manifest.get('stack')!r}, not {expected_stack!r}")
    parts = manifest.get("parts") or {}
    if not parts:
        problems.append(f"{path.name}: the manifest lists no parts")
    for part, info in parts.items():
        name = info.get("file", "")
        file = path / name
        if not name or not file.is_file():
            problems.append(f"{part}: {name or 'its file'} is missing")
            continue
        size = file.stat().st_size
        if size != info.get("bytes"):
            problems.append(f"{part}: {name} is {size} bytes, the manifest says {info.get('bytes')} (truncated?)")
            continue
        digest = file_sha256(file)
        if digest != info.get("sha256") or digest != sums.get(name):
            problems.append(f"{part}: {name} does not match its sha256 (changed or corrupted)")
    listed = {info.get("file") for info in parts.values()} | {MANIFEST}
    for name in sums:
        if name not in listed:
            problems.append(f"{path.name}: {SUMS} lists {name}, which the manifest does not")
    return manifest, problems


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    """One line per table whose count differs, is missing or is unexpected."""
    lines = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            lines.append(f"{table}: missing after restore (expected {expected[table]} rows)")
        elif table not in expected:
            lines.append(f"{table}: not in the manifest ({actual[table]} rows)")
        elif expected[table] != actual[table]:
            lines.append(f"{table}: {actual[table]} rows, the manifest says {expected[table]}")
    return lines


def _created(s: BackupSet) -> dt.datetime:
    assert s.created is not None  # only sets with a date are sorted by it
    return s.created


def retention(sets: list[BackupSet], keep_last: int, keep_daily: int, keep_weekly: int) -> set[str]:
    """Names of the sets a policy keeps: the newest keep_last, the newest of each of the last
    keep_daily days that have a set, and the newest of each of the last keep_weekly ISO weeks."""
    dated = sorted((s for s in sets if s.complete and s.created is not None), key=_created, reverse=True)
    keep = {s.name for s in dated[:keep_last]}
    for limit, key in ((keep_daily, lambda t: t.date()), (keep_weekly, lambda t: tuple(t.isocalendar())[:2])):
        seen: list = []
        for s in dated:
            bucket = key(_created(s))
            if bucket in seen:
                continue
            if len(seen) >= limit:
                break
            seen.append(bucket)
            keep.add(s.name)
    return keep


def remove_set(path: Path) -> None:
    shutil.rmtree(path)


def stamp_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
