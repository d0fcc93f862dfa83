"""Local builds from Debian: the debootstrapped base, build plans, the extra CA bundle."""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .. import digests, paths
from ..errors import DifyopsError
from .catalogue import (
    BASE_IMAGE,
    BASE_ROOTFS,
    CA_BUNDLE_SETTING,
    DEBIAN_MIRROR_SETTING,
    DEBIAN_SUITE,
    DEFAULT_DEBIAN_MIRROR,
    EXTRA_CA_FILE,
    ImageSpec,
)


def ca_bundle_path(value: str | Path | None, root: Path = paths.ROOT) -> Path | None:
    """The extra CA bundle for builds (DIFYOPS_BUILD_CA_BUNDLE), checked; None when not set.

    A relative path is taken from the repository root, as the .env file's other paths are.
    """
    if value is None or not str(value).strip():
        return None
    path = Path(str(value).strip()).expanduser()
    if not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise DifyopsError(
            f"{CA_BUNDLE_SETTING}={value} is not a file: point it at a PEM bundle "
            "(for example /etc/ssl/certs/ca-certificates.crt) or leave it empty"
        )
    head = path.read_bytes()[:1 << 20]
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise DifyopsError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----): use a PEM bundle")
    return path


@dataclass(frozen=True)
class BuildPlan:
    """One `docker build`: its argv, and the copy to make first when a CA bundle is added."""

    spec: ImageSpec
    argv: list[str]
    context: Path  # what docker build reads
    source: Path  # the repository folder
    ca_bundle: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def staged(self) -> bool:
        return self.context != self.source


def plan_build(
    spec: ImageSpec,
    *,
    root: Path = paths.ROOT,
    ca_bundle: Path | None = None,
    staging_dir: Path | None = None,
    base_image: str | None = None,
    no_cache: bool = False,
    ca_digest: str | None = None,
) -> BuildPlan:
    """The `docker build` of spec's local image.

    Without a CA bundle the repository folder is the build context and nothing else changes. With
    one, the context is a copy of that folder in staging_dir with the bundle added as extra-ca.crt
    (see :func:`stage_build_context`), so the repository itself is never written to; the image gets
    a label with the bundle's sha256 (ca_digest, computed from the file when not given).
    """
    build = spec.local
    source = build.context_dir(root)
    labels: dict[str, str] = {}
    context = source
    if ca_bundle is not None:
        if staging_dir is None:
            raise ValueError("a CA bundle needs a staging_dir for the copied build context")
        context = staging_dir / spec.name
        labels["io.difyops.extra-ca.sha256"] = ca_digest or digests.file_sha256(ca_bundle)
    argv = ["docker", "build", "--tag", build.tag, "--file", str(context / "Dockerfile")]
    if build.target:
        argv += ["--target", build.target]
    if not build.test_double:
        argv += ["--build-arg", f"BASE_IMAGE={base_image or build.base_image}"]
    for key, value in build.build_args:
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    if no_cache:
        argv.append("--no-cache")
    argv.append(str(context))
    return BuildPlan(spec, argv, context, source, ca_bundle, labels)


def stage_build_context(plan: BuildPlan) -> None:
    """Make the copied build context a plan with a CA bundle needs (no-op otherwise)."""
    if not plan.staged or plan.ca_bundle is None:
        return
    if plan.context.exists():
        shutil.rmtree(plan.context)
    shutil.copytree(plan.source, plan.context, symlinks=True)
    shutil.copyfile(plan.ca_bundle, plan.context / EXTRA_CA_FILE)


def debian_mirror(env: Mapping[str, str]) -> str:
    return (env.get(DEBIAN_MIRROR_SETTING) or "").strip() or DEFAULT_DEBIAN_MIRROR


def debootstrap_argv(rootfs: Path, mirror: str = DEFAULT_DEBIAN_MIRROR, suite: str = DEBIAN_SUITE) -> list[str]:
    return ["debootstrap", "--variant=minbase", suite, str(rootfs), mirror]


def install_base_files(rootfs: Path, overlay: Path = BASE_ROOTFS) -> list[str]:
    """Copy every file under overlay into rootfs at the same path: mode 0755 when the file is
    executable in the repository, else 0644 (whatever the checkout's umask). Returns the paths."""
    installed = []
    for source in sorted(p for p in overlay.rglob("*") if p.is_file()):
        relative = source.relative_to(overlay)
        target = rootfs / relative
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o755 if source.stat().st_mode & 0o111 else 0o644)
        installed.append("/" + relative.as_posix())
    return installed


def base_import_command(rootfs: Path, image: str = BASE_IMAGE) -> str:
    """tar of the root file system piped into `docker import` (a shell pipeline, for c.run)."""
    return shlex.join(["tar", "-C", str(rootfs), "-c", "."]) + " | " + shlex.join(["docker", "import", "-", image])


def base_image_problems(euid: int, debootstrap_path: str | None, image: str = BASE_IMAGE) -> list[str]:
    """Why a Debian base image cannot be made on this host (empty = it can)."""
    problems = []
    if debootstrap_path is None:
        problems.append(
            f"{image} is missing and debootstrap is not installed: "
            "run scripts/host-setup.sh (or apt-get install debootstrap)"
        )
    if euid != 0:
        problems.append(f"{image} is missing and debootstrap needs root: run this task as root once")
    return problems
