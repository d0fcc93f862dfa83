"""Offline image bundles: every image a deployment needs in one file, for servers with no registry.

A bundle is an uncompressed tar holding exactly three members:

- ``images.tar``: the output of one ``docker save`` of every image (shared layers stored once);
- ``manifest.json``: format, creation time, and for each image its ref, its image id and the
  .env variable it came from, plus the size and sha256 of ``images.tar``;
- ``SHA256SUMS``: ``sha256sum`` lines for ``images.tar`` and ``manifest.json`` (so
  ``tar -xf bundle.tar && sha256sum -c SHA256SUMS`` checks it by hand too).

:func:`verify` reads the whole bundle before anything is loaded: the member list, both sums, the
manifest's own record of ``images.tar``, and ``docker save``'s index inside ``images.tar``, which
must hold the same refs and image ids as the manifest. A tampered, truncated or foreign file is
refused with one line and nothing is loaded. :func:`load` streams ``images.tar`` into ``docker
load`` and then checks each ref has the id the manifest says.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable

from . import digests
from .digests import parse_sums, stream_sha256, sums_text
from .errors import DifyopsError

FORMAT = "difyops-image-bundle/1"
IMAGES = "images.tar"
MANIFEST = "manifest.json"
SUMS = digests.SUMS
MEMBERS = (SUMS, MANIFEST, IMAGES)
CHUNK = 1 << 20


@dataclass(frozen=True)
class BundleImage:
    ref: str
    id: str
    variable: str = ""


def _docker(context: str | None) -> list[str]:
    return ["docker", *(["--context", context] if context else [])]


def manifest_doc(images: Iterable[BundleImage], images_sha256: str, images_size: int) -> dict:
    return {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "images": [{"ref": i.ref, "id": i.id, "variable": i.variable} for i in images],
        "files": {IMAGES: {"sha256": images_sha256, "size": images_size}},
    }


def _member(archive: tarfile.TarFile, member: str | tarfile.TarInfo) -> IO[bytes]:
    """A regular member's contents (a DifyopsError for a member that holds none)."""
    stream = archive.extractfile(member)
    if stream is None:
        name = member if isinstance(member, str) else member.name
        raise DifyopsError(f"{name} in the archive is not a regular file")
    return stream


def docker_save_index(stream: IO[bytes]) -> dict[str, set[str]]:
    """image id -> refs, from the manifest.json that `docker save` writes into its tar."""
    try:
        with tarfile.open(fileobj=stream, mode="r|") as saved:
            for member in saved:
                if member.name == "manifest.json" and member.isfile():
                    entries = json.load(_member(saved, member))
                    break
            else:
                raise DifyopsError(f"{IMAGES} holds no docker save index (manifest.json)")
    except (tarfile.TarError, ValueError, OSError) as exc:
        raise DifyopsError(f"{IMAGES} is not a readable docker save archive ({exc})")
    index: dict[str, set[str]] = {}
    for entry in entries:
        config = str(entry.get("Config", ""))
        # Engine 25+: "blobs/sha256/<hex>"; older: "<hex>.json".
        hexid = config.rsplit("/", 1)[-1].removesuffix(".json")
        index.setdefault(f"sha256:{hexid}", set()).update(entry.get("RepoTags") or [])
    return index


def _normal(ref: str) -> str:
    from .images import normalize_ref

    try:
        return normalize_ref(ref)
    except DifyopsError:
        return ref


def verify(path: Path) -> dict:
    """Check a bundle end to end without loading anything; returns its manifest."""
    if not path.is_file():
        raise DifyopsError(f"{path} does not exist or is not a file")
    try:
        with tarfile.open(path, mode="r:") as bundle:
            members = bundle.getmembers()
            names = sorted(m.name for m in members)
            if names != sorted(MEMBERS) or not all(m.isfile() for m in members):
                raise DifyopsError(f"{path.name} is not a difyops image bundle (members: {', '.join(names) or 'none'})")
            sums = parse_sums(_member(bundle, SUMS).read().decode("utf-8", "replace"))
            if sorted(sums) != sorted((IMAGES, MANIFEST)):
                raise DifyopsError(f"{SUMS} must list {IMAGES} and {MANIFEST}, and only them")
            actual = {}
            for name in (MANIFEST, IMAGES):
                actual[name], size = stream_sha256(_member(bundle, name))
                if size != bundle.getmember(name).size:
                    raise DifyopsError(f"{name} is truncated ({size} of {bundle.getmember(name).size} bytes)")
                if actual[name] != sums[name]:
                    raise DifyopsError(f"{name} does not match its sha256 in {SUMS}: the bundle was altered or damaged")
            manifest = json.loads(_member(bundle, MANIFEST).read())
            if manifest.get("format") != FORMAT:
                raise DifyopsError(f"{MANIFEST} has format {manifest.get('format')!r}, not {FORMAT}")
            record = (manifest.get("files") or {}).get(IMAGES) or {}
            if record.get("sha256") != actual[IMAGES] or record.get("size") != bundle.getmember(IMAGES).size:
                raise DifyopsError(f"{MANIFEST} disagrees with {IMAGES} (sha256 or size)")
            index = docker_save_index(_member(bundle, IMAGES))
    except tarfile.ReadError as exc:
        raise DifyopsError(f"{path.name} is not a readable tar ({exc}): truncated or not a bundle")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DifyopsError(f"{path.name} could not be read to the end ({exc}): truncated or damaged")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DifyopsError(f"{MANIFEST} is not valid JSON ({exc})")
    images = manifest.get("images") or []
    if not images:
        raise DifyopsError(f"{MANIFEST} lists no images")
    for image in images:
        refs = {_normal(r) for r in index.get(image.get("id", ""), set())}
        if _normal(image.get("ref", "")) not in refs:
            raise DifyopsError(f"{MANIFEST} says {image.get('ref')} is {image.get('id')}, but {IMAGES} does not hold that")
    return manifest


def image_ids(refs: Iterable[str], context: str | None = None) -> dict[str, str]:
    """ref -> image id for the refs present; absent refs are left out."""
    out = {}
    for ref in refs:
        result = subprocess.run([*_docker(context), "image", "inspect", "--format", "{{.Id}}", ref],
                                capture_output=True, text=True)
        if result.returncode == 0:
            out[ref] = result.stdout.strip()
    return out


def save(images: list[BundleImage], output: Path, context: str | None = None) -> dict:
    """Write a bundle of images (already present) to output; returns its manifest."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    work = output.parent / f".{output.name}.{os.getpid()}.partial"
    work.mkdir(exist_ok=False)
    try:
        saved = work / IMAGES
        result = subprocess.run([*_docker(context), "save", "-o", str(saved), *[i.ref for i in images]],
                                capture_output=True, text=True)
        if result.returncode != 0:
            lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
            raise DifyopsError(f"docker save failed: {lines[-1] if lines else 'no output'}")
        with saved.open("rb") as stream:
            images_sha, images_size = stream_sha256(stream)
        manifest = manifest_doc(images, images_sha, images_size)
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        with (work / MANIFEST).open("rb") as stream:
            manifest_sha, _ = stream_sha256(stream)
        (work / SUMS).write_text(sums_text({IMAGES: images_sha, MANIFEST: manifest_sha}))
        partial = work / "bundle.tar"
        with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as bundle:
            for name in MEMBERS:
                bundle.add(work / name, arcname=name, recursive=False)
        partial.replace(output)  # appears whole or not at all
        return manifest
    finally:
        for child in work.glob("*"):
            child.unlink(missing_ok=True)
        work.rmdir()


def load(path: Path, context: str | None = None) -> list[BundleImage]:
    """Verify, then load a bundle; returns the images, each checked present with its id."""
    manifest = verify(path)
    with tarfile.open(path, mode="r:") as bundle:
        stream = _member(bundle, IMAGES)
        # stdout is not read while we write: `docker load -q` prints one short line per image.
        proc = subprocess.Popen([*_docker(context), "load", "-q"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stderr is not None  # both are pipes
        try:
            while True:
                block = stream.read(CHUNK)
                if not block:
                    break
                proc.stdin.write(block)
        except BrokenPipeError:
            pass
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        stderr = proc.stderr.read()
        proc.wait(timeout=3600)
    if proc.returncode != 0:
        lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise DifyopsError(f"docker load failed: {lines[-1] if lines else 'no output'}")
    images = [BundleImage(i["ref"], i["id"], i.get("variable", "")) for i in manifest["images"]]
    present = image_ids([i.ref for i in images], context)
    wrong = [i.ref for i in images if present.get(i.ref) != i.id]
    if wrong:
        raise DifyopsError(f"after docker load, {', '.join(wrong)} is missing or has another id")
    return images
