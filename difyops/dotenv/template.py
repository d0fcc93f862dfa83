"""Compose's `${...}` interpolation of one string, as compose-go's template package does it.

The rules (compose-go v2.4.8 template/template.go, unchanged in substance up to v2.9.1):
- `$$` is a literal `$`; `$NAME` and `${NAME}` take NAME's value, or "" when it is unset (Compose
  warns); NAME is `[_A-Za-z][_A-Za-z0-9]*` (Go's case folding also lets U+017F and U+212A in).
- `${NAME:-default}` / `${NAME-default}`: default when unset or empty / when unset;
  `${NAME:+alt}` / `${NAME+alt}`: alt when set and non-empty / when set, else NAME's value;
  `${NAME:?msg}` / `${NAME?msg}`: refuse when unset or empty / when unset.
- Defaults, alternatives and messages are themselves interpolated, and *before* the variable is
  looked at (eagerly): `${SET:-${UNSET:?x}}` is refused even though SET is set. compose-go 2.10.1
  made this lazy; a file refused here is refused by the Compose versions before it.
- A `${...}` with an operator reaches to the last `}` of its line, then is cut at the first `}`
  that closes it (compose-go's brace count skips the character after each `{`, kept here); what
  follows the cut is interpolated on its own.
- Any other `${` is an invalid template, and so is a nesting this module will not follow
  (deeper than MAX_DEPTH): Compose would go on, this refuses.
- A `$` not followed by `$`, `{` or a name start stays a literal `$`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# Lookup: the value of a name and whether it is set at all ("" and unset differ).
Lookup = Callable[[str], tuple[str, bool]]

MAX_DEPTH = 64

# Go's (?i)[_a-z] also matches the two characters whose simple case folding reaches k and s.
_NAME_START = frozenset("_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\u017f\u212a")
_NAME_CHAR = _NAME_START | frozenset("0123456789")


class TemplateError(ValueError):
    """A `${...}` Compose refuses; the message says why, without the value around it."""


class InvalidTemplate(TemplateError):
    """A `$` starts something Compose cannot read: most often a literal `$` meant as such."""


class MissingRequired(TemplateError):
    """`${NAME:?msg}` or `${NAME?msg}` with NAME unset (or empty)."""


@dataclass
class Result:
    value: str
    unset: list[str] = field(default_factory=list)  # names looked up and not set, in order


def substitute(template: str, lookup: Lookup) -> Result:
    """Interpolate ``template`` as Compose does; raise TemplateError where Compose refuses."""
    result = Result("")
    result.value = _substitute(template, lookup, result.unset, 0)
    return result


def _substitute(template: str, lookup: Lookup, unset: list[str], depth: int) -> str:
    if depth > MAX_DEPTH:
        raise TemplateError(f"${{...}} nested deeper than {MAX_DEPTH} levels")
    out: list[str] = []
    pos = 0
    n = len(template)
    while True:
        start = template.find("$", pos)
        if start == -1:
            out.append(template[pos:])
            return "".join(out)
        out.append(template[pos:start])
        nxt = template[start + 1] if start + 1 < n else ""
        if nxt == "$":
            out.append("$")
            pos = start + 2
        elif nxt in _NAME_START and nxt:
            end = start + 2
            while end < n and template[end] in _NAME_CHAR:
                end += 1
            out.append(_lookup(template[start + 1:end], lookup, unset))
            pos = end
        elif nxt == "{":
            value, pos = _braced(template, start, lookup, unset, depth)
            out.append(value)
        else:
            out.append("$")
            pos = start + 1


def _braced(template: str, start: int, lookup: Lookup, unset: list[str], depth: int) -> tuple[str, int]:
    """The `${` at ``start``: its value and where scanning goes on."""
    n = len(template)
    name_end = start + 2
    if name_end >= n or template[name_end] not in _NAME_START:
        raise InvalidTemplate("`${` is not followed by a variable name")
    while name_end < n and template[name_end] in _NAME_CHAR:
        name_end += 1
    name = template[start + 2:name_end]
    following = template[name_end] if name_end < n else ""
    if following == "}":
        return _lookup(name, lookup, unset), name_end + 1
    operator = ""
    if following == ":" and name_end + 1 < n and template[name_end + 1] in "-+?":
        operator = template[name_end:name_end + 2]
    elif following and following in "-+?":
        operator = following
    line_end = template.find("\n", name_end)
    if line_end == -1:
        line_end = n
    # The regex's greedy `(.*)}`: the last `}` of the line, at or after the operator's end.
    last_brace = template.rfind("}", name_end + len(operator), line_end)
    if not operator or last_brace == -1:
        raise InvalidTemplate("a `${` that is neither `${NAME}` nor `${NAME` with :- - :+ + :? or ? and a closing `}`")
    close = _first_closing_brace(template, start, last_brace + 1)
    if close == -1:
        close = last_brace
    argument = template[name_end + len(operator):close]
    return _apply(name, operator, argument, lookup, unset, depth), close + 1


def _first_closing_brace(s: str, start: int, end: int) -> int:
    """compose-go's getFirstBraceClosingIndex on s[start:end], its quirk kept (the character
    after each `{` is skipped); an index into s, or -1."""
    depth = 0
    i = start
    while i < end:
        if s[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        if s[i] == "{":
            depth += 1
            i += 1
        i += 1
    return -1


def _apply(name: str, operator: str, argument: str, lookup: Lookup, unset: list[str], depth: int) -> str:
    # Eager, as compose-go before 2.10.1: the argument is interpolated whatever the variable holds.
    argument = _substitute(argument, lookup, unset, depth + 1)
    value, is_set = lookup(name)
    if operator in (":-", "-"):
        if not is_set or (operator == ":-" and value == ""):
            return argument
        return value
    if operator in (":+", "+"):
        if is_set and (operator == "+" or value != ""):
            return argument
        return value
    if not is_set or (operator == ":?" and value == ""):
        reason = f": {argument}" if argument else ""
        raise MissingRequired(f"required variable {name} is missing a value{reason}")
    return value


def _lookup(name: str, lookup: Lookup, unset: list[str]) -> str:
    value, is_set = lookup(name)
    if not is_set:
        unset.append(name)
    return value

