"""What the bundle is for one Dify release: compose/<cluster>.yml with the release's overlays
(difyops/release_sets `overlays`), read statically, or rendered by the real Compose CLI with the
variables the task library passes for that release (release_sets.release_variables) and the
secrets it generates (release_sets secrets, each in its form)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from difyops import clusters, envfile, paths, release_sets
from difyops.config import load_settings

from conftest import load_compose

CLUSTERS = ("data", "support", "api", "worker", "web", "gateway")


def has_compose() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "compose", "version"], capture_output=True).returncode == 0


# A skip outside CI, a failure under CI=true (the `requires` mark, tests/conftest.py).
needs_compose = pytest.mark.requires(has_compose(), "the docker compose CLI (no daemon needed) is missing",
                                     "CI, where .ci/run installs it")


def _merge(base, overlay):
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for key, value in overlay.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return overlay


def files(release: str, cluster: str) -> list[Path]:
    return [paths.COMPOSE_DIR / f"{cluster}.yml", *release_sets.overlay_files(release, cluster)]


def view(release: str, cluster: str) -> dict:
    """The cluster's compose document for a release: its file merged with the release's overlays
    (services and their environment mappings merge; lists are replaced, as the overlays only add)."""
    doc: dict = {}
    for path in files(release, cluster):
        doc = _merge(doc, load_compose(path))
    return doc


def env_text(release: str, extra: dict[str, str] | None = None) -> str:
    """A generated .env for a release: env.init's output, DIFY_VERSION and the release's images and
    gateway upstreams written in (as the task library passes them), its secrets generated in their form."""
    rs = release_sets.load(release)
    secrets = {name: secret.generate() for name, secret in rs.secrets.items()
               if name not in envfile.SECRET_KEYS}
    overrides = {"DIFYOPS_STACK": "u", **release_sets.release_variables(rs), **secrets, **(extra or {})}
    return envfile.generate(paths.ENV_EXAMPLE.read_text(), overrides)


def render(release: str, cluster: str, tmp_path: Path, extra: dict[str, str] | None = None) -> dict:
    """`docker compose -f <cluster>.yml -f <overlays> --env-file .env config --format json`."""
    # One .env per release (and extra settings) in tmp_path: every cluster sees the same secrets.
    suffix = "-".join(f"{k}={v}" for k, v in sorted((extra or {}).items()))
    env_file = tmp_path / f".env-{release}{'-' + suffix if suffix else ''}"
    if not env_file.exists():
        env_file.write_text(env_text(release, extra))
    argv = ["docker", "compose"]
    for path in files(release, cluster):
        argv += ["-f", str(path)]
    argv += ["--env-file", str(env_file), "config", "--format", "json"]
    result = subprocess.run(argv, capture_output=True, text=True,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin",
                                 **clusters.compose_env(load_settings(None, env_file))})
    assert result.returncode == 0, f"Dify {release}, {cluster}: {result.stderr.strip()}"
    return json.loads(result.stdout)


def dify_services(release: str) -> dict[str, str]:
    """Every Dify service of a release -> its cluster."""
    return {name: service.cluster for name, service in release_sets.load(release).services.items()}
