"""Image references: parsing and normalizing refs, and pulling through a registry mirror."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from ..errors import DifyopsError
from ..report import last_line
from .catalogue import is_local_ref

DOCKER_HUB = "docker.io"


_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


@dataclass(frozen=True)
class ImageRef:
    registry: str  # docker.io, ghcr.io, registry.example.cn:5000, ...
    path: str  # library/redis, langgenius/dify-api, ...
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.path}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def suffix(self) -> str:
        """":tag", "@digest" or both, as written after the repository."""
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")


def parse_ref(ref: str) -> ImageRef:
    """Split an image reference as Docker does (docker.io and library/ implied; tag latest)."""
    text = (ref or "").strip()
    if not text or any(ch.isspace() for ch in text):
        raise DifyopsError(f"{ref!r} is not an image reference")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise DifyopsError(f"{ref!r}: {digest!r} is not a digest (algorithm:hex)")
    first, sep, rest = text.partition("/")
    # Docker's rule: the first component is a registry when it has a dot or a port, or is localhost.
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, remainder = first, rest
    else:
        registry, remainder = DOCKER_HUB, text
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not _TAG.match(tag):
            raise DifyopsError(f"{ref!r}: {tag!r} is not a valid tag")
    if not remainder or not all(_PATH_COMPONENT.match(part) for part in remainder.split("/")):
        raise DifyopsError(f"{ref!r}: repository names are lower case letters, digits and . _ - separators")
    if registry == DOCKER_HUB and "/" not in remainder:
        remainder = f"library/{remainder}"
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry, remainder, tag, digest)


def normalize_ref(ref: str) -> str:
    """The fully qualified form: redis -> docker.io/library/redis:latest."""
    return str(parse_ref(ref))


def normalize_mirror(mirror: str | None) -> str:
    """registry.example.cn/dockerhub from any of: a bare host/prefix, a URL, a trailing slash."""
    text = (mirror or "").strip()
    text = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", text)
    return text.strip("/")


def mirror_ref(ref: str, mirror: str | None) -> str:
    """Where to pull ref from through a Docker Hub mirror or prefix.

    Docker Hub images get the mirror in front of their full path (official images keep their
    ``library/`` part, which pull-through caches need): with mirror ``registry.example.cn/dockerhub``,
    ``redis:6-alpine`` -> ``registry.example.cn/dockerhub/library/redis:6-alpine``. Images of other
    registries, local builds, and an empty mirror leave ref unchanged.
    """
    prefix = normalize_mirror(mirror)
    if not prefix or is_local_ref(ref):
        return ref
    parsed = parse_ref(ref)
    if parsed.registry != DOCKER_HUB:
        return ref
    return f"{prefix}/{parsed.path}{parsed.suffix}"


def pull_argv(ref: str) -> list[str]:
    return ["docker", "pull", ref]


def tag_argv(source: str, target: str) -> list[str]:
    return ["docker", "tag", source, target]


def inspect_argv(ref: str) -> list[str]:
    """Succeeds (exit 0, prints the id) only when ref is present locally."""
    return ["docker", "image", "inspect", "--format", "{{.Id}}", ref]


def pull_commands(ref: str, mirror: str | None) -> list[list[str]]:
    """The commands that make ref present: a pull, and a tag when it came through a mirror."""
    source = mirror_ref(ref, mirror)
    if source == ref:
        return [pull_argv(ref)]
    return [pull_argv(source), tag_argv(source, ref)]


@dataclass(frozen=True)
class PullResult:
    ref: str
    source: str  # what was pulled (the mirrored ref, or ref itself)
    ok: bool
    error: str = ""

    def __bool__(self) -> bool:
        return self.ok


def pull_one(c: Any, ref: str, mirror: str | None = None) -> PullResult:
    """Pull ref (through mirror, then tagged as ref). Runs through c; never raises on failure."""
    source = mirror_ref(ref, mirror)
    for argv in pull_commands(ref, mirror):
        result = c.run(shlex.join(argv), hide=True, warn=True)
        if not result.ok:
            error = last_line(result.stderr) or last_line(result.stdout) or f"exit {result.exited}"
            return PullResult(ref, source, False, f"{argv[1]} failed: {error}")
    return PullResult(ref, source, True)
