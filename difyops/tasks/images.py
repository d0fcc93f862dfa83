"""images: build the local images, pull the official ones (through a mirror), list what is present."""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path

from invoke import Collection

from .base import task
from rich.console import Console
from rich.table import Table

from .. import images, probes
from ..config import load_settings
from ..errors import DifyopsError, fail

console = Console(highlight=False, soft_wrap=True)

# Lines of a failed command's output shown before the one-line error.
TAIL_LINES = 25


def _require_docker(c) -> None:
    """The Docker daemon must answer before anything is built, pulled or listed (any engine version)."""
    if shutil.which("docker") is None:
        raise fail("Docker is not installed: install Docker Engine 25 or newer (scripts/host-setup.sh does it on Debian)")
    if not c.run("docker info --format '{{.ServerVersion}}'", hide=True, warn=True).ok:
        raise fail("the Docker daemon is not running or not reachable: start it (systemctl start docker) and retry")


def _tail(result) -> str:
    text = "\n".join(part for part in (result.stdout, result.stderr) if part)
    return "\n".join(text.strip().splitlines()[-TAIL_LINES:])


def _ensure_base_image(c, settings, verbose: bool, image: str = images.BASE_IMAGE) -> None:
    """Make a base image (images.BASE_IMAGE, or another of images.BASE_SUITES) when it is missing:
    debootstrap of its suite, the files of images/base/rootfs added, docker import."""
    if not probes.missing_images(c, [image]):
        console.print(f"base image {image}: present")
        return
    problems = images.base_image_problems(os.geteuid(), shutil.which("debootstrap"), image)
    if problems:
        raise fail(problems[0])
    suite = images.BASE_SUITES[image]
    mirror = images.debian_mirror(settings.env)
    workdir = Path(tempfile.mkdtemp(prefix="difyops-rootfs-", dir="/var/tmp"))
    rootfs = workdir / "rootfs"
    try:
        console.print(f"base image {image}: debootstrap {suite} from {mirror} (about 30 s)")
        started = time.monotonic()
        result = c.run(shlex.join(images.debootstrap_argv(rootfs, mirror, suite)), hide=not verbose, warn=True)
        if not result.ok:
            console.print(_tail(result))
            raise fail(
                f"debootstrap of {suite} from {mirror} failed: check that the mirror is "
                f"reachable over http, or set {images.DEBIAN_MIRROR_SETTING} to a Debian mirror that is"
            )
        added = images.install_base_files(rootfs)
        console.print(f"base image {image}: added {', '.join(added)}")
        result = c.run(images.base_import_command(rootfs, image), hide=not verbose, warn=True)
        if not result.ok:
            console.print(_tail(result))
            raise fail(f"docker import of {image} failed: see the output above")
        console.print(f"base image {image}: imported in {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@task(
    name="build-local",
    iterable=["only"],
    help={
        "only": "build just this image (postgres, redis, nginx, squid, or a dify-* stand-in); repeatable",
        "standins": "also build the Dify stand-ins from tests/standin (TEST DOUBLES, not Dify)",
        "ca_bundle": "PEM file added to each image's trust store (default: DIFYOPS_BUILD_CA_BUNDLE in .env)",
        "no_cache": "rebuild every layer (docker build --no-cache)",
        "verbose": "show docker's build output as it runs",
        "env_file": "the .env to read settings from (default: the configured env file, ./.env)",
    },
)
def build_local(c, only=None, standins=False, ca_bundle=None, no_cache=False, verbose=False, env_file=None):
    """Build the local images from Debian, no registry needed; print their .env lines."""
    settings = load_settings(c, env_file)
    try:
        selected = images.select(only, standins=standins)
        ca = images.ca_bundle_path(ca_bundle if ca_bundle is not None else settings.get(images.CA_BUNDLE_SETTING))
    except DifyopsError as exc:
        raise fail(str(exc))
    _require_docker(c)
    _ensure_base_image(c, settings, verbose)
    for base in sorted({spec.local.base_image for spec in selected} - {images.BASE_IMAGE}):
        _ensure_base_image(c, settings, verbose, base)  # e.g. bookworm for --only postgres15
    if ca is not None:
        console.print(f"extra CA bundle: {ca} (added to each image's trust store)")

    total = len(selected)
    with tempfile.TemporaryDirectory(prefix="difyops-build-") as staging:
        for number, spec in enumerate(selected, 1):
            plan = images.plan_build(spec, ca_bundle=ca, staging_dir=Path(staging), no_cache=no_cache)
            note = "  (TEST DOUBLE, not Dify)" if spec.local.test_double else ""
            target = f" (target {spec.local.target})" if spec.local.target else ""
            console.print(f"[{number}/{total}] {spec.local.tag} from {spec.local.context}/{target}{note}")
            images.stage_build_context(plan)
            started = time.monotonic()
            result = c.run(shlex.join(plan.argv), hide=not verbose, warn=True)
            if not result.ok:
                if not verbose:
                    console.print(_tail(result))
                raise fail(
                    f"building {spec.local.tag} failed (exit {result.exited}): see the build output above; "
                    "rerun with --verbose for all of it"
                )
            console.print(f"[{number}/{total}] {spec.local.tag}: built in {time.monotonic() - started:.0f} s")

    built = [spec for spec in selected if not spec.local.test_double and spec not in images.ON_REQUEST]
    doubles = [spec for spec in selected if spec.local.test_double]
    if built:
        console.print("\nTo run the bundle on these images, put these lines in .env:")
        for line in images.local_env_lines(built):
            console.print(line)
    if doubles:
        console.print("\nTest doubles (offline tests only, never production):")
        for line in images.local_env_lines(doubles):
            console.print(line)


@task(
    iterable=["only"],
    help={
        "mirror": "registry mirror or prefix for Docker Hub images, e.g. registry.example.cn/dockerhub "
                  "(default: DIFYOPS_IMAGE_MIRROR in .env; '' for none)",
        "only": "pull just this image (variable such as REDIS_IMAGE, or short name such as redis); repeatable",
        "env_file": "the .env to resolve image refs from (default: the configured env file, ./.env)",
    },
)
def pull(c, mirror=None, only=None, env_file=None):
    """Pull the images .env names, through a registry mirror if one is set."""
    settings = load_settings(c, env_file)
    mirror = settings.get(images.MIRROR_SETTING) if mirror is None else mirror
    try:
        wanted = {images.find(name).variable for item in (only or []) for name in item.split(",") if name}
        resolved = [r for r in images.resolve(settings.env) if not wanted or r.variable in wanted]
        for item in resolved:  # a bad ref in .env fails here, before anything is pulled
            images.parse_ref(item.ref)
    except DifyopsError as exc:
        raise fail(str(exc))
    _require_docker(c)
    if images.normalize_mirror(mirror):
        console.print(f"through mirror {images.normalize_mirror(mirror)}")

    failed: list[str] = []
    for item in resolved:
        if item.is_local_build:
            if probes.missing_images(c, [item.ref]):
                failed.append(item.ref)
                console.print(f"failed  {item.ref}: a local build that is missing: run `invoke images.build-local`")
            else:
                console.print(f"local   {item.ref}: built here, present")
            continue
        outcome = images.pull_one(c, item.ref, mirror)
        via = f" (from {outcome.source})" if outcome.source != item.ref else ""
        if outcome.ok:
            console.print(f"pulled  {item.ref}{via}")
        else:
            failed.append(item.ref)
            console.print(f"failed  {item.ref}{via}: {outcome.error}")
    if failed:
        if images.normalize_mirror(mirror):
            hint = f"check that {images.normalize_mirror(mirror)} is reachable and mirrors these images"
        else:
            hint = f"set {images.MIRROR_SETTING} (or --mirror) where Docker Hub is blocked, or build locally"
        raise fail(f"{len(failed)} of {len(resolved)} images could not be pulled ({', '.join(failed)}): {hint}")
    console.print(f"all {len(resolved)} images present")


@task(
    name="list",
    help={"env_file": "the .env to resolve image refs from (default: the configured env file, ./.env)"},
)
def list_(c, env_file=None):
    """Show each image variable, its image, and whether that image is here."""
    settings = load_settings(c, env_file)
    resolved = images.resolve(settings.env)
    _require_docker(c)
    missing = set(probes.missing_images(c, [item.ref for item in resolved]))
    release = images.release_of(settings.env)
    set_name = f"dify-{release.release}" if release else f"none for DIFY_VERSION={images.dify_version(settings.env)}"
    console.print(f"release set: {set_name}")
    table = Table(title=f"images of stack {settings.stack} ({settings.env_file})")
    table.add_column("variable")
    table.add_column("image", overflow="fold")  # a ref is never cut short
    table.add_column("from")
    table.add_column("present", justify="center")
    for item in resolved:
        present = "[red]no[/red]" if item.ref in missing else "[green]yes[/green]"
        table.add_row(item.variable, item.ref, ".env" if item.from_env else "default", present)
    console.print(table)
    if missing:
        console.print(
            f"{len(missing)} missing: `invoke images.pull` fetches official ones, "
            "`invoke images.build-local` builds the local ones"
        )


@task(
    iterable=["only"],
    help={
        "output": "the bundle file to write (default: difyops-images-<stack>-<UTC time>.tar here)",
        "only": "bundle just this image (short name such as redis, a variable such as REDIS_IMAGE, or any "
                "image ref); repeatable (default: every image .env resolves to)",
        "env_file": "the .env to resolve image refs from (default: the configured env file, ./.env)",
        "context": "Docker context to save from (default: the current one)",
    },
)
def save(c, output=None, only=None, env_file=None, context=None):
    """Write one offline bundle: docker save of the images, a manifest, sha256 sums."""
    from .. import bundle

    settings = load_settings(c, env_file)
    names = [part for item in (only or []) for part in item.replace(",", " ").split() if part]
    try:
        by_var = {r.variable: r for r in images.resolve(settings.env)}
        wanted = []
        for name in names or list(by_var):
            try:
                spec = images.find(name)
                wanted.append((by_var[spec.variable].ref, spec.variable))
            except DifyopsError:
                images.parse_ref(name)  # not in the catalogue: must at least be a ref
                wanted.append((name, ""))
    except DifyopsError as exc:
        raise fail(str(exc))
    _require_docker(c)
    refs = list(dict.fromkeys(ref for ref, _ in wanted))
    ids = bundle.image_ids(refs, context)
    missing = [ref for ref in refs if ref not in ids]
    if missing:
        raise fail(f"not present here, nothing written: {', '.join(missing)} (`invoke images.pull` or "
                   "`images.build-local` first, or choose with --only)")
    variables = {}
    for ref, variable in wanted:
        variables.setdefault(ref, variable)
    path = Path(output or f"difyops-images-{settings.stack}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.tar")
    if path.exists():
        raise fail(f"{path} exists: choose another --output (a bundle is never overwritten)")
    started = time.monotonic()
    try:
        bundle.save([bundle.BundleImage(ref, ids[ref], variables[ref]) for ref in refs], path, context)
    except DifyopsError as exc:
        raise fail(str(exc))
    size = path.stat().st_size
    console.print(f"wrote {path} ({size / 1e6:.1f} MB, {len(refs)} images) in {time.monotonic() - started:.1f}s")


@task(
    positional=["path"],
    help={
        "path": "the bundle file written by `invoke images.save`",
        "verify_only": "check sums and manifest, load nothing",
        "context": "Docker context to load into (default: the current one), e.g. a server without a registry",
    },
)
def load(c, path, verify_only=False, context=None):
    """Verify an offline bundle (sums, manifest) and load its images; a bad bundle loads nothing."""
    from .. import bundle

    started = time.monotonic()
    try:
        if verify_only:
            manifest = bundle.verify(Path(path))
            console.print(f"{path}: intact, {len(manifest['images'])} images")
            return
        _require_docker(c)
        loaded = bundle.load(Path(path), context)
    except DifyopsError as exc:
        raise fail(f"{path}: {exc}; nothing was loaded" if "docker load" not in str(exc) else f"{path}: {exc}")
    for image in loaded:
        console.print(f"loaded  {image.ref} ({image.id[:19]})")
    console.print(f"{len(loaded)} images loaded and checked in {time.monotonic() - started:.1f}s")


ns = Collection("images")
ns.add_task(build_local)
ns.add_task(pull)
ns.add_task(list_)
ns.add_task(save)
ns.add_task(load)
