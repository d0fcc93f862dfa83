"""sha256 of files and streams, and the SHA256SUMS file of backup sets and image bundles, in
sha256sum's format (`sha256sum -c SHA256SUMS` checks either by hand). Read strictly: every line
is `<64 hex digits>  <name>` (or ` *<name>`, binary mode), no name twice."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import IO

from .errors import DifyopsError

SUMS = "SHA256SUMS"
_LINE = re.compile(r"([0-9a-f]{64}) [ *](\S(?:.*\S)?)")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class _Counting(io.RawIOBase):
    def __init__(self, stream: IO[bytes]):
        self.stream, self.size = stream, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # a memoryview from file_digest
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        self.size += len(data)
        return len(data)


def stream_sha256(stream: IO[bytes]) -> tuple[str, int]:
    """(hex digest, bytes read) of what is left in ``stream``."""
    counting = _Counting(stream)
    return hashlib.file_digest(counting, "sha256").hexdigest(), counting.size


def sums_text(sums: dict[str, str]) -> str:
    """sha256sum's format: '<hex>  <name>' per line, by name."""
    return "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))


def parse_sums(text: str) -> dict[str, str]:
    """name -> digest; DifyopsError naming the first line that is not sha256sum's."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.fullmatch(line)
        if not match:
            raise DifyopsError(f"{SUMS}, line {number}: not `<sha256>  <name>`: {line[:80]!r}")
        digest, name = match.groups()
        if name in out:
            raise DifyopsError(f"{SUMS}, line {number}: {name} is listed twice")
        out[name] = digest
    return out
