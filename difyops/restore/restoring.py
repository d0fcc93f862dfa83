"""backup.restore: all or nothing, onto a running stack or a new server."""

from __future__ import annotations

import shlex
import shutil
import time
from typing import Any

from .. import backup as bk
from .. import clusters as cl
from .. import dotenv, releases, units
from ..config import Settings, settings_for
from ..report import Say, quiet
from .journal import Journal, _now
from .plan import Plan, _stack_of, check
from .putback import _forget_env_copy, put_back
from .steps import (
    _ensure_shared,
    _exit_text,
    _stack,
    redis_services,
    refresh_monitoring,
    restore_names,
    run_sql,
    set_role_passwords,
    stop_users,
    swap_sql,
    up_clusters,
)
from .undo import _drop_journal, aside_summary
from .values import ASIDE, STARTED_AGAIN, RestoreFailed


def restore(c: Any, settings: Settings, name: str | None, other_stack: bool = False, config: bool = False,
            say: Say = quiet, target_stack: str | None = None,
            overrides: dict[str, str] | None = None) -> dict:
    """Restore a set; returns what is kept aside. BackupError before anything changed; RestoreFailed
    after (with what was put back)."""
    plan = check(c, settings, name, other_stack, config, target_stack, say, overrides)
    try:
        if plan.fresh:
            return _restore_fresh(c, settings, plan, say)
        return _restore_running(c, settings, plan, say)
    finally:
        plan.cleanup()


def _load(c: Any, cfg: bk.BackupConfig, plan: Plan, password: str, say) -> list[tuple[str, str, str]]:
    """Each database into <db>_restore_<t>, compared with the manifest; dropped again on failure."""
    pg_parts = [(p, i) for p, i in plan.manifest["parts"].items() if i["kind"] == "postgres"]
    names = restore_names([i["database"] for _p, i in pg_parts], plan.stamp)
    created: list[str] = []
    secrets = {"PGPASSWORD": password}
    try:
        for (part, info), (_db, new, _old) in zip(pg_parts, names, strict=True):
            created.append(new)
            step = time.monotonic()
            diffs = bk.restore_database(c, cfg, plan.backup, info, new, secrets)
            if diffs:
                raise bk.BackupError(f"{part} restored into {new} differs from the manifest: {'; '.join(diffs[:5])}")
            say(f"  {part}: restored into {new} in {time.monotonic() - step:.1f}s, "
                f"{len(info.get('tables') or {})} tables match the manifest")
    except BaseException:
        for db in created:
            c.run(shlex.join(bk.drop_database_argv(cfg, db)), env=secrets, hide=True, warn=True)
        raise
    return names


def _restore_running(c: Any, settings: Settings, plan: Plan, say) -> dict:
    cfg = bk.config_from(settings)
    password = settings.get("DB_PASSWORD")
    names = _load(c, cfg, plan, password, say)
    journal = Journal.start(settings, plan.stamp, set=plan.backup.name, fresh=False, config=plan.config,
                            recreate=plan.recreate, mode="rollback")
    loaded = journal.add("loaded", databases=[new for _db, new, _old in names])
    step = "stopping api, the workers and the plugin daemon"
    new_settings = settings
    try:
        stop_users(c, settings)
        say("  stopped api, the workers and plugin_daemon")
        step = "switching to the restored databases"
        _switch_databases(c, cfg, journal, names, password, say)
        journal.mark(loaded, put_back=True)  # renamed into place: the databases step covers them now
        step = "restoring the volumes"
        _restore_volumes(c, settings, cfg, plan, journal, say)
        step = "restoring Redis"
        _restore_redis(c, settings, cfg, plan, journal, say)
        if plan.config:
            step = "restoring the configuration"
            new_settings = _restore_config(c, settings, cfg, plan, journal, say)
        step = "starting the data cluster"
        up_clusters(c, new_settings, ["data"], plan.recreate)
        for name in STARTED_AGAIN:
            step = f"starting cluster {name}"
            up_clusters(c, new_settings, [name], plan.recreate)
        for name in ("web", "gateway"):
            if name in plan.recreate:
                step = f"recreating cluster {name}"
                up_clusters(c, new_settings, [name], plan.recreate)
        step = "refreshing the monitoring exporters"
        refresh_monitoring(c, new_settings)
    except (Exception, KeyboardInterrupt) as exc:
        reason = _exit_text(exc)
        say(f"  [red]failed[/] {step}: {reason}; putting back what the restore replaced")
        try:
            put_back(c, journal, say)
        except (Exception, KeyboardInterrupt) as again:
            journal.set_state("rollback-failed", error=f"{step}: {reason}", rollback_error=_exit_text(again))
            raise RestoreFailed(
                f"restoring {plan.backup.name} failed {step}: {reason}; putting back what it replaced failed too: "
                f"{_exit_text(again)}. Fix that, then `invoke backup.restore --undo` finishes putting it back "
                f"(journal {journal.path})") from None
        journal.set_state("rolled-back", error=f"{step}: {reason}")
        _forget_env_copy(journal, settings)
        _record(settings, plan, "rolled-back", message=f"{step}: {reason}")
        raise RestoreFailed(f"restoring {plan.backup.name} failed {step}: {reason}; everything it replaced was put "
                            "back (databases, volumes, Redis" + (", .env, certificates, role passwords" if plan.config
                                                                 else "") + ") and the stack serves as before") from None
    journal.set_state("done", finished=_now())
    _record(new_settings, plan, "ok")
    say("  support, api and worker are healthy again" + (
        f"; recreated with the restored settings: {', '.join(plan.recreate)}" if plan.recreate else ""))
    return aside_summary(journal)


def _switch_databases(c, cfg, journal: Journal, names, password: str, say) -> None:
    out = bk.run_step(c, bk.psql_argv(cfg, "SELECT datname FROM pg_database"), "listing databases",
                      {"PGPASSWORD": password})
    present = set(out.split())
    swaps = [(db, new, old) for db, new, old in names if db in present]
    fresh = [(db, new, old) for db, new, old in names if db not in present]
    sql = swap_sql(swaps) if swaps else ""
    sql += " ".join(f'ALTER DATABASE "{new}" RENAME TO "{db}";' for db, new, _old in fresh)
    if sql:
        run_sql(c, cfg, sql, password, "switching to the restored databases")
    journal.add("databases", swaps=[[db, old] for db, _n, old in swaps], fresh=[db for db, _n, _o in fresh])
    say("  databases switched: " + ", ".join(f"{db} (previous kept as {old})" for db, _n, old in swaps)
        + "".join(f", {db} (new)" for db, _n, _o in fresh))


def _restore_volumes(c, settings, cfg, plan: Plan, journal: Journal, say) -> None:
    for part, info in plan.manifest["parts"].items():
        if info["kind"] != "tar" or part == "config":
            continue
        volume = cl.volume_name(settings, info["volume"])
        created = not bk.volume_exists(c, volume)
        if created:
            c.run(shlex.join(cl.volume_create_argv(settings, info["volume"])), hide=True)
        # Journaled first: a step interrupted half-way still gets its content put back.
        step = journal.add("volume", volume=volume, aside=ASIDE + plan.stamp, created=created)
        bk.run_step(c, bk.untar_argv(cfg, plan.backup.path, info["file"], volume, plan.stamp),
                    f"restoring volume {volume}")
        journal.mark(step, done=True)
        say(f"  {part}: {info.get('files')} files restored into {volume} (previous content in {step['aside']} "
            "inside it)")


def _restore_redis(c, settings, cfg, plan: Plan, journal: Journal, say) -> None:
    if "redis" not in plan.manifest["parts"]:
        return
    info = plan.manifest["parts"]["redis"]
    units.run_compose(c, settings, cl.CLUSTERS["data"], "stop", "--timeout", "30", *redis_services(settings),
                   hide=True, warn=True)
    volume = cl.volume_name(settings, "redisdata")
    step = journal.add("redis", volume=volume, aside=ASIDE + plan.stamp)
    bk.run_step(c, bk.redis_restore_argv(cfg, plan.backup.path, info["file"], volume, plan.stamp),
                "restoring the Redis snapshot")
    journal.mark(step, done=True)
    say(f"  redis: snapshot restored ({info.get('keys')} keys; previous data in {step['aside']} inside its volume)")


def _restore_config(c, settings: Settings, cfg: bk.BackupConfig, plan: Plan, journal: Journal, say) -> Settings:
    """The .env, the certificates folder, the roles' passwords; returns the restored settings."""
    copy = dotenv.backup(settings.env_file)
    journal.add("env", backup=str(copy))
    dotenv.write_private(settings.env_file, plan.env_text)
    new = settings_for(settings.env_file, settings.stack, settings.wait_timeout)
    say(f"  config: .env restored (previous kept as {copy.name})" + _kept_text(plan))
    _restore_certs(bk.config_from(new), plan, journal, say)
    if plan.roles:
        set_role_passwords(c, cfg, plan.roles, [settings.get("DB_PASSWORD")], new.env)
        journal.add("roles", roles=[[role, key] for role, key in plan.roles])
        say(f"  PostgreSQL roles take the restored passwords: {', '.join(role for role, _k in plan.roles)}")
    return new


def _restore_certs(cfg: bk.BackupConfig, plan: Plan, journal: Journal, say) -> None:
    if not plan.certs:
        return
    target = cfg.certs_dir
    aside = target.with_name(f"{target.name}.pre-restore-{plan.stamp}") if target.exists() else None
    journal.add("certs", dir=str(target), aside=str(aside) if aside else None)  # before anything moves
    if aside:
        target.rename(aside)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(plan.certs, target, symlinks=True)
    say(f"  certificates restored into {target}" + (f" (previous folder kept as {aside.name})" if aside else ""))


def _restore_fresh(c: Any, settings: Settings, plan: Plan, say) -> dict:
    """A new server: write the set's .env, create the stack, restore into it, start it."""
    st = _stack()
    journal = Journal.start(settings_for(settings.env_file, _stack_of(plan), settings.wait_timeout, text=plan.env_text),
                            plan.stamp, set=plan.backup.name, fresh=True, config=True, recreate=[], mode="rollback")
    step = "writing the .env"
    try:
        journal.add("env", backup=None)
        dotenv.write_private(settings.env_file, plan.env_text)
        new = settings_for(settings.env_file, _stack_of(plan), settings.wait_timeout)
        cfg = bk.config_from(new)
        say(f"  config: {new.env_file} written from the set" + _kept_text(plan))
        step = "creating the stack's networks and volumes"
        created = _ensure_shared(c, new)
        journal.add("shared", **created)
        _restore_certs(cfg, plan, journal, say)
        step = "starting the data cluster"
        st.up(c, new, cl.CLUSTERS["data"])
        step = "restoring the databases"
        names = _load(c, cfg, plan, new.get("DB_PASSWORD"), say)
        _switch_databases(c, cfg, journal, names, new.get("DB_PASSWORD"), say)
        step = "restoring the volumes"
        _restore_volumes(c, new, cfg, plan, journal, say)
        step = "restoring Redis"
        _restore_redis(c, new, cfg, plan, journal, say)
        up_clusters(c, new, ["data"], [])
        for name in list(cl.CLUSTERS)[1:]:
            step = f"starting cluster {name}"
            up_clusters(c, new, [name], [])
        _record(new, plan, "ok")
    except (Exception, KeyboardInterrupt) as exc:
        reason = _exit_text(exc)
        say(f"  [red]failed[/] {step}: {reason}; removing what the restore created")
        try:
            put_back(c, journal, say)
        except (Exception, KeyboardInterrupt) as again:
            journal.set_state("rollback-failed", error=f"{step}: {reason}", rollback_error=_exit_text(again))
            raise RestoreFailed(f"restoring {plan.backup.name} failed {step}: {reason}; removing what it created "
                                f"failed too: {_exit_text(again)} (journal {journal.path})") from None
        journal.set_state("rolled-back", error=f"{step}: {reason}")
        raise RestoreFailed(f"restoring {plan.backup.name} failed {step}: {reason}; what it created was removed and "
                            f"put back as it was: no .env, no containers, networks or volumes of stack "
                            f"{_stack_of(plan)}") from None
    journal.set_state("done", finished=_now())
    # Nothing was here before: what the restore kept aside (the new, empty databases and folders) goes.
    _drop_journal(c, new, journal)
    say(f"  stack {new.stack} deployed from {plan.backup.name}")
    return aside_summary(journal)


def _record(settings: Settings, plan: Plan, result: str, **fields: Any) -> None:
    """The restore in the deploy history (`invoke prod.history`), with the images it left running."""
    from .. import rollout  # noqa: PLC0415

    releases.record(settings, "restore", result, set=plan.backup.name, config=plan.config, fresh=plan.fresh,
                    to=rollout.release_images(settings.env), **fields)


def _kept_text(plan: Plan) -> str:
    text = f"; kept this server's {', '.join(sorted(plan.kept))}" if plan.kept else ""
    return text + (f"; as --set says: {', '.join(sorted(plan.given))}" if plan.given else "")
