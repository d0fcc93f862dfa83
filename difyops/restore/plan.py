"""The check phase: everything a restore needs, verified before anything changes (the plan)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import backup as bk
from .. import clusters as cl
from .. import dotenv, envfile, paths
from ..config import Settings, settings_for
from ..errors import DifyopsError
from ..report import Say
from .journal import journals
from .steps import _exit_text, _stack, existing_roles, existing_volumes, rendered
from .values import changed_clusters, fixed_problems, role_changes, server_values


@dataclass
class Plan:
    backup: bk.BackupSet
    manifest: dict
    stamp: str
    fresh: bool  # no .env here: the restore deploys the stack
    config: bool
    staging: Path | None = None  # the extracted configuration part (with --config)
    env_text: str = ""  # the .env to write
    staged_env: Path | None = None  # env_text on disk beside the .env, for Compose during the checks
    certs: Path | None = None  # the set's certificates folder, extracted
    kept: dict[str, str] = field(default_factory=dict)  # server keys kept from this server
    given: dict[str, str] = field(default_factory=dict)  # --set KEY=VALUE: written as given
    roles: list[tuple[str, str]] = field(default_factory=list)
    recreate: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        if self.staged_env:
            self.staged_env.unlink(missing_ok=True)
        if self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)


def extract_config(c: Any, cfg: bk.BackupConfig, backup: bk.BackupSet, info: dict, stamp: str) -> Path:
    """The configuration part decrypted into a private folder in the backups folder (removed by the plan)."""
    staging = cfg.folder / f".config-{stamp}"
    staging.mkdir(mode=0o700, parents=False)
    argv = bk.tool_argv(cfg, "untar-dir.sh", f"/set/{info['file']}", "/target/config", stamp,
                        mounts=[(str(backup.path), "/set", True), bk.identity_mount(cfg),
                                (str(staging), "/target", False)], network=False)
    (staging / "config").mkdir(mode=0o700)
    bk.run_step(c, argv, "extracting the configuration")
    if not (staging / "config" / ".env").is_file():
        raise bk.BackupError("the configuration part holds no .env")
    return staging


def check(c: Any, settings: Settings, name: str | None, other_stack: bool, config: bool,
          target_stack: str | None, say: Say, overrides: dict[str, str] | None = None) -> Plan:
    """Everything that can be known before anything changes; BackupError (one line) refuses.
    overrides: --set KEY=VALUE, written into the restored .env (on a new server they also say where
    the backups folder and the identity are)."""
    overrides = dict(overrides or {})
    fresh = not settings.env_file.exists()
    if fresh and not config:
        raise bk.BackupError(f"there is no {settings.env_file}: on a new server restore with --config (the set "
                             "brings its settings), or run `invoke env.init` and `invoke prod.deploy` first")
    if overrides and not config:
        raise bk.BackupError("--set goes with --config (it changes the settings the set brings)")
    if "DIFYOPS_STACK" in overrides:
        raise bk.BackupError("--set DIFYOPS_STACK: the stack restored into is this one (or difyops.stack in invoke "
                             "configuration on a new server)")
    if fresh:
        settings = Settings(settings.env_file, settings.stack, overrides, settings.wait_timeout)
    cfg = bk.config_from(settings)
    backup = bk.find_set(cfg.folder, name, target_stack or settings.stack)
    expected = None if other_stack else (target_stack if fresh else cfg.stack)
    manifest, problems = bk.check_set(backup.path, expected)
    if problems or manifest is None:
        raise bk.BackupError(f"refusing {backup.name}: {'; '.join(problems)}")
    stack = target_stack or (manifest.get("stack") if fresh else settings.stack) or settings.stack
    if not fresh:
        unfinished = [j for j in journals(settings) if j.data.get("state") in ("running", "rollback-failed")]
        if unfinished:
            raise bk.BackupError(f"the restore of {unfinished[-1].data.get('set')} did not finish putting back what it "
                                 f"replaced ({unfinished[-1].path}): run `invoke backup.restore --undo` first")
    if fresh:
        left = existing_volumes(c, stack)
        if left:
            raise bk.BackupError(f"there is no {settings.env_file} but stack {stack}'s volumes exist ({left[0]}, "
                                 "...): put that stack's .env back (then restore), or remove the volumes first")
    problems = bk.identity_problems(cfg) or bk.preflight(c, cfg, network=not fresh)
    if problems:
        raise bk.BackupError("; ".join(problems))
    problems = bk.check_parts(c, cfg, backup, manifest)
    if problems:
        raise bk.BackupError(f"refusing {backup.name}: {'; '.join(problems)}")
    say(f"  {backup.name}: checksums match and every part decrypts")
    plan = Plan(backup, manifest, bk.stamp_now(), fresh, config, given=overrides)
    if not config:
        return plan
    if "config" not in manifest["parts"]:
        raise bk.BackupError(f"{backup.name} holds no configuration part: restore it without --config")
    try:
        plan.staging = extract_config(c, cfg, backup, manifest["parts"]["config"], plan.stamp)
        _plan_config(c, settings, cfg, plan, stack)
    except BaseException:
        plan.cleanup()
        raise
    return plan


def _plan_config(c: Any, settings: Settings, cfg: bk.BackupConfig, plan: Plan, stack: str) -> None:
    st = _stack()
    from .. import tls  # noqa: PLC0415

    assert plan.staging is not None  # extracted by plan_restore before this runs
    set_text = (plan.staging / "config" / ".env").read_text()
    try:
        set_env = envfile.values_of(set_text, "the set's .env")
    except dotenv.DotenvError as exc:
        raise bk.BackupError(f"the set's .env is not valid: {exc.reason} (line {exc.line})") from None
    current = None if plan.fresh else settings.env
    example = envfile.read(paths.ENV_EXAMPLE)
    values = server_values(set_env, current, stack, example)
    plan.kept = {k: v for k, v in values.items() if set_env.get(k, "") != v and k not in plan.given}
    values.update(plan.given)
    plan.env_text = envfile.with_values(set_text, values, "Kept from this server by backup.restore --config")
    plan.staged_env = settings.env_file.with_name(f".env.restore-{plan.stamp}")
    dotenv.write_private(plan.staged_env, plan.env_text)
    new = settings_for(plan.staged_env, stack, settings.wait_timeout)
    certs = plan.staging / "config" / "certs"
    plan.certs = certs if certs.is_dir() else None
    if not plan.fresh:
        problems = fixed_problems(settings.env, new.env)
        if problems:
            raise bk.BackupError(problems[0])
    # prod.deploy's pre-flight on the settings to restore (certificates: the set's, where they will be).
    checked = new
    new_cfg = bk.config_from(new)
    if plan.certs and tls.ssl_dir(new) == new_cfg.certs_dir:
        checked = Settings(new.env_file, new.stack, {**new.env, "NGINX_SSL_DIR": str(plan.certs)}, new.wait_timeout)
    try:
        problems = st.preflight(c, checked, list(cl.CLUSTERS.values()))
    except DifyopsError as exc:
        problems = [_exit_text(exc)]
    if problems:
        raise bk.BackupError(f"the set's settings would not deploy here: {problems[0]}"
                             + (f" (and {len(problems) - 1} more: `invoke env.check`)" if len(problems) > 1 else ""))
    if plan.fresh:
        plan.recreate = []
        return
    plan.roles = role_changes(settings.env, new.env)
    if plan.roles:
        found = existing_roles(c, cfg, settings.get("DB_PASSWORD"), [role for role, _key in plan.roles])
        missing = [(role, key) for role, key in plan.roles if role not in found]
        if missing:
            role, key = missing[0]
            raise bk.BackupError(f"the set's .env logs in as PostgreSQL role {role!r} (the user of {key}), which "
                                 "does not exist on this server: create it first, or restore without --config")
    plan.recreate = changed_clusters(rendered(c, settings), rendered(c, new))


def _stack_of(plan: Plan) -> str:
    return envfile.values_of(plan.env_text).get("DIFYOPS_STACK") or "dify"
