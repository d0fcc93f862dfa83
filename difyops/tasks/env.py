"""env: write and check the deployment's .env."""

from __future__ import annotations

import sys

from invoke import Collection, task

from .. import envfile, paths
from ..config import load_settings
from ..errors import fail


@task(
    help={
        "force": "replace an existing .env (a timestamped backup is kept); regenerates every secret",
        "set": "KEY=VALUE to write instead of the example's value (repeatable)",
        "env_file": "where to write (default: the configured env file, ./.env)",
    },
    iterable=["set"],
)
def init(c, force=False, set=None, env_file=None):
    """Write .env from .env.example with every secret generated (mode 0600)."""
    settings = load_settings(c, env_file)
    target = settings.env_file
    overrides = {}
    for item in set or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"--set {item!r} is not KEY=VALUE")
        overrides[key.strip()] = value
    if target.exists() and not force:
        raise fail(f"{target} already exists and is kept as it is: use --force to replace it (a backup is kept)")
    text = envfile.generate(paths.ENV_EXAMPLE.read_text(), overrides)
    if target.exists():
        saved = envfile.backup(target)
        print(f"backed up the old file to {saved}")
    envfile.write_private(target, text)
    generated = envfile.generated_keys(envfile.parse(paths.ENV_EXAMPLE.read_text()))
    print(f"wrote {target} (mode 0600) with {len(generated)} generated secrets")


@task(help={"env_file": "file to check (default: the configured env file, ./.env)"})
def check(c, env_file=None):
    """Check .env: missing values, placeholders, secrets that disagree, body vs upload limits."""
    settings = load_settings(c, env_file)
    if not settings.env_file.exists():
        raise fail(f"{settings.env_file} does not exist: run `invoke env.init`")
    try:
        problems = envfile.check(envfile.read(settings.env_file))
    except envfile.EnvFileError as exc:
        raise fail(f"{settings.env_file}: {exc}")
    if problems:
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        raise fail(f"{len(problems)} problem(s) in {settings.env_file}")
    print(f"{settings.env_file}: ok")


ns = Collection("env")
ns.add_task(init)
ns.add_task(check, default=True)
