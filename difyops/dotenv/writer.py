"""Write env files: set or append keys keeping everything else as written, atomically, mode 0600.

Values are written so that Compose reads back exactly the value given (reader.py's rules):
bare when that is safe, else in single quotes (literal), else in double quotes with `\\\\ \\" \\n
\\r \\t` escapes and `$$` for `$`. Every update is read back before it is written; a text that
would not read back as asked is never written.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .environments import env_file_values, project_environment
from .reader import DotEnv, DotenvError, Entry, parse, read

_BARE = re.compile(r"[A-Za-z0-9_./:@%+=,~^!?&*-]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMENT_AFTER_BARE = re.compile(r"[ \t]* #")
_DOUBLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "$": "$$", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                   "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"}


def quote(value: str, *, bare: bool = True) -> str:
    """The text to write after `KEY=` so that Compose reads exactly ``value`` (``bare=False``:
    always in quotes)."""
    _check_value("the value", value, "value")
    if bare and _BARE.fullmatch(value) and not value.startswith("#"):
        return value
    if "'" not in value and "\n" not in value and "\r" not in value and not value.endswith("\\"):
        return f"'{value}'"
    return '"' + "".join(_DOUBLE_ESCAPES.get(ch, ch) for ch in value) + '"'


def _check_value(key: str, value: str, source: str) -> None:
    if "\x00" in value:
        raise DotenvError(source, None, f"{key}: a value cannot hold a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DotenvError(source, None, f"{key}: the value is not valid Unicode text") from None


def update(dotenv: DotEnv, changes: Mapping[str, str], *, environ: Mapping[str, str] | None = None,
           comment: str | None = None) -> str:
    """``dotenv``'s text with ``changes`` applied: a key already there gets its new value where it
    is (its last statement, keeping `export`, the separator and a trailing comment); new keys
    are appended, after a ``comment`` line when given. ``environ`` is what the file was read
    with. Raises DotenvError for a key name or value that cannot be written."""
    for key, value in changes.items():
        if not _NAME.fullmatch(key):
            raise DotenvError(dotenv.source, None, f"{key!r} is not a variable name to write"
                              " (letters, digits and _, not starting with a digit)")
        _check_value(key, value, dotenv.source)
    text = dotenv.text
    last: dict[str, Entry] = {entry.key: entry for entry in dotenv.entries}
    edits = sorted((last[key] for key in changes if key in last), key=lambda e: e.value_start, reverse=True)
    for entry in edits:
        text = text[:entry.value_start] + _replacement(text, entry, changes[entry.key]) + text[entry.value_end:]
    new_keys = [key for key in changes if key not in last]
    if new_keys:
        newline = "\r\n" if "\r\n" in text else "\n"
        if text and not text.endswith("\n"):
            text += newline
        if comment:
            if text.strip():
                text += newline
            text += "".join(f"# {line}".rstrip() + newline for line in comment.splitlines())
        text += "".join(f"{key}={quote(changes[key])}{newline}" for key in new_keys)
    _verify(dotenv, text, changes, environ or {})
    return text


def _replacement(text: str, entry: Entry, value: str) -> str:
    if entry.raw is None:  # a bare KEY: its trailing blanks give way to =value
        return "=" + quote(value)
    line_end = text.find("\n", entry.value_end)
    after = text[entry.value_end:line_end if line_end != -1 else len(text)]
    # A bare value may only be followed by blanks, or blanks and ` #`: anything else (`# note` or
    # `OTHER=1` right after a closing quote, a comment after an empty value) would join it.
    bare = not after.strip() or (value != "" and _COMMENT_AFTER_BARE.match(after) is not None)
    return quote(value, bare=bare)


def _verify(before: DotEnv, text: str, changes: Mapping[str, str], environ: Mapping[str, str]) -> None:
    after = parse(text, environ, source=before.source)
    env_file_values(after, project_environment([after], environ))  # Compose reads it this way too
    wrong = [key for key, value in changes.items() if after.values.get(key) != value]
    kept_before = [(e.key, e.raw) for e in before.entries if e.key not in changes]
    kept_after = [(e.key, e.raw) for e in after.entries if e.key not in changes]
    if wrong or kept_before != kept_after:
        what = ", ".join(wrong) if wrong else "the other keys"
        raise DotenvError(before.source, None, f"refusing to write: {what} would not read back as given")


def backup(path: Path) -> Path:
    """Copy ``path`` beside itself as NAME.bak.YYYYmmdd-HHMMSS (mode 0600 from its creation,
    never overwriting an older copy); return the copy."""
    path = Path(path)
    data = path.read_bytes()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        target = path.with_name(f"{path.name}.bak.{stamp}" + (f".{n}" if n else ""))
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return target
    raise DotenvError(str(path), None, "a thousand backups this second already: not making another")


def write_private(path: Path, text: str | bytes, *, keep_backup: bool = False, bom: bool = False) -> Path | None:
    """Replace ``path`` with ``text`` atomically (a temporary file in the same folder, fsync,
    rename), readable by its owner only from the first byte. A symlink is written through. With
    ``keep_backup``, the current file is first copied aside; its path is returned."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    data = text.encode("utf-8") if isinstance(text, str) else text
    if bom:
        data = b"\xef\xbb\xbf" + data
    try:
        copy = backup(path) if keep_backup and path.exists() else None
        owner = path.stat() if path.exists() else None
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                if owner is not None and os.geteuid() == 0:
                    os.fchown(handle.fileno(), owner.st_uid, owner.st_gid)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)
    except OSError as exc:
        raise DotenvError(str(path), None, f"cannot be written: {exc.strerror or exc}") from None
    return copy


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_values(path: Path, changes: Mapping[str, str], *, environ: Mapping[str, str] | None = None,
               keep_backup: bool = True, comment: str | None = None) -> Path | None:
    """Set keys in the env file at ``path`` (created when missing); return the backup's path."""
    path = Path(path)
    if path.exists():
        dotenv = read(path, environ)
    else:
        dotenv = parse("", environ, source=str(path))
    text = update(dotenv, changes, environ=environ, comment=comment)
    return write_private(path, text, keep_backup=keep_backup, bom=dotenv.bom)
