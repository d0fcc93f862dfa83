"""env: write and check the deployment's .env."""

from __future__ import annotations

from pathlib import Path

from invoke import Collection

from .base import task

from .. import dotenv, envfile, paths, release_sets
from ..config import env_path, load_settings
from ..errors import DifyopsError, Refused, fail


@task(
    help={
        "force": "replace an existing .env (a timestamped backup is kept); regenerates every secret",
        "set": "KEY=VALUE to write instead of the example's value (repeatable)",
        "env_file": "where to write (default: the configured env file, ./.env)",
        "url": "the public origin users reach Dify at, e.g. https://dify.example.com: fills Dify's public "
               "URLs (console, API, web apps, files, triggers, plugin endpoints, WebSocket) from it",
    },
    iterable=["set"],
)
def init(c, force=False, set=None, env_file=None, url=None):
    """Write .env from .env.example with every secret generated (mode 0600)."""
    target = env_path(c, env_file)  # read no further: --force replaces a file Compose refuses too
    overrides = {}
    if url is not None:
        try:
            overrides.update(envfile.public_url_values(url))
        except ValueError as exc:
            raise fail(f"--url: {exc}")
    overrides.update(envfile.assignments(set))
    if target.exists() and not force:
        raise fail(f"{target} already exists and is kept as it is: use --force to replace it (a backup is kept)")
    text = envfile.generate(paths.ENV_EXAMPLE.read_text(), overrides)
    example = dotenv.parse(paths.ENV_EXAMPLE.read_text(), {})
    written = envfile.values_of(text)
    try:  # a release without a set is refused before anything is written
        release = release_sets.for_env(written)
    except release_sets.ReleaseSetError as exc:
        raise fail(f"DIFY_VERSION: {exc}; nothing was written")
    saved = dotenv.write_private(target, text, keep_backup=True)
    if saved:
        print(f"backed up the old file to {saved}")
    generated = [k for k, v in written.items() if v and v != example.values.get(k) and k not in overrides
                 and (k in envfile.generated_keys(example) or k in release.secrets)]
    print(f"wrote {target} (mode 0600) with {len(generated)} generated secrets (release set: dify-{release.release})")


@task(help={"env_file": "file to check (default: the configured env file, ./.env)"})
def check(c, env_file=None):
    """Check .env: missing values, placeholders, secrets that disagree, body vs upload limits, public URLs."""
    path = env_path(c, env_file)
    if not path.exists():
        raise fail(f"{path} does not exist: run `invoke env.init`")
    settings = load_settings(c, path)
    for note in envfile.renamed_notes(settings.env):
        print(f"note: {note}")
    problems = envfile.check(settings.env) + settings.disagreements
    if problems:
        raise Refused(f"{len(problems)} problem(s) in {settings.env_file}", problems)
    print(f"{settings.env_file}: ok")


@task(help={"env_file": "file to move (default: the configured env file, ./.env)"})
def migrate(c, env_file=None):
    """Move .env to its release's names and secrets: renamed variables carried to their new names,
    the secrets the release needs generated in their forms (a timestamped backup is kept)."""
    path = env_path(c, env_file)
    if not path.exists():
        raise fail(f"{path} does not exist: run `invoke env.init`")
    settings = load_settings(c, path)
    try:
        release = release_sets.for_env(settings.env)
    except release_sets.ReleaseSetError as exc:
        raise fail(f"DIFY_VERSION: {exc}; nothing was changed")
    text, done = envfile.migrated(path.read_text(), settings.env)
    if not done:
        print(f"{path}: already uses Dify {release.release}'s names and has its secrets; nothing to change")
        return
    saved = dotenv.write_private(path, text, keep_backup=True)
    print(f"{path}: {', '.join(done)} (Dify {release.release})" + (f"; the old file is {saved}" if saved else ""))


@task(
    name="import",
    help={"from_": "a Dify docker/ folder whose settings to take: its envs/**/*.env (Dify's split layout, read in "
                   "Dify's order) and its .env",
          "force": "replace an existing .env (a timestamped backup is kept)",
          "env_file": "where to write (default: the configured env file, ./.env)"},
)
def import_(c, from_=None, force=False, env_file=None):
    """Write .env from a Dify docker/ folder's settings (envs/**/*.env then .env), secrets generated
    where they only connect this stack's own services (as adopt.plan maps them); no data moves."""
    from .. import adopt

    if not from_:
        raise fail("say where Dify's docker/ folder is: --from /path/to/dify/docker")
    folder = Path(from_).expanduser().resolve()
    if not folder.is_dir() or not ((folder / "envs").is_dir() or (folder / ".env").is_file()):
        raise fail(f"{folder} has neither envs/ nor .env: point --from at the docker/ folder of Dify's bundle")
    target = env_path(c, env_file)
    if target.exists() and not force:
        raise fail(f"{target} already exists and is kept as it is: use --force to replace it (a backup is kept)")
    version = adopt.version_of_image(_declared_api_image(folder)) or release_sets.default().release
    try:
        release = adopt.release_for(version)
    except DifyopsError as exc:
        raise fail(f"{folder}: {exc}; nothing was written")
    official, sources = envfile.read_split_layout(folder, release)
    base = envfile.values_of(envfile.generate(paths.ENV_EXAMPLE.read_text(), {"DIFY_VERSION": release}))
    rows = adopt.map_settings(official, base, release=release)
    values = adopt.written_values(rows)
    text = envfile.generate(paths.ENV_EXAMPLE.read_text(), values)
    saved = dotenv.write_private(target, text, keep_backup=True)
    if saved:
        print(f"backed up the old file to {saved}")
    carried = sum(1 for row in rows if row.action in ("carried", "changed", "rotated"))
    skipped = [row.key for row in rows if row.action == "not carried"]
    print(f"wrote {target} (mode 0600) for Dify {release} from {len(sources)} file(s) of {folder} "
          f"({', '.join(str(p.relative_to(folder)) for p in sources)}): {carried} settings carried"
          + (f", not carried: {', '.join(skipped)}" if skipped else "") + "; run `invoke env.check`")


def _declared_api_image(folder: Path) -> str:
    from ..adopt import install

    files = [folder / name for name in install.COMPOSE_FILES if (folder / name).is_file()]
    return install.declared_api_image(files) if files else ""


ns = Collection("env")
ns.add_task(init)
ns.add_task(check, default=True)
ns.add_task(migrate)
ns.add_task(import_)
