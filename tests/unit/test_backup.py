"""backup: set checks, retention, command building, and the tasks through MockContext (no Docker)."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from conftest import OK, commands, fail_result, mock_context, write_env
from invoke import Result
from invoke.exceptions import Exit

from difyops import backup as bk
from difyops.config import load_settings
from difyops.tasks import backup as tasks

RECIPIENT = "age1" + "q" * 58
UTC = dt.timezone.utc


@pytest.fixture
def env_path(tmp_path):
    return write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1",
                     DIFYOPS_BACKUP_DIR=str(tmp_path / "backups"), DIFYOPS_BACKUP_AGE_RECIPIENT=RECIPIENT,
                     DIFYOPS_BACKUP_AGE_IDENTITY=str(tmp_path / "id.key"),
                     NODE_EXPORTER_TEXTFILE_DIR=str(tmp_path / "textfile"))


def cfg_for(env_path):
    return bk.config_from(load_settings(env_file=env_path))


def make_set(folder, name="unit-20260101T030000Z", stack="unit", payload=b"x" * 100):
    """A structurally valid set (the parts are not real age files: enough for the checks that come first)."""
    path = folder / name
    path.mkdir(parents=True)
    (path / "postgres-dify.dump.zst.age").write_bytes(payload)
    parts = {"postgres-dify": {"kind": "postgres", "file": "postgres-dify.dump.zst.age", "bytes": len(payload),
                               "sha256": bk.sha256_file(path / "postgres-dify.dump.zst.age"),
                               "database": "dify", "tables": {"public.messages": 3}}}
    manifest = {"format": bk.FORMAT, "stack": stack, "id": name, "parts": parts}
    (path / bk.MANIFEST).write_text(json.dumps(manifest))
    sums = {"postgres-dify.dump.zst.age": parts["postgres-dify"]["sha256"], bk.MANIFEST: bk.sha256_file(path / bk.MANIFEST)}
    (path / bk.SUMS).write_text(bk.sums_text(sums))
    return path


# ----------------------------------------------------------------------------- pure parts


def test_a_good_set_passes_the_checks(tmp_path):
    manifest, problems = bk.check_set(make_set(tmp_path), "unit")
    assert problems == [] and manifest["stack"] == "unit"


def test_a_truncated_part_is_refused(tmp_path):
    path = make_set(tmp_path)
    part = path / "postgres-dify.dump.zst.age"
    part.write_bytes(part.read_bytes()[:50])
    _, problems = bk.check_set(path, "unit")
    assert problems == ["postgres-dify: postgres-dify.dump.zst.age is 50 bytes, the manifest says 100 (truncated?)"]


def test_a_tampered_part_is_refused(tmp_path):
    path = make_set(tmp_path)
    (path / "postgres-dify.dump.zst.age").write_bytes(b"y" * 100)
    _, problems = bk.check_set(path, "unit")
    assert problems == ["postgres-dify: postgres-dify.dump.zst.age does not match its sha256 (changed or corrupted)"]


def test_a_tampered_manifest_is_refused(tmp_path):
    path = make_set(tmp_path)
    manifest = json.loads((path / bk.MANIFEST).read_text())
    manifest["parts"]["postgres-dify"]["tables"]["public.messages"] = 4
    (path / bk.MANIFEST).write_text(json.dumps(manifest))
    _, problems = bk.check_set(path, "unit")
    assert any("manifest.json does not match its checksum" in p for p in problems)


def test_another_stack_and_missing_files_are_refused(tmp_path):
    path = make_set(tmp_path, stack="other")
    _, problems = bk.check_set(path, "unit")
    assert problems == [f"{path.name} is a backup of stack 'other', not 'unit'"]
    (path / bk.SUMS).unlink()
    _, problems = bk.check_set(path, "unit")
    assert "SHA256SUMS is missing" in problems[0]


def test_sums_round_trip_in_sha256sum_format():
    text = bk.sums_text({"b": "1" * 64, "a": "2" * 64})
    assert text == f"{'2' * 64}  a\n{'1' * 64}  b\n"
    assert bk.parse_sums(text) == {"a": "2" * 64, "b": "1" * 64}


def test_compare_counts_names_each_difference():
    assert bk.compare_counts({"public.a": 1, "public.b": 2}, {"public.a": 1, "public.b": 2}) == []
    assert bk.compare_counts({"public.a": 1, "public.b": 2}, {"public.a": 0, "public.c": 5}) == [
        "public.a: 0 rows, the manifest says 1",
        "public.b: missing after restore (expected 2 rows)",
        "public.c: not in the manifest (5 rows)",
    ]


def test_set_names_are_timestamped_and_unique():
    when = dt.datetime(2026, 11, 25, 8, 0, 5, tzinfo=UTC)
    assert bk.set_name("s1", when) == "s1-20261125T080005Z"
    assert bk.set_name("s1", when, ["s1-20261125T080005Z"]) == "s1-20261125T080005Z-1"
    assert bk.set_time("s1-20261125T080005Z-1") == when


def _sets(tmp_path, times):
    out = []
    for t in times:
        name = bk.set_name("unit", t)
        (tmp_path / name).mkdir()
        out.append(bk.BackupSet(name, tmp_path / name, True))
    return out


def test_retention_keeps_last_n(tmp_path):
    times = [dt.datetime(2026, 11, 1, tzinfo=UTC) + dt.timedelta(hours=6 * i) for i in range(10)]
    sets = _sets(tmp_path, times)
    keep = bk.retention(sets, keep_last=3, keep_daily=0, keep_weekly=0)
    assert keep == {s.name for s in sets[-3:]}


def test_retention_keeps_newest_per_day_and_week(tmp_path):
    # two sets a day for 20 days (Nov 1 2026 is a Sunday)
    times = [dt.datetime(2026, 11, 1, h, tzinfo=UTC) + dt.timedelta(days=d) for d in range(20) for h in (1, 13)]
    sets = _sets(tmp_path, times)
    keep = bk.retention(sets, keep_last=1, keep_daily=3, keep_weekly=2)
    kept_times = sorted(bk.set_time(n) for n in keep)
    assert kept_times == [
        dt.datetime(2026, 11, 15, 13, tzinfo=UTC),  # newest of ISO week 46 (Nov 9-15)
        dt.datetime(2026, 11, 18, 13, tzinfo=UTC),  # daily
        dt.datetime(2026, 11, 19, 13, tzinfo=UTC),  # daily
        dt.datetime(2026, 11, 20, 13, tzinfo=UTC),  # last, daily, and newest of week 47
    ]


def test_swap_is_one_transaction_renaming_old_then_new():
    sql = bk.swap_sql(bk.restore_names(["dify", "dify_plugin"], "20260101000000"))
    assert sql.startswith("BEGIN;") and sql.endswith("COMMIT;")
    assert sql.index('ALTER DATABASE "dify" RENAME TO "dify_old_20260101000000"') < \
        sql.index('ALTER DATABASE "dify_restore_20260101000000" RENAME TO "dify"')
    assert 'ALTER DATABASE "dify_plugin_restore_20260101000000" RENAME TO "dify_plugin"' in sql


def test_cron_entry_runs_the_wrapper_and_refuses_a_bad_schedule(env_path):
    cfg = cfg_for(env_path)
    text = bk.cron_entry(cfg)
    assert text.splitlines()[-1].startswith("17 3 * * * root cd ")
    assert "scripts/backup.sh create" in text and "scripts/backup.sh prune" in text
    assert f"INVOKE_DIFYOPS_ENV_FILE={env_path}" in text
    bad = bk.BackupConfig(**{**cfg.__dict__, "schedule": "daily"})
    with pytest.raises(bk.BackupError, match="5-field cron"):
        bk.cron_entry(bad)


def test_settings_default_and_replica_source(tmp_path):
    path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit")
    cfg = bk.config_from(load_settings(env_file=path))
    assert cfg.db_host == "db_postgres" and cfg.databases == ("dify", "dify_plugin")
    assert cfg.folder.name == "backups" and cfg.image == "difyops-local/backup:1"
    path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", DIFYOPS_BACKUP_DB_HOST="pg_replica")
    cfg = bk.config_from(load_settings(env_file=path))
    # dumps read from the replica; verify and restore write to the primary
    assert "PGHOST=pg_replica" in bk.pg_dump_argv(cfg, tmp_path, "dify")
    assert "PGHOST=db_postgres" in bk.pg_restore_argv(cfg, tmp_path, "x.age", "dify_restore_1")
    assert "PGHOST=db_postgres" in bk.drop_database_argv(cfg, "dify_restore_1")


def test_textfile_metric(tmp_path, env_path):
    target = bk.write_textfile(cfg_for(env_path), 1700000000.4)
    assert target.read_text().splitlines()[-1] == \
        'difyops_backup_last_success_timestamp_seconds{stack="unit",kind="full"} 1700000000'


# ----------------------------------------------------------------------------- commands


def test_pg_dump_command_passes_the_password_by_name_only(env_path, tmp_path):
    cfg = cfg_for(env_path)
    argv = bk.pg_dump_argv(cfg, tmp_path / "set", "dify")
    assert argv[:3] == ["docker", "run", "--rm"]
    assert ["--network", "unit-backend"] == argv[argv.index("--network"):argv.index("--network") + 2]
    assert "PGPASSWORD" in argv and not any(a.startswith("PGPASSWORD=") for a in argv)
    assert "PGHOST=db_postgres" in argv and f"AGE_RECIPIENT={RECIPIENT}" in argv
    assert argv[-4:] == ["bash", "/difyops/pg-dump.sh", "dify", "/set/postgres-dify.dump.zst.age"]
    assert f"{bk.BIN_DIR}:/difyops:ro" in argv


def test_volume_steps_mount_what_they_need(env_path, tmp_path):
    cfg = cfg_for(env_path)
    argv = bk.tar_argv(cfg, tmp_path / "set", "storage", [("unit-storage", "")])
    assert "unit-storage:/src:ro" in argv and "--network" not in argv
    argv = bk.untar_argv(cfg, tmp_path / "set", "storage.tar.zst.age", "unit-storage", "1")
    assert f"{cfg.identity}:/identity/key:ro" in argv and "unit-storage:/target" in argv
    assert argv[-3:] == ["/set/storage.tar.zst.age", "/target", "1"]


def test_restic_local_folder_is_mounted(env_path, tmp_path):
    cfg = bk.BackupConfig(**{**cfg_for(env_path).__dict__, "restic_repository": str(tmp_path / "repo")})
    argv = bk.restic_argv(cfg, "unit-20260101T000000Z")
    assert f"{tmp_path / 'repo'}:/restic-repo" in argv and "RESTIC_REPOSITORY=/restic-repo" in argv
    assert "RESTIC_PASSWORD" in argv
    remote = bk.BackupConfig(**{**cfg.__dict__, "restic_repository": "sftp:backup@host:/srv/restic"})
    assert "RESTIC_REPOSITORY=sftp:backup@host:/srv/restic" in bk.restic_argv(remote, "x")


# ----------------------------------------------------------------------------- tasks


HEALTHY = {
    r"docker info": Result("26.1.5"),
    r"docker image inspect": Result("sha256:x"),
    r"docker network inspect": OK,
    r"docker volume inspect": OK,
}


def test_create_runs_each_step_and_writes_a_complete_set(env_path, tmp_path, monkeypatch):
    def fake_run(c, argv, what, secrets=None):
        # the real steps write their part into the mounted set folder; do the same
        for arg in argv:
            if arg.startswith("/set/") and arg.endswith(".age"):
                host = next(a for a in argv if a.endswith(":/set")).rsplit(":/set", 1)[0]
                (Path(host) / arg[5:]).write_bytes(b"z")
        script = next((a for a in argv if a.startswith("/difyops/")), "")
        return {"/difyops/pg-dump.sh": "public.messages\t3\n", "/difyops/redis-dump.sh": "keys\t2\n",
                "/difyops/tar-dir.sh": "files\t1\nbytes\t1\n"}.get(script) or (
            "dify\ndify_plugin\npostgres\n" if "pg_database" in argv[-1] else "17.2\n")

    monkeypatch.setattr(bk, "run_step", fake_run)
    c = mock_context(env_path, dict(HEALTHY))
    tasks.create(c)
    sets = bk.list_sets(tmp_path / "backups", "unit")
    assert len(sets) == 1 and sets[0].complete
    manifest, problems = bk.check_set(sets[0].path, "unit")
    assert problems == []
    assert set(manifest["parts"]) == {"postgres-dify", "postgres-dify_plugin", "redis", "storage",
                                      "plugin-storage", "letsencrypt", "config"}
    assert manifest["parts"]["postgres-dify"]["tables"] == {"public.messages": 3}
    assert stat.S_IMODE(sets[0].path.stat().st_mode) == 0o700
    assert (tmp_path / "textfile" / "difyops_backup_unit.prom").is_file()


def test_create_refuses_without_a_recipient_and_runs_nothing(tmp_path):
    path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", DIFYOPS_BACKUP_DIR=str(tmp_path / "b"))
    c = mock_context(path, dict(HEALTHY))
    with pytest.raises(Exit) as exc:
        tasks.create(c)
    assert "DIFYOPS_BACKUP_AGE_RECIPIENT is empty" in exc.value.message
    assert commands(c) == [] and not (tmp_path / "b").exists()


def test_create_failure_leaves_no_partial_set(env_path, tmp_path):
    results = dict(HEALTHY)
    results[r"pg_database"] = Result("dify\n")
    results[r"server_version"] = Result("17.2\n")
    results[r"pg-dump\.sh"] = fail_result("pg_dump: error: connection refused")
    c = mock_context(env_path, results)
    with pytest.raises(Exit) as exc:
        tasks.create(c)
    assert "pg_dump of dify failed: pg_dump: error: connection refused; no set was written" in exc.value.message
    assert list((tmp_path / "backups").iterdir()) == []


def test_create_refuses_when_the_image_is_missing(env_path):
    results = dict(HEALTHY)
    results[r"docker image inspect"] = fail_result("No such image")
    results[r"docker build"] = fail_result("no base image")
    c = mock_context(env_path, results)
    with pytest.raises(Exit) as exc:
        tasks.create(c)
    assert "invoke images.build-local --only backup" in exc.value.message
    assert [cmd for cmd in commands(c) if "docker build --tag difyops-local/backup:1" in cmd], "no build attempted"
    assert not [cmd for cmd in commands(c) if "docker run" in cmd]


def test_restore_refuses_a_tampered_set_before_touching_anything(env_path, tmp_path):
    path = make_set(tmp_path / "backups")
    (path / "postgres-dify.dump.zst.age").write_bytes(b"y" * 100)
    (tmp_path / "id.key").write_text("AGE-SECRET-KEY-1X\n")
    c = mock_context(env_path, dict(HEALTHY))
    with pytest.raises(Exit) as exc:
        tasks.restore(c, name=path.name, yes=True)
    assert "refusing unit-20260101T030000Z" in exc.value.message and "Nothing was changed" in exc.value.message
    assert commands(c) == []


def test_restore_refuses_a_set_that_does_not_decrypt(env_path, tmp_path):
    path = make_set(tmp_path / "backups")
    (tmp_path / "id.key").write_text("AGE-SECRET-KEY-1X\n")
    results = dict(HEALTHY)
    results[r"check-part\.sh"] = fail_result("age: error: no identity matched any of the recipients")
    c = mock_context(env_path, results)
    with pytest.raises(Exit) as exc:
        tasks.restore(c, name=path.name, yes=True)
    assert "no identity matched" in exc.value.message
    ran = commands(c)
    assert not [cmd for cmd in ran if "pg-restore" in cmd or " stop " in cmd or "ALTER DATABASE" in cmd]


def test_restore_drops_the_new_database_when_counts_differ(env_path, tmp_path):
    path = make_set(tmp_path / "backups")
    (tmp_path / "id.key").write_text("AGE-SECRET-KEY-1X\n")
    results = dict(HEALTHY)
    results[r"check-part\.sh"] = OK
    results[r"pg-restore\.sh"] = Result("public.messages\t2\n")
    results[r"DROP DATABASE"] = OK
    c = mock_context(env_path, results)
    with pytest.raises(Exit) as exc:
        tasks.restore(c, name=path.name, yes=True)
    assert "public.messages: 2 rows, the manifest says 3" in exc.value.message
    ran = commands(c)
    assert any('DROP DATABASE IF EXISTS "dify_restore_' in cmd for cmd in ran)
    assert not [cmd for cmd in ran if " stop " in cmd or "ALTER DATABASE" in cmd]


def test_prune_removes_what_the_policy_does_not_keep(env_path, tmp_path, capsys):
    folder = tmp_path / "backups"
    for day in range(1, 6):
        make_set(folder, f"unit-202611{day:02d}T030000Z")
    c = mock_context(env_path, {})
    tasks.prune(c, keep_last=2, dry_run=True)
    assert len(bk.list_sets(folder)) == 5
    tasks.prune(c, keep_last=2)
    assert [s.name for s in bk.list_sets(folder)] == ["unit-20261104T030000Z", "unit-20261105T030000Z"]
    with pytest.raises(Exit, match="keeps nothing"):
        tasks.prune(c, keep_last=0)


def test_keygen_writes_a_private_identity_and_sets_the_recipient(env_path, tmp_path, capsys):
    secret = "AGE-SECRET-KEY-1" + "A" * 58
    keygen_out = f"# created: 2026-01-01T00:00:00Z\n# public key: {RECIPIENT.replace('q', 'p')}\n{secret}\n"
    c = mock_context(env_path, {r"age-keygen": Result(keygen_out)})
    tasks.keygen(c)
    identity = tmp_path / "id.key"
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600 and secret in identity.read_text()
    env = env_path.read_text()
    assert f"DIFYOPS_BACKUP_AGE_RECIPIENT={RECIPIENT.replace('q', 'p')}" in env
    assert "DIFYOPS_BACKUP_RESTIC_PASSWORD=" in env
    assert secret not in capsys.readouterr().out
    assert list(tmp_path.glob(".env.bak.*")), ".env was changed without a backup"
    with pytest.raises(Exit, match="already exists"):
        tasks.keygen(c)
