"""Offline bundles with real Docker: save, refuse a tampered or truncated copy, load, check.

Uses a test-only tag of the local base image (the smallest image here), so nothing a deployment
runs is removed; the tag is removed at the end. Needs no stack (runs in `nox -s smoke` and
`nox -s swarm`).
"""

from __future__ import annotations

import os
import subprocess
import tarfile

import pytest
from testkit import check, require, unique_name
from testkit import invoke as run_invoke

BASE = "difyops/debian:trixie-2"


def invoke(*args: str) -> subprocess.CompletedProcess:
    return run_invoke(*args, check=False)


def image_id(ref: str) -> str | None:
    result = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


@pytest.fixture
def test_tag():
    require(image_id(BASE) is not None, f"{BASE} is absent (`invoke images.build-local` makes it)",
            "nox -s smoke and nox -s swarm, which build it first")
    tag = f"difyops-test/{unique_name('bundle')}:t"
    subprocess.run(["docker", "tag", BASE, tag], check=True)
    yield tag
    subprocess.run(["docker", "rmi", tag], capture_output=True)


def test_bundle_round_trip_refuses_damage(tmp_path, test_tag):
    bundle = tmp_path / "bundle.tar"
    saved = invoke("images.save", "--only", test_tag, "--output", str(bundle))
    check("images.save writes a bundle", saved.returncode == 0 and bundle.is_file(),
          (saved.stdout + saved.stderr).strip()[-300:])
    with tarfile.open(bundle) as tar:
        names = sorted(tar.getnames())
    check("bundle holds images.tar, manifest.json, SHA256SUMS", names == ["SHA256SUMS", "images.tar", "manifest.json"],
          names)
    print(f"bundle size: {bundle.stat().st_size / 1e6:.1f} MB for {test_tag}")
    again = invoke("images.save", "--only", test_tag, "--output", str(bundle))
    check("an existing bundle is never overwritten", again.returncode != 0 and "exists" in again.stderr,
          again.stderr.strip())

    expected_id = image_id(test_tag)
    subprocess.run(["docker", "rmi", test_tag], check=True, capture_output=True)
    check("the test tag is gone before loading", image_id(test_tag) is None, test_tag)

    tampered = tmp_path / "tampered.tar"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, inside images.tar
    tampered.write_bytes(bytes(data))
    refused = invoke("images.load", str(tampered))
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    check("a tampered bundle is refused with one line", refused.returncode != 0 and len(lines) == 1
          and "sha256" in lines[0], lines)
    check("nothing was loaded from the tampered bundle", image_id(test_tag) is None, test_tag)

    truncated = tmp_path / "truncated.tar"
    with bundle.open("rb") as src, truncated.open("wb") as dst:
        dst.write(src.read(os.path.getsize(bundle) * 2 // 3))
    refused = invoke("images.load", str(truncated))
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    check("a truncated bundle is refused with one line", refused.returncode != 0 and len(lines) == 1, lines)
    check("nothing was loaded from the truncated bundle", image_id(test_tag) is None, test_tag)

    loaded = invoke("images.load", str(bundle))
    check("images.load loads the intact bundle", loaded.returncode == 0, (loaded.stdout + loaded.stderr).strip()[-300:])
    check("the image is back with the same id", image_id(test_tag) == expected_id, image_id(test_tag))
