"""backup.verify: checksums, every part decrypted, each database restored into a scratch database and compared."""

from __future__ import annotations

import shlex
from typing import Any

from ..config import Settings
from ..report import Say, quiet
from .config import SUMS, BackupConfig, BackupError, config_from, identity_problems, secret_env
from .sets import BackupSet, check_set, compare_counts, find_set, stamp_now
from ..report import failure_line
from .steps import check_part_argv, drop_database_argv, parse_counts, pg_restore_argv, preflight


def check_parts(c: Any, cfg: BackupConfig, backup: BackupSet, manifest: dict) -> list[str]:
    """Decrypt and decompress every part (nothing written): the identity opens it and it is whole;
    tar parts hold as many files as the manifest says."""
    problems = []
    for part, info in manifest["parts"].items():
        kind = "tar" if info["kind"] == "tar" else info["kind"]
        result = c.run(shlex.join(check_part_argv(cfg, backup.path, info["file"], kind)), hide=True, warn=True,
                       in_stream=False)
        if not result.ok:
            problems.append(f"{part}: {info['file']} does not decrypt and decompress: {failure_line(result)}")
            continue
        if kind == "tar":
            files = parse_counts(result.stdout).get("files")
            if files != info.get("files"):
                problems.append(f"{part}: the archive holds {files} files, the manifest says {info.get('files')}")
    return problems


def restore_database(c: Any, cfg: BackupConfig, backup: BackupSet, info: dict, new_database: str,
                     secrets: dict[str, str]) -> list[str]:
    """Restore one dump into new_database; the differences from the manifest's counts (empty = equal).
    The new database is dropped again when the restore fails."""
    result = c.run(shlex.join(pg_restore_argv(cfg, backup.path, info["file"], new_database)), env=secrets,
                   hide=True, warn=True, in_stream=False)
    if not result.ok:
        c.run(shlex.join(drop_database_argv(cfg, new_database)), env=secrets, hide=True, warn=True)
        raise BackupError(f"restoring {info['file']} into {new_database} failed: {failure_line(result)}")
    return compare_counts(info.get("tables") or {}, parse_counts(result.stdout))


def verify(c: Any, settings: Settings, name: str | None, say: Say = quiet) -> tuple[BackupSet, list[str]]:
    """Checksums, then decrypt every part, then restore each database into a scratch database on
    the server and compare it table by table with the manifest; the scratch databases are dropped."""
    cfg = config_from(settings)
    backup = find_set(cfg.folder, name, cfg.stack)
    manifest, problems = check_set(backup.path)
    if problems or manifest is None:
        return backup, problems
    say(f"  checksums: {len(manifest['parts'])} parts and the manifest match {SUMS}")
    problems = identity_problems(cfg) or preflight(c, cfg)
    if problems:
        raise BackupError("; ".join(problems))
    problems = check_parts(c, cfg, backup, manifest)
    if problems:
        return backup, problems
    say("  decryption: every part opens with the identity and decompresses whole")
    secrets = secret_env(settings)
    stamp = stamp_now()
    for part, info in manifest["parts"].items():
        if info["kind"] != "postgres":
            continue
        scratch = f"{info['database']}_verify_{stamp}"
        try:
            diffs = restore_database(c, cfg, backup, info, scratch, secrets)
        finally:
            c.run(shlex.join(drop_database_argv(cfg, scratch)), env=secrets, hide=True, warn=True)
        problems += [f"{part}: {line}" for line in diffs]
        say(f"  {part}: restored into a scratch database, {len(info.get('tables') or {})} tables "
            + ("match the manifest" if not diffs else f"DIFFER ({len(diffs)})"))
    return backup, problems
