"""Is a value strong enough to be a secret? A pure check; the reason never repeats the value.

envfile.new_secret() makes 64 hex characters; anything a person typed may be weaker. A secret is
refused when it is a public default from Dify's own example file or docs, shorter than
MIN_LENGTH characters, or one short piece repeated (`aaaa...`, `abcabc...`).
"""

from __future__ import annotations

MIN_LENGTH = 32
# Repeats of a piece up to this long are refused however long the whole is.
MAX_REPEATED_PIECE = 8

# Public strings from Dify's own example file and docs: never acceptable as secrets. (envfile
# keeps the same set until the wiring makes it read this one; a test holds the two equal.)
KNOWN_PUBLIC_DEFAULTS = frozenset({
    "difyai123456",
    "dify-sandbox",
    "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U",
    "lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi",
    "QaHbTe77CtuXmsfyhR7+vRjI/+XbV1AaFy691iy+kGDv2Jvy0/eAh8Y1",
    "WVF5YThaHlkYwhGUSmCRgsX3tD5ngdN8pkih",
})


def weakness(value: str) -> str | None:
    """Why ``value`` is not a secret, or None when it may be one."""
    if value in KNOWN_PUBLIC_DEFAULTS:
        return "is a public default from Dify's example file"
    if not value:
        return "is empty"
    if len(value) < MIN_LENGTH:
        return f"is {len(value)} characters long; a secret needs at least {MIN_LENGTH}"
    for size in range(1, MAX_REPEATED_PIECE + 1):
        if (value[:size] * (len(value) // size + 1))[:len(value)] == value:
            return "is one character repeated" if size == 1 else f"is a piece of {size} characters repeated"
    return None
