"""The env file grammar, read as compose-go's dotenv parser reads it (see the package docstring).

One statement at a time, from wherever the previous one stopped:
- Whitespace (Go's unicode.IsSpace) and `#` comments up to the line break are skipped.
- `export` followed by whitespace is dropped.
- The name runs to the first `=`, `:` (YAML style) or line break, skipping spaces and tabs; it may
  hold letters, digits and `_ . - [ ]`. A name ended by a line break takes its value from the
  environment (for `--env-file`: the process environment) and is left unset when that has none.
- After the separator, spaces and tabs are skipped, then:
  - `'...'`: literal; a backslash before the closing quote escapes it, any other backslash stays.
  - `"..."`: the same scan, then the escapes `\\a \\b \\f \\n \\r \\t \\v \\\\ \\" \\$` and `\\0NNN`
    (octal), then `${...}` interpolation.
  - otherwise: to the end of the line, cut at the first ` #` (a space, then `#`), trailing
    whitespace trimmed, then `${...}` interpolation. No escapes.
  Quoted values may span lines; whatever follows the closing quote on its line is read as the
  next statement (a `# comment` is skipped, a stray word is a bare name).
- Interpolation looks a name up in the environment first, then among the keys already read.
- Later keys win over earlier ones.

Stricter than Compose, each with its own one-line refusal (Compose takes the file, but what it
makes of it is useless or invisible): a name with whitespace or a non-ASCII character inside, a
`=` with no name, a last line with no `=` and no line break (Compose 2.26 fails with "setenv:
invalid argument"), a NUL anywhere, text that is not UTF-8, and `${...}` nested deeper than
template.MAX_DEPTH.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DifyopsError
from . import template

# Go's unicode.IsSpace, which skips between statements and trims unquoted values.
GO_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                     "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# The parser's own isSpace: the same without the line breaks and the wider Unicode spaces.
INLINE_SPACE = frozenset("\t\v\f\r \x85\xa0")
_EXPORT = re.compile(r"export[\t\n\f\r ]+")  # Go's \s: no \v
_NAME_PUNCTUATION = frozenset("_.-[]")
_ESCAPE = re.compile(r'\\(?:[abcfnrtv$"\\]|0[0-9]{0,3})')
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"'}
_BOM = "\ufeff"


class DotenvError(DifyopsError):
    """A file Compose refuses (or this reader refuses, see the module docstring): one line
    naming the file, the line and what is wrong, never the value."""

    def __init__(self, source: str, line: int | None, reason: str):
        self.source = source
        self.line = line
        self.reason = reason
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Entry:
    """One `KEY=value` (or bare `KEY`) statement, as written and as Compose reads it."""

    key: str
    line: int  # where the statement starts
    last_line: int  # where its value ends (quoted values may span lines)
    value: str | None  # None: a bare KEY the environment did not have
    raw: str | None  # the value as written, quotes included; None for a bare KEY
    quote: str  # "'", '"' or ""
    start: int  # offsets into DotEnv.text: the statement (`export` included) ...
    value_start: int  # ... and the raw value (for a bare KEY: the end of its name)
    value_end: int
    unset: tuple[str, ...] = ()  # names it interpolated that were not set (Compose: "")


@dataclass(frozen=True)
class DotEnv:
    source: str
    text: str  # as decoded, without the byte order mark
    bom: bool
    entries: tuple[Entry, ...]
    values: dict[str, str] = field(default_factory=dict)  # every key's final value

    def entry(self, key: str) -> Entry | None:
        """The statement whose value the key ends up with."""
        for entry in reversed(self.entries):
            if entry.key == key and entry.value is not None:
                return entry
        return None

    def line(self, key: str) -> int | None:
        entry = self.entry(key)
        return entry.line if entry else None

    def raw(self, key: str) -> str | None:
        entry = self.entry(key)
        return entry.raw if entry else None

    def duplicates(self) -> dict[str, list[int]]:
        """Keys set on more than one line, with those lines (the last one wins)."""
        lines: dict[str, list[int]] = {}
        for entry in self.entries:
            lines.setdefault(entry.key, []).append(entry.line)
        return {key: found for key, found in lines.items() if len(found) > 1}


def decode(data: bytes | str, source: str) -> tuple[str, bool]:
    """Text and whether it had a UTF-8 byte order mark; refuses what is not UTF-8 or has NUL."""
    if isinstance(data, bytes):
        bom = data.startswith(b"\xef\xbb\xbf")
        body = data[3:] if bom else data
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = body[:exc.start].count(b"\n") + 1
            hint = " (UTF-16? save it as UTF-8)" if body[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
            raise DotenvError(source, line, f"not UTF-8 text: byte 0x{body[exc.start]:02x}{hint}") from None
    else:
        bom = data.startswith(_BOM)
        text = data[1:] if bom else data
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DotenvError(source, text.count("\n", 0, exc.start) + 1,
                              "not UTF-8 text: a lone surrogate") from None
    nul = text.find("\x00")
    if nul != -1:
        raise DotenvError(source, text.count("\n", 0, nul) + 1,
                          "a NUL character (no environment variable can hold one)")
    return text, bom


def parse(data: bytes | str, environ: Mapping[str, str] | None = None, *, source: str = ".env",
          earlier: Mapping[str, str] | None = None) -> DotEnv:
    """Read env file text as Compose does.

    ``environ`` is what names are looked up in before the file's own keys: for `--env-file`,
    the process environment (Compose's default is os.environ; pass it explicitly); for a
    service's `env_file:`, the project environment (see environments.py). ``earlier`` holds the
    keys of the `--env-file` files given before this one, looked up after ``environ``.
    """
    text, bom = decode(data, source)
    return _Parser(text, source, environ or {}, earlier or {}).run(bom)


def read(path: Path, environ: Mapping[str, str] | None = None, *,
         earlier: Mapping[str, str] | None = None) -> DotEnv:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DotenvError(str(path), None, "does not exist") from None
    except IsADirectoryError:
        raise DotenvError(str(path), None, "is a directory, not an env file") from None
    except OSError as exc:
        raise DotenvError(str(path), None, f"cannot be read: {exc.strerror}") from None
    return parse(data, environ, source=str(path), earlier=earlier)


class _Parser:
    def __init__(self, text: str, source: str, environ: Mapping[str, str], earlier: Mapping[str, str]):
        self.text = text
        self.source = source
        self.environ = environ
        self.earlier = earlier
        self.values: dict[str, str] = {}
        self.entries: list[Entry] = []
        self._breaks = [m.start() for m in re.finditer("\n", text)]
        self._line = 1  # of the statement being read, for refusals

    def line_of(self, offset: int) -> int:
        return bisect.bisect_left(self._breaks, offset) + 1

    def refuse(self, reason: str, line: int | None = None) -> DotenvError:
        return DotenvError(self.source, self._line if line is None else line, reason)

    def run(self, bom: bool) -> DotEnv:
        pos = 0
        while True:
            start = self._statement_start(pos)
            if start is None:
                break
            self._line = self.line_of(start)
            pos = self._statement(start)
        return DotEnv(self.source, self.text, bom, tuple(self.entries), self.values)

    def _statement_start(self, pos: int) -> int | None:
        text, n = self.text, len(self.text)
        while True:
            while pos < n and text[pos] in GO_SPACE:
                pos += 1
            if pos == n:
                return None
            if text[pos] != "#":
                return pos
            pos = text.find("\n", pos)
            if pos == -1:
                return None

    def _statement(self, start: int) -> int:
        text, n = self.text, len(self.text)
        name_start = start
        if _EXPORT.match(text, start):
            name_start = start + len("export")
            while name_start < n and text[name_start] in INLINE_SPACE:
                name_start += 1
        i = name_start
        while i < n and text[i] not in "=:\n":
            ch = text[i]
            if not (ch in INLINE_SPACE or ch in _NAME_PUNCTUATION or (ch.isascii() and ch.isalnum())):
                # Only the name's first word is shown: what follows a space may be a value.
                words = text[name_start:i].split()
                shown = f" in the variable name starting {words[0]!r}" if words else " where a variable name should start"
                if not ch.isascii():
                    raise self.refuse(f"the non-ASCII character U+{ord(ch):04X}{shown}"
                                      " (no ${...} can name such a variable: a typo?)")
                raise self.refuse(f"unexpected character {ch!r}{shown}")
            i += 1
        key = _rstrip(text[name_start:i])
        if i == n:
            if key == "export" and name_start == start:
                raise self.refuse("`export` with no variable after it")
            raise self.refuse("the last line has no `=`: give it `=value`, or end it with a line break"
                              " to take its value from the environment")
        if any(ch in INLINE_SPACE for ch in key):
            raise self.refuse(f"the variable name starting {key.split()[0]!r} has whitespace in it"
                              " (a missing `=`?)")
        if text[i] == "\n":
            if key:
                value, found = self._lookup_outer(key)
                self._add(key, start, name_start + len(key), i, value if found else None, None, "", ())
            return i + 1
        if not key:
            raise self.refuse(f"`{text[i]}` with no variable name before it")
        pos = i + 1
        while pos < n and text[pos] in INLINE_SPACE:
            pos += 1
        if pos < n and text[pos] in "'\"":
            return self._quoted(key, start, pos)
        end = text.find("\n", pos)
        if end == -1:
            end = n
        raw = text[pos:end]
        comment = raw.find(" #")
        if comment != -1:
            raw = raw[:comment]
        raw = _rstrip(raw)
        value, unset = self._interpolate(key, raw)
        self._add(key, start, pos, pos + len(raw), value, raw, "", unset)
        return end + 1 if end < n else n

    def _quoted(self, key: str, start: int, pos: int) -> int:
        text, n = self.text, len(self.text)
        quote = text[pos]
        chars: list[str] = []
        escaped = False
        i = pos + 1
        while i < n:
            ch = text[i]
            if ch != quote:
                if not escaped and ch == "\\":
                    escaped = True
                elif escaped:
                    escaped = False
                    chars.append("\\" + ch)
                else:
                    chars.append(ch)
                i += 1
                continue
            if escaped:
                escaped = False
                chars.append(ch)
                i += 1
                continue
            value = "".join(chars)
            unset: tuple[str, ...] = ()
            if quote == '"':
                value, unset = self._interpolate(key, _expand_escapes(value))
            self._add(key, start, pos, i + 1, value, text[pos:i + 1], quote, unset)
            return i + 1
        raise self.refuse(f"{key}: the value's opening {quote} is never closed")

    def _interpolate(self, key: str, raw: str) -> tuple[str, tuple[str, ...]]:
        try:
            result = template.substitute(raw, self._lookup)
        except template.InvalidTemplate as exc:
            raise self.refuse(f"{key}: {exc} (write $$ for a literal $, or single-quote the value)") from None
        except template.TemplateError as exc:
            raise self.refuse(f"{key}: {exc}") from None
        return result.value, tuple(result.unset)

    def _lookup_outer(self, name: str) -> tuple[str, bool]:
        if name in self.environ:
            return self.environ[name], True
        if name in self.earlier:
            if name in self.values and self.values[name] != self.earlier[name]:
                # compose-go before 2.8 reads the earlier file's value, later ones this file's.
                raise self.refuse(f"{name} is set in an earlier env file and again above this line, and Compose"
                                  " versions disagree on which one this line uses: set it in one place")
            return self.earlier[name], True
        return "", False

    def _lookup(self, name: str) -> tuple[str, bool]:
        value, found = self._lookup_outer(name)
        if found:
            return value, True
        if name in self.values:
            return self.values[name], True
        return "", False

    def _add(self, key: str, start: int, value_start: int, value_end: int, value: str | None,
             raw: str | None, quote: str, unset: tuple[str, ...]) -> None:
        if value is not None and "\x00" in value:
            raise self.refuse(f"{key}: the value has a NUL character (\\0000?), no environment variable can hold one")
        last_line = self.line_of(max(value_end - 1, value_start))
        self.entries.append(Entry(key, self._line, last_line, value, raw, quote, start, value_start,
                                  value_end, unset))
        if value is not None:
            self.values[key] = value


def _rstrip(s: str) -> str:
    end = len(s)
    while end and s[end - 1] in GO_SPACE:
        end -= 1
    return s[:end]


def _expand_escapes(value: str) -> str:
    def replace(match: re.Match[str]) -> str:
        escape = match.group(0)
        if escape == "\\$":
            return "$$"  # left to interpolation, which reads $$ as a literal $
        if escape.startswith("\\0"):
            # Go's \NNN octal wants exactly three digits up to 377; otherwise compose-go keeps
            # the escape, less its 0 (\012 stays \12, a lone \0 becomes \).
            digits = escape[2:]
            if len(digits) == 3 and all(d in "01234567" for d in digits) and int(digits, 8) <= 0o377:
                return chr(int(digits, 8))
            return "\\" + digits
        return _SIMPLE_ESCAPES[escape[1]]

    return _ESCAPE.sub(replace, value)

