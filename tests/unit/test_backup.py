"""backup: set checks, retention, command building, and the tasks through MockContext (no Docker)."""

from __future__ import annotations

import datetime as dt
import re
import json
import stat
from pathlib import Path

import pytest
from conftest import OK, commands, fail_result, mock_context, write_env
from invoke import Result
from invoke.exceptions import Exit

from difyops import digests, envfile
from difyops import backup as bk
from difyops import restore as rs
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
                               "sha256": digests.file_sha256(path / "postgres-dify.dump.zst.age"),
                               "database": "dify", "tables": {"public.messages": 3}}}
    manifest = {"format": bk.FORMAT, "stack": stack, "id": name, "parts": parts}
    (path / bk.MANIFEST).write_text(json.dumps(manifest))
    sums = {"postgres-dify.dump.zst.age": parts["postgres-dify"]["sha256"], bk.MANIFEST: digests.file_sha256(path / bk.MANIFEST)}
    (path / bk.SUMS).write_text(digests.sums_text(sums))
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
    text = digests.sums_text({"b": "1" * 64, "a": "2" * 64})
    assert text == f"{'2' * 64}  a\n{'1' * 64}  b\n"
    assert digests.parse_sums(text) == {"a": "2" * 64, "b": "1" * 64}


def test_a_sums_file_with_a_line_that_is_not_sha256sums_is_refused_as_for_bundles(tmp_path):
    path = make_set(tmp_path)
    with open(path / bk.SUMS, "a") as handle:
        handle.write("not a checksum line\n")
    manifest, problems = bk.check_set(path, "unit")
    assert manifest is None
    assert problems == [f"{path.name}: SHA256SUMS, line 3: not `<sha256>  <name>`: 'not a checksum line': "
                        "the set is damaged"]


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
    sql = rs.swap_sql(rs.restore_names(["dify", "dify_plugin"], "20260101000000"))
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
    for schedule in ("daily", "61 3 * * *", "17 3 * *", "17 3 * * * *", "17 25 * * *"):  # cron refuses each
        bad = bk.BackupConfig(**{**cfg.__dict__, "schedule": schedule})
        with pytest.raises(bk.BackupError, match="5-field cron"):
            bk.cron_entry(bad)


def test_next_run_is_when_cron_starts_it(env_path):
    import datetime as dt
    cfg = cfg_for(env_path)
    after = dt.datetime(2026, 12, 1, 12, 0).astimezone().timestamp()
    assert dt.datetime.fromtimestamp(bk.next_run(cfg, after)).strftime("%Y-%m-%d %H:%M") == "2026-12-02 03:17"
    cfg = bk.BackupConfig(**{**cfg.__dict__, "schedule": "*/30 * * * *"})
    assert bk.next_run(cfg, after) - after == 1800


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

    monkeypatch.setattr(bk.creation, "run_step", fake_run)  # the steps create runs
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


# ----------------------------------------------------------------------------- restore: the settings to restore


def _env(**values):
    return {k: str(v) for k, v in values.items()}


def test_server_keys_keep_this_servers_values_and_the_rest_is_the_sets():
    set_env = _env(DIFYOPS_STACK="old", DIFYOPS_BACKUP_DIR="/srv/a/backups", EXPOSE_NGINX_PORT="8080",
                   NGINX_BIND_ADDRESS="0.0.0.0", SECRET_KEY="a" * 64, DIFYOPS_BACKUP_RESTIC_REPOSITORY="/srv/a/restic")
    here = _env(DIFYOPS_BACKUP_DIR="backups", EXPOSE_NGINX_PORT="80", DIFYOPS_BACKUP_RESTIC_REPOSITORY="/srv/b/r")
    values = rs.server_values(set_env, here, "new", {})
    assert values["DIFYOPS_STACK"] == "new" and values["DIFYOPS_BACKUP_DIR"] == "backups"
    assert values["EXPOSE_NGINX_PORT"] == "80"
    assert values["NGINX_BIND_ADDRESS"] == ""  # not set here: this server's default, not the set's 0.0.0.0
    assert values["DIFYOPS_BACKUP_RESTIC_REPOSITORY"] == "/srv/b/r"  # a local folder is this server's
    assert "SECRET_KEY" not in values
    remote = rs.server_values({**set_env, "DIFYOPS_BACKUP_RESTIC_REPOSITORY": "s3:host/bucket"}, here, "new", {})
    assert "DIFYOPS_BACKUP_RESTIC_REPOSITORY" not in remote  # a remote repository is the deployment's


def test_a_new_server_takes_the_examples_folders_and_the_sets_network_settings():
    set_env = _env(DIFYOPS_BACKUP_DIR="/srv/a/backups", NGINX_SSL_DIR="/srv/a/ssl", EXPOSE_NGINX_PORT="8080")
    example = _env(DIFYOPS_BACKUP_DIR="backups", NGINX_SSL_DIR="../nginx/ssl", EXPOSE_NGINX_PORT="80")
    values = rs.server_values(set_env, None, "dify", example)
    assert values["DIFYOPS_BACKUP_DIR"] == "backups" and values["NGINX_SSL_DIR"] == "../nginx/ssl"
    assert "EXPOSE_NGINX_PORT" not in values  # the set's 8080 stays


def test_the_restored_env_keeps_comments_and_sets_the_key_where_it_last_is():
    text = "# head\nA=1\nB=2 # two\n\n# c\nA=3\n"
    out = envfile.with_values(text, {"A": "9 #x", "C": "x"}, "kept")
    assert out == "# head\nA=1\nB=2 # two\n\n# c\nA='9 #x'\n\n# kept\nC=x\n"
    assert envfile.values_of(out) == {"A": "9 #x", "B": "2", "C": "x"}


def test_roles_the_stack_logs_in_as():
    env = _env(DB_USERNAME="postgres", DB_PASSWORD="p", PGVECTOR_HOST="db_postgres", PGVECTOR_USER="postgres")
    assert rs.role_passwords(env) == [("postgres", "DB_PASSWORD")]
    env.update(PGVECTOR_USER="vec", DIFYOPS_DATA_HA="true")
    assert rs.role_passwords(env) == [("postgres", "DB_PASSWORD"), ("vec", "PGVECTOR_PASSWORD"),
                                      ("replicator", "PATRONI_REPLICATION_PASSWORD")]
    assert rs.role_passwords({**env, "PGVECTOR_HOST": "vectors.example"})[1][0] == "replicator"


def test_role_changes_are_the_passwords_the_set_changes():
    old = _env(DB_PASSWORD="b", DIFYOPS_DATA_HA="true", PATRONI_REPLICATION_PASSWORD="r")
    assert rs.role_changes(old, {**old, "DB_PASSWORD": "a"}) == [("postgres", "DB_PASSWORD")]
    assert rs.role_changes(old, dict(old)) == []
    assert rs.role_changes(old, {**old, "PATRONI_REPLICATION_USERNAME": "rep2"}) == \
        [("rep2", "PATRONI_REPLICATION_PASSWORD")]


def test_what_a_restore_cannot_change_under_a_running_stack():
    old = _env(DB_USERNAME="postgres")
    assert rs.fixed_problems(old, _env(DB_USERNAME="postgres", DB_HOST="db_postgres")) == []
    [line] = rs.fixed_problems(old, _env(DB_USERNAME="dify"))
    assert line.startswith("the set's .env has DB_USERNAME=dify, this stack runs DB_USERNAME=postgres")
    [line] = rs.fixed_problems(old, _env(DIFYOPS_DATA_HA="true"))
    assert "data-ha.yml" in line and "restore without --config" in line


def test_swap_back_renames_the_restored_aside_and_the_previous_back():
    sql = rs.swap_back_sql([("dify", "dify_old_1")], ["dify_plugin"], "_undone_1")
    assert sql.startswith("BEGIN;") and sql.endswith("COMMIT;")
    assert sql.index('ALTER DATABASE "dify" RENAME TO "dify_undone_1"') < \
        sql.index('ALTER DATABASE "dify_old_1" RENAME TO "dify"')
    assert 'ALTER DATABASE "dify_plugin" RENAME TO "dify_plugin_undone_1"' in sql


def test_role_password_command_names_variables_only(env_path):
    argv = bk.role_passwords_argv(cfg_for(env_path), [("postgres", "DIFYOPS_ROLE_PASSWORD_0")])
    assert argv[-2:] == ["/difyops/role-passwords.sh", "postgres=DIFYOPS_ROLE_PASSWORD_0"]
    assert "DIFYOPS_ROLE_PASSWORD_0" in argv and "PGPASSWORD" in argv
    assert not any("=" in a and a.split("=")[0] in ("PGPASSWORD", "DIFYOPS_ROLE_PASSWORD_0") for a in argv)


# ----------------------------------------------------------------------------- restore: the task, end to end


def _tar_part(path, name, volume=None, payload=b"t" * 40):
    (path / f"{name}.tar.zst.age").write_bytes(payload)
    info = {"kind": "tar", "file": f"{name}.tar.zst.age", "bytes": len(payload),
            "sha256": digests.file_sha256(path / f"{name}.tar.zst.age"), "files": 1}
    if volume:
        info["volume"] = volume
    return info


def make_full_set(folder, stack="unit", name="unit-20260101T030000Z"):
    """A set with every kind of part (contents are stand-ins: the steps that read them are mocked)."""
    path = make_set(folder, name, stack)
    manifest = json.loads((path / bk.MANIFEST).read_text())
    manifest["parts"]["storage"] = _tar_part(path, "storage", "storage")
    manifest["parts"]["config"] = _tar_part(path, "config")
    (path / "redis.rdb.zst.age").write_bytes(b"r" * 30)
    manifest["parts"]["redis"] = {"kind": "redis", "file": "redis.rdb.zst.age", "bytes": 30,
                                  "sha256": digests.file_sha256(path / "redis.rdb.zst.age"), "keys": 2}
    (path / bk.MANIFEST).write_text(json.dumps(manifest))
    sums = {info["file"]: info["sha256"] for info in manifest["parts"].values()}
    sums[bk.MANIFEST] = digests.file_sha256(path / bk.MANIFEST)
    (path / bk.SUMS).write_text(digests.sums_text(sums))
    return path


@pytest.fixture
def moving(tmp_path, monkeypatch):
    """Server B (this .env) and a set of server A whose .env has other secrets and A's own folders."""
    monkeypatch.setattr("difyops.probes.shutil.which", lambda name: f"/usr/bin/{name}")
    here = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1",
                     DIFYOPS_BACKUP_DIR=str(tmp_path / "backups"), DIFYOPS_BACKUP_AGE_RECIPIENT=RECIPIENT,
                     DIFYOPS_BACKUP_AGE_IDENTITY=str(tmp_path / "id.key"),
                     DIFYOPS_BACKUP_CERTS_DIR=str(tmp_path / "ssl"), NGINX_SSL_DIR=str(tmp_path / "ssl"))
    a_env = write_env(tmp_path / "a.env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="8080",
                      DIFYOPS_BACKUP_DIR="/srv/a/backups", DIFYOPS_BACKUP_AGE_RECIPIENT=RECIPIENT,
                      UPLOAD_FILE_SIZE_LIMIT="30")
    (tmp_path / "id.key").write_text("AGE-SECRET-KEY-1X\n")
    path = make_full_set(tmp_path / "backups")

    def extract(c, cfg, backup, info, stamp):
        staging = cfg.folder / f".config-{stamp}"
        (staging / "config").mkdir(parents=True)
        (staging / "config" / ".env").write_text(a_env.read_text())
        return staging

    monkeypatch.setattr(rs.plan, "extract_config", extract)
    monkeypatch.setattr(bk, "stamp_now", lambda: STAMP)
    return {"here": here, "a": a_env, "set": path, "tmp": tmp_path}


STAMP = "20260102030405"


def restore_results(**extra):
    results = {
        r"docker info": Result("26.1.5"),
        r"docker compose version": Result("2.26.1"),
        r"docker image inspect": Result("sha256:x"),
        r"docker (network|volume) inspect": OK,
        r"check-part\.sh": Result("files\t1\n"),
        r"pg-restore\.sh": Result("public.messages\t3\n"),
        r"pg_roles": Result("postgres\n"),
        r"SELECT datname FROM pg_database": Result(f"dify\npostgres\ndify_old_{STAMP}\n"),
        # The restored .env renders other services than this one (its secrets differ).
        r"\.env\.restore-\S* -p \S+ config --format json": Result('{"services": {"s": {"environment": {"K": "a"}}}}'),
        r"config --format json": Result('{"services": {"s": {"environment": {"K": "b"}}}}'),
        r"config --images": Result("img:1"),
        r"(untar-dir|redis-restore)\.sh": Result(f"aside\t/target/.difyops-pre-restore-{STAMP}\n"),
        r"monitoring\.yml .* ps -q": OK,
        # After every migration job the schema is checked to be at the image's head (stack.migrate).
        r"migrate db current": Result("0003_upload_files (head)\n"),
    }
    results.update(extra)
    results.setdefault(r".", OK)  # everything else (stop, up, migrate, ALTER, role-passwords) succeeds
    return results


def _index(ran, pattern):
    import re  # noqa: PLC0415

    found = [i for i, cmd in enumerate(ran) if re.search(pattern, cmd)]
    assert found, f"no command matches {pattern}"
    return found[0]


def test_restore_config_makes_the_restored_settings_true_before_starting_anything(moving, capsys):
    c = mock_context(moving["here"], restore_results())
    b_password = load_settings(env_file=moving["here"]).get("DB_PASSWORD")
    a_password = load_settings(env_file=moving["a"]).get("DB_PASSWORD")
    tasks.restore(c, name=moving["set"].name, config=True, yes=True)
    ran = commands(c)
    order = [_index(ran, p) for p in (r"pg-restore\.sh", r"/api\.yml .* stop", r"ALTER DATABASE \"dify\" RENAME",
                                      r"untar-dir\.sh", r"data\.yml .* stop --timeout 30 redis", r"redis-restore\.sh",
                                      r"role-passwords\.sh", r"data\.yml .* up -d --wait .*--force-recreate",
                                      r"support\.yml .* up -d --wait .*--force-recreate",
                                      r"api\.yml .* up -d --wait .*--force-recreate")]
    assert order == sorted(order), "steps out of order"
    # The role takes A's password, connecting with B's; no password is ever on a command line.
    call = next(call for call in c.run.call_args_list if "role-passwords.sh" in call.args[0])
    assert call.kwargs["env"] == {"PGPASSWORD": b_password, "DIFYOPS_ROLE_PASSWORD_0": a_password}
    assert not [cmd for cmd in ran if a_password in cmd or b_password in cmd]
    # Every cluster whose configuration changed is recreated, the gateway and web included.
    assert all(_index(ran, rf"{name}\.yml .* up -d --wait .*--force-recreate") for name in ("web", "gateway"))
    restored = load_settings(env_file=moving["here"])
    assert restored.get("DB_PASSWORD") == a_password and restored.get("UPLOAD_FILE_SIZE_LIMIT") == "30"
    assert restored.get("EXPOSE_NGINX_PORT") == "1"  # this server's
    assert restored.get("DIFYOPS_BACKUP_DIR") == str(moving["tmp"] / "backups")
    assert stat.S_IMODE(moving["here"].stat().st_mode) == 0o600
    assert list(moving["tmp"].glob(".env.bak.*")) and not list(moving["tmp"].glob(".env.restore-*"))
    [journal] = rs.journals(restored)
    assert journal.data["state"] == "done"
    assert [s["kind"] for s in journal.steps()] == ["loaded", "databases", "volume", "redis", "env", "roles"]
    text = capsys.readouterr().out
    assert "--undo" in text and "--drop-aside" in text and a_password not in text


def test_a_failure_after_the_swap_puts_back_what_the_restore_replaced(moving, capsys):
    before = moving["here"].read_bytes()
    b_password = load_settings(env_file=moving["here"]).get("DB_PASSWORD")
    a_password = load_settings(env_file=moving["a"]).get("DB_PASSWORD")
    # api's first start fails (the restored settings' api cannot start); the second, as before, works.
    c = mock_context(moving["here"], restore_results(**{r"api\.yml .* up -d --wait": [fail_result("unhealthy"), OK]}))
    with pytest.raises(Exit) as exc:
        tasks.restore(c, name=moving["set"].name, config=True, yes=True)
    message = exc.value.message
    assert message.startswith(f"error: restoring {moving['set'].name} failed starting cluster api")
    assert "everything it replaced was put back" in message and "\n" not in message
    ran = commands(c)
    failed = [i for i, cmd in enumerate(ran) if "api.yml" in cmd and " up -d --wait" in cmd][0]
    after = ran[failed + 1:]
    assert _index(after, rf"aside\.sh put-back /target \.difyops-pre-restore-{STAMP}$") >= 0
    back = next(call for call in c.run.call_args_list[failed:] if "role-passwords.sh" in call.args[0])
    assert back.kwargs["env"] == {"PGPASSWORD": a_password, "DIFYOPS_ROLE_PASSWORD_0": b_password}
    swap_back = _index(after, r'ALTER DATABASE "dify" RENAME TO "dify_failed_\d+".*'
                              r'ALTER DATABASE "dify_old_\d+" RENAME TO "dify"')
    assert _index(after, r'DROP DATABASE IF EXISTS "dify_failed_\d+"') > swap_back
    assert _index(after, r"api\.yml .* up -d --wait") > swap_back
    assert moving["here"].read_bytes() == before, ".env is not back byte for byte"
    assert not list(moving["tmp"].glob(".env.bak.*")), "the copy of the .env is left behind after the rollback"
    [journal] = rs.journals(load_settings(env_file=moving["here"]))
    assert journal.data["state"] == "rolled-back" and all(s.get("put_back") for s in journal.steps())


def test_undo_goes_back_and_keeps_what_the_restore_brought_aside(moving, capsys):
    before = moving["here"].read_bytes()
    c = mock_context(moving["here"], restore_results())
    tasks.restore(c, name=moving["set"].name, config=True, yes=True)
    c = mock_context(moving["here"], restore_results())
    tasks.restore(c, undo=True, yes=True)
    ran = commands(c)
    assert _index(ran, rf"aside\.sh check /target \.difyops-pre-restore-{STAMP}$") < _index(ran, r"/api\.yml .* stop")
    assert _index(ran, rf"aside\.sh put-back /target \.difyops-pre-restore-{STAMP} \.difyops-undone-{STAMP}$")
    assert _index(ran, r'ALTER DATABASE "dify" RENAME TO "dify_undone_\d+"')
    assert not [cmd for cmd in ran if "DROP DATABASE" in cmd]
    assert moving["here"].read_bytes() == before
    settings = load_settings(env_file=moving["here"])
    assert rs.journals(settings)[-1].data["state"] == "undone"
    assert "--drop-aside" in capsys.readouterr().out
    with pytest.raises(Exit, match="is undone: nothing to undo"):
        tasks.restore(mock_context(moving["here"], restore_results()), undo=True, yes=True)
    c = mock_context(moving["here"], restore_results())
    tasks.restore(c, drop_aside=True, yes=True)
    ran = commands(c)
    assert _index(ran, r'DROP DATABASE IF EXISTS "dify_undone_\d+"') >= 0
    assert _index(ran, r"aside\.sh drop /target \.difyops-undone-\d+$") >= 0
    assert rs.journals(settings)[-1].data["state"] == "dropped"


def test_undo_refuses_in_one_line_when_what_was_kept_aside_is_gone(moving):
    c = mock_context(moving["here"], restore_results())
    tasks.restore(c, name=moving["set"].name, yes=True)
    c = mock_context(moving["here"], restore_results(**{r"aside\.sh check": fail_result("not in the volume")}))
    with pytest.raises(Exit) as exc:
        tasks.restore(c, undo=True, yes=True)
    assert f".difyops-pre-restore-{STAMP} is no longer in volume unit-storage" in exc.value.message
    assert "Nothing was changed" in exc.value.message
    assert not [cmd for cmd in commands(c) if " stop " in cmd or "ALTER" in cmd or "put-back" in cmd]


@pytest.mark.parametrize("case", ["db_username", "missing_role", "no_config_part"])
def test_restore_config_refuses_up_front_what_it_cannot_do(moving, case):
    results = restore_results()
    if case == "db_username":
        text = moving["a"].read_text().replace("DB_USERNAME=postgres", "DB_USERNAME=dify")
        moving["a"].write_text(text)
        expected = "the set's .env has DB_USERNAME=dify, this stack runs DB_USERNAME=postgres"
    elif case == "missing_role":
        text = moving["a"].read_text().replace("PGVECTOR_USER=postgres", "PGVECTOR_USER=vectors")
        moving["a"].write_text(text.replace("PGVECTOR_HOST=db_postgres", "PGVECTOR_HOST=db_postgres"))
        expected = "logs in as PostgreSQL role 'vectors' (the user of PGVECTOR_PASSWORD), which does not exist"
    else:
        manifest = json.loads((moving["set"] / bk.MANIFEST).read_text())
        del manifest["parts"]["config"]
        (moving["set"] / bk.MANIFEST).write_text(json.dumps(manifest))
        sums = {i["file"]: i["sha256"] for i in manifest["parts"].values()}
        sums[bk.MANIFEST] = digests.file_sha256(moving["set"] / bk.MANIFEST)
        (moving["set"] / "config.tar.zst.age").unlink()
        (moving["set"] / bk.SUMS).write_text(digests.sums_text(sums))
        expected = "holds no configuration part: restore it without --config"
    before = moving["here"].read_bytes()
    c = mock_context(moving["here"], results)
    with pytest.raises(Exit) as exc:
        tasks.restore(c, name=moving["set"].name, config=True, yes=True)
    assert expected in exc.value.message and exc.value.message.endswith("Nothing was changed")
    changing = [cmd for cmd in commands(c) if re.search(r" stop | up |ALTER|pg-restore|untar|role-passwords", cmd)]
    assert not changing and moving["here"].read_bytes() == before
    assert not list(moving["tmp"].glob(".env.restore-*")) and not list((moving["tmp"] / "backups").glob(".config-*"))


def test_restore_without_an_env_file_needs_config(tmp_path):
    c = mock_context(tmp_path / ".env", {})
    with pytest.raises(Exit) as exc:
        tasks.restore(c, name="x", yes=True)
    assert "there is no" in exc.value.message and "restore with --config" in exc.value.message
    assert commands(c) == []


def test_a_new_server_is_deployed_from_the_set_alone(moving, capsys):
    moving["here"].unlink()  # server B has nothing: no .env, no volumes
    folder = {"DIFYOPS_BACKUP_DIR": str(moving["tmp"] / "backups"),
              "DIFYOPS_BACKUP_AGE_IDENTITY": str(moving["tmp"] / "id.key")}
    results = restore_results(**{r"docker (network|volume) inspect": fail_result("no such"),
                                 r"docker volume ls": OK,
                                 r"SELECT datname FROM pg_database": Result("postgres\n")})
    c = mock_context(moving["here"], results)
    tasks.restore(c, name=moving["set"].name, config=True, yes=True,
                  set=[f"{k}={v}" for k, v in folder.items()])
    ran = commands(c)
    restored = load_settings(env_file=moving["here"])
    a = load_settings(env_file=moving["a"])
    assert restored.get("SECRET_KEY") == a.get("SECRET_KEY") and restored.get("EXPOSE_NGINX_PORT") == "8080"
    assert restored.get("DIFYOPS_BACKUP_DIR") == folder["DIFYOPS_BACKUP_DIR"]
    assert restored.get("DIFYOPS_BACKUP_CERTS_DIR") == "nginx/ssl"  # .env.example's, not A's path
    assert stat.S_IMODE(moving["here"].stat().st_mode) == 0o600
    assert _index(ran, "docker volume create .* unit-pgdata") < _index(ran, r"data\.yml .* up -d --wait") \
        < _index(ran, r"pg-restore\.sh") < _index(ran, r'ALTER DATABASE "dify_restore_\d+" RENAME TO "dify"') \
        < _index(ran, r"gateway\.yml .* up -d --wait")
    assert not [cmd for cmd in ran if "role-passwords" in cmd or "--force-recreate" in cmd]


def test_a_failed_restore_on_a_new_server_removes_what_it_created(moving):
    moving["here"].unlink()
    folder = [f"DIFYOPS_BACKUP_DIR={moving['tmp'] / 'backups'}", f"DIFYOPS_BACKUP_AGE_IDENTITY={moving['tmp'] / 'id.key'}"]
    results = restore_results(**{r"docker (network|volume) inspect": fail_result("no such"),
                                 r"docker volume ls": OK, r"web\.yml .* up -d --wait": fail_result("unhealthy")})
    c = mock_context(moving["here"], results)
    with pytest.raises(Exit) as exc:
        tasks.restore(c, name=moving["set"].name, config=True, yes=True, set=folder)
    assert "failed starting cluster web" in exc.value.message and "no .env, no containers" in exc.value.message
    ran = commands(c)
    assert _index(ran, r"docker volume rm unit-pgdata") > _index(ran, r"gateway\.yml .* down")
    assert not moving["here"].exists()


def test_a_new_server_with_the_stacks_volumes_is_refused(moving):
    moving["here"].unlink()
    c = mock_context(moving["here"], restore_results(**{r"docker volume ls": Result("unit-pgdata\nunit-storage\n")}))
    with pytest.raises(Exit, match="stack unit's volumes exist"):
        tasks.restore(c, name=moving["set"].name, config=True, yes=True,
                      set=[f"DIFYOPS_BACKUP_DIR={moving['tmp'] / 'backups'}"])
    assert not moving["here"].exists()


def test_restore_config_with_the_ha_data_layer_sets_every_role_and_stops_the_sentinels_first(tmp_path, monkeypatch):
    monkeypatch.setattr("difyops.probes.shutil.which", lambda name: f"/usr/bin/{name}")
    common = dict(DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1", DIFYOPS_DATA_HA="true",
                  DIFYOPS_BACKUP_DIR=str(tmp_path / "backups"), DIFYOPS_BACKUP_AGE_RECIPIENT=RECIPIENT,
                  DIFYOPS_BACKUP_AGE_IDENTITY=str(tmp_path / "id.key"))
    here = write_env(tmp_path / ".env", **common)
    a_env = write_env(tmp_path / "a.env", **common)
    (tmp_path / "id.key").write_text("AGE-SECRET-KEY-1X\n")
    path = make_full_set(tmp_path / "backups")

    def extract(c, cfg, backup, info, stamp):
        (cfg.folder / f".config-{stamp}" / "config").mkdir(parents=True)
        (cfg.folder / f".config-{stamp}" / "config" / ".env").write_text(a_env.read_text())
        return cfg.folder / f".config-{stamp}"

    monkeypatch.setattr(rs.plan, "extract_config", extract)
    monkeypatch.setattr(bk, "stamp_now", lambda: STAMP)
    c = mock_context(here, restore_results(**{r"pg_roles": Result("postgres\nreplicator\n")}))
    a = load_settings(env_file=a_env)
    tasks.restore(c, name=path.name, config=True, yes=True)
    ran = commands(c)
    call = next(call for call in c.run.call_args_list if "role-passwords.sh" in call.args[0])
    assert call.args[0].endswith("postgres=DIFYOPS_ROLE_PASSWORD_0 replicator=DIFYOPS_ROLE_PASSWORD_1")
    assert call.kwargs["env"]["DIFYOPS_ROLE_PASSWORD_1"] == a.get("PATRONI_REPLICATION_PASSWORD")
    stop = next(cmd for cmd in ran if "data.yml" in cmd and " stop --timeout 30 " in cmd)
    assert stop.endswith("stop --timeout 30 redis-sentinel-1 redis-sentinel-2 redis-sentinel-3 redis-replica redis")
    assert "-f" in stop and "data-ha.yml" in stop
    # Patroni, HAProxy, Redis and the sentinels are recreated with the restored passwords.
    assert _index(ran, r"data-ha\.yml .* up -d --wait .*--force-recreate") > _index(ran, "role-passwords")


def test_a_rollback_that_fails_too_is_finished_by_undo_and_blocks_new_restores(moving):
    before = moving["here"].read_bytes()
    c = mock_context(moving["here"], restore_results(**{r"api\.yml .* up -d --wait": fail_result("unhealthy")}))
    with pytest.raises(Exit) as exc:
        tasks.restore(c, name=moving["set"].name, config=True, yes=True)
    message = exc.value.message
    assert "putting back what it replaced failed too" in message and "backup.restore --undo" in message
    settings = load_settings(env_file=moving["here"])
    assert rs.journals(settings)[-1].data["state"] == "rollback-failed"
    with pytest.raises(Exit, match="did not finish putting back .* run `invoke backup.restore --undo` first"):
        tasks.restore(mock_context(moving["here"], restore_results()), name=moving["set"].name, yes=True)
    c = mock_context(moving["here"], restore_results())
    tasks.restore(c, undo=True, yes=True)
    assert rs.journals(settings)[-1].data["state"] == "rolled-back"
    assert moving["here"].read_bytes() == before
    # what the first attempt already put back is not done twice
    assert not [cmd for cmd in commands(c) if "put-back" in cmd or "role-passwords" in cmd]
