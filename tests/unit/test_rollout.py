"""prod.upgrade, prod.rollback, prod.history and prod.scale through MockContext: the exact command
sequences, the automatic rollback, and the refusals (nothing changed)."""

from __future__ import annotations

import json

import pytest
from conftest import OK, commands, fail_result, mock_context, rollout_context
from invoke import Result
from invoke.exceptions import Exit

from difyops import release_sets, releases, rollout, units, workers
from difyops.config import load_settings
from difyops.tasks import prod

NEW_API, NEW_WEB = "difyops-standin/dify-api:v2", "difyops-standin/dify-web:v2"
AT_HEAD = Result("INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.\n0004_v2_message_tag_end_users (head)\n")
pytestmark = pytest.mark.usefixtures("fast_rollout")


def upgrade_context(env_path, **extra):
    return rollout_context(env_path, AT_HEAD, **extra)


def calls(c, needle):
    return [call for call in c.run.call_args_list if needle in call.args[0]]


def index_of(ran, *needles):
    return next(i for i, cmd in enumerate(ran) if all(n in cmd for n in needles))


def test_upgrade_migrates_with_new_image_starts_new_then_drains_old(env_path):
    c = upgrade_context(env_path)
    prod.upgrade(c, api_image=NEW_API, web_image=NEW_WEB, no_backup=True)
    ran = commands(c)
    migrate = index_of(ran, "-p unit-api-green", "--profile migrate run --rm --no-deps migrate")
    up_api = index_of(ran, "-p unit-api-green", "up -d --no-deps --wait", " api")
    up_web = index_of(ran, "-p unit-web-green", "up -d --no-deps --wait", " web")
    up_worker = index_of(ran, "-p unit-worker-green", "up -d --no-deps --wait", " worker")
    down_api = index_of(ran, "-p unit-api ", " down --remove-orphans")
    down_worker = index_of(ran, "-p unit-worker ", " down --remove-orphans")
    assert migrate < up_api < up_web < up_worker < down_api < down_worker
    # the old api drains with its own grace period (no --timeout)
    assert "--timeout" not in ran[down_api]
    # beat moves alone, old one stopped first; then every old worker stops taking tasks at once and
    # is given the longest workflow run the release allows (WORKFLOW_MAX_EXECUTION_TIME 1200 + 30)
    stop_beat = index_of(ran, "-p unit-worker ", " stop worker_beat")
    up_beat = index_of(ran, "-p unit-worker-green", "up -d --no-deps --wait", " worker_beat")
    sigterm = index_of(ran, "-p unit-worker ", " kill -s SIGTERM worker")
    assert up_worker < stop_beat < up_beat < sigterm < down_worker
    assert ran[down_worker].endswith("down --remove-orphans --timeout 1230")
    # the new images reach compose through its process environment
    migrate_call = calls(c, "--profile migrate")[0]
    assert migrate_call.kwargs["env"]["DIFY_API_IMAGE"] == NEW_API
    # before the migration: the storage volume to the new image's user; after it: the schema check
    owners = index_of(ran, "--profile init run --rm --no-deps init_permissions")
    check = index_of(ran, "-p unit-api-green", "-e MODE=job -e MIGRATION_ENABLED=false migrate db current")
    assert owners < migrate < check < up_api
    owner_call = calls(c, "init_permissions")[0]
    assert (owner_call.kwargs["env"]["DIFY_API_IMAGE"], owner_call.kwargs["env"]["DIFYOPS_STORAGE_OWNER"]) == \
        (NEW_API, "1001:1001")
    assert calls(c, "-p unit-web-green")[0].kwargs["env"]["DIFY_WEB_IMAGE"] == NEW_WEB
    settings = load_settings(c)
    assert releases.active_project(settings, "api") == "unit-api-green"
    assert "pending" not in releases.load_state(settings)
    text = env_path.read_text()
    assert f"DIFY_API_IMAGE={NEW_API}" in text and f"DIFY_WEB_IMAGE={NEW_WEB}" in text
    last = releases.history(settings)[-1]
    assert (last["action"], last["result"], last["to"]["DIFY_API_IMAGE"]) == ("upgrade", "ok", NEW_API)


def test_second_upgrade_goes_back_to_blue(env_path):
    c = upgrade_context(env_path)
    prod.upgrade(c, api_image=NEW_API, no_backup=True)
    c = upgrade_context(env_path)
    prod.upgrade(c, api_image="difyops-standin/dify-api:v3", no_backup=True)
    ran = commands(c)
    assert index_of(ran, "-p unit-api-blue", "up -d") < index_of(ran, "-p unit-api-green ", " down ")


def test_unhealthy_new_replica_rolls_back_and_leaves_old_serving(env_path):
    before = env_path.read_text()
    c = upgrade_context(env_path, **{r"-p unit-web-green up -d": fail_result("unhealthy")})
    with pytest.raises(Exit) as exc:
        prod.upgrade(c, api_image=NEW_API, web_image=NEW_WEB, no_backup=True)
    message = str(exc.value.message)
    assert message.count("\n") == 0 and "rolled back" in message and "still serving" in message
    ran = commands(c)
    assert [cmd for cmd in ran if "-p unit-api-green" in cmd and " down " in cmd]
    assert [cmd for cmd in ran if "-p unit-web-green" in cmd and " down " in cmd]
    assert not [cmd for cmd in ran if "-p unit-api " in cmd and " down " in cmd]  # old untouched
    assert not [cmd for cmd in ran if "worker-green" in cmd]  # never started
    settings = load_settings(c)
    assert releases.active_project(settings, "api") == "unit-api"
    assert env_path.read_text() == before
    assert releases.history(settings)[-1]["result"] == "rolled-back"


def test_a_migration_skipped_under_a_held_lock_stops_the_upgrade(env_path):
    # `flask upgrade-db` exits 0 and prints "Database migration skipped" when db_upgrade_lock is held.
    c = upgrade_context(env_path, **{
        r"run --rm --no-deps migrate": Result("Preparing database migration...\nDatabase migration skipped\n"),
        r"migrate db current": Result("0003_upload_files\n")})
    with pytest.raises(Exit) as exc:
        prod.upgrade(c, api_image=NEW_API, no_backup=True)
    message = str(exc.value.message)
    assert message.count("\n") == 0 and "0003_upload_files, not at its head" in message
    assert "Database migration skipped" in message and "db_upgrade_lock" in message and "still serving" in message
    assert not [cmd for cmd in commands(c) if " up " in cmd or " down " in cmd]
    assert releases.history(load_settings(c))[-1]["result"] == "failed"


def test_an_image_that_exits_0_on_a_failed_migration_stops_the_upgrade(env_path):
    # Dify before PR 32024: a failed migration printed its error and exited 0.
    c = upgrade_context(env_path, **{
        r"run --rm --no-deps migrate": Result("Database migration failed: relation already exists\n"),
        r"migrate db current": Result("0003_upload_files\n")})
    with pytest.raises(Exit, match="exited 0 without reaching it"):
        prod.upgrade(c, api_image=NEW_API, no_backup=True)
    assert not [cmd for cmd in commands(c) if " up " in cmd or " down " in cmd]


def test_a_schema_check_that_cannot_run_stops_the_upgrade(env_path):
    c = upgrade_context(env_path, **{r"migrate db current": fail_result("could not connect to server")})
    with pytest.raises(Exit, match=r"`flask db current` failed \(could not connect to server\)"):
        prod.upgrade(c, api_image=NEW_API, no_backup=True)


def test_the_stop_grace_of_a_worker_follows_the_longest_workflow_run(env_path):
    from difyops import clusters

    settings = load_settings(mock_context(env_path, {}))
    worker = clusters.CLUSTERS["worker"]
    assert units.cluster_env(settings, worker)["WORKER_STOP_GRACE_PERIOD"] == "1230s"
    assert "WORKER_STOP_GRACE_PERIOD" not in units.cluster_env(settings, clusters.CLUSTERS["api"])
    settings.env["WORKFLOW_MAX_EXECUTION_TIME"] = "3600"
    assert workers.drain_seconds(settings.env) == 3630
    settings.env["WORKER_STOP_GRACE_PERIOD"] = "90s"  # set in .env: it wins
    assert "WORKER_STOP_GRACE_PERIOD" not in units.cluster_env(settings, worker)


def test_a_bad_workflow_limit_is_refused_before_the_upgrade_changes_anything(env_path):
    with open(env_path, "a") as env:
        env.write("APP_MAX_EXECUTION_TIME=20m\n")
    c = upgrade_context(env_path)
    with pytest.raises(Exit, match="APP_MAX_EXECUTION_TIME='20m' is not a whole number of seconds"):
        prod.upgrade(c, api_image=NEW_API, no_backup=True)
    assert not [cmd for cmd in commands(c) if "compose" in cmd and (" run " in cmd or " up " in cmd)]


def test_scaling_workers_gives_storage_first_and_drains_removed_ones(env_path):
    c = mock_context(env_path, {r".": OK})
    prod.scale(c, "worker=3")
    ran = commands(c)
    owners = index_of(ran, "--profile init run --rm --no-deps init_permissions")
    scale = index_of(ran, "-p unit-worker ", "--scale worker=3")
    assert owners < scale and ran[scale].endswith("--timeout 1230 worker")


def test_failed_migration_moves_nothing(env_path):
    c = upgrade_context(env_path, **{r"migrate": fail_result("boom")})
    with pytest.raises(Exit, match="migration .* failed"):
        prod.upgrade(c, api_image=NEW_API, no_backup=True)
    assert not [cmd for cmd in commands(c) if " up " in cmd or " down " in cmd]


@pytest.mark.parametrize("kwargs, expected", [
    ({}, "say what to upgrade to"),
    ({"version": "1.13.3;rm"}, "is not an image tag"),
    ({"api_image": "bad ref"}, "is not an image reference"),
])
def test_upgrade_bad_arguments_are_refused_before_any_command(env_path, kwargs, expected):
    c = upgrade_context(env_path)
    with pytest.raises(Exit, match=expected):
        prod.upgrade(c, **kwargs)
    assert commands(c) == []


def test_upgrade_preflight_refusals_change_nothing(env_path, capsys):
    c = upgrade_context(env_path, **{r" ps (-a )?--format json": Result(""),
                                     r"docker image inspect": fail_result("No such image"),
                                     r"docker pull": fail_result("no registry")})
    with pytest.raises(Exit, match="pre-flight found"):
        prod.upgrade(c, api_image="difyops-local/nope:1", no_backup=True)
    err = capsys.readouterr().err
    assert "api is not running" in err and "difyops-local/nope:1 is not present" in err
    assert not [cmd for cmd in commands(c) if " up " in cmd or "migrate" in cmd or " down " in cmd]


def test_upgrade_to_what_runs_is_refused(env_path):
    c = upgrade_context(env_path)
    current = rollout.release_images(load_settings(c).env)
    with pytest.raises(Exit):
        prod.upgrade(c, api_image=current["DIFY_API_IMAGE"], web_image=current["DIFY_WEB_IMAGE"], no_backup=True)
    assert not [cmd for cmd in commands(c) if "migrate" in cmd]


def test_version_moves_dify_version_and_pinned_tags():
    assert releases.version_updates({}, "1.14.0", None, None) == {"DIFY_VERSION": "1.14.0"}
    pinned = {"DIFY_API_IMAGE": "mirror.example:5000/langgenius/dify-api:1.13.3"}
    assert releases.version_updates(pinned, "1.14.0", None, None) == {
        "DIFY_VERSION": "1.14.0", "DIFY_API_IMAGE": "mirror.example:5000/langgenius/dify-api:1.14.0"}


def test_upgrade_backs_up_first_through_the_backup_logic_unless_told_not_to(env_path, monkeypatch):
    from difyops import backup

    called = []
    monkeypatch.setattr(backup, "create_and_record", lambda c, settings, **kw: called.append(settings.stack))
    c = upgrade_context(env_path)
    prod.upgrade(c, api_image=NEW_API)
    assert called == ["unit"]
    c = upgrade_context(env_path)
    prod.upgrade(c, api_image="difyops-standin/dify-api:v3", no_backup=True)
    assert called == ["unit"]


def test_rollback_goes_to_the_release_before_the_last_upgrade(env_path):
    original = env_path.read_text()
    prod.upgrade(upgrade_context(env_path), api_image=NEW_API, web_image=NEW_WEB, no_backup=True)
    c = upgrade_context(env_path)
    prod.rollback(c)
    assert env_path.read_text().count("DIFY_API_IMAGE=difyops") == 0  # back to the empty (official) value
    assert [ln for ln in env_path.read_text().splitlines() if ln.startswith("DIFY_")] == \
        [ln for ln in original.splitlines() if ln.startswith("DIFY_")]
    assert index_of(commands(c), "-p unit-api-blue ", "--profile migrate") >= 0  # the other colour
    last = releases.history(load_settings(c))[-1]
    assert (last["action"], last["result"]) == ("rollback", "ok")


def test_rollback_past_a_migration_is_refused_naming_backup_restore(env_path):
    prod.upgrade(upgrade_context(env_path), api_image=NEW_API, no_backup=True)
    c = upgrade_context(env_path, **{r"migrate": fail_result("database has revision(s) 0004")})
    with pytest.raises(Exit) as exc:
        prod.rollback(c)
    assert "backup.restore" in str(exc.value.message) and "\n" not in str(exc.value.message)
    assert not [cmd for cmd in commands(c) if " up " in cmd or " down " in cmd]
    assert releases.history(load_settings(c))[-1]["result"] == "refused"


def test_rollback_without_history_is_refused(env_path):
    c = upgrade_context(env_path)
    with pytest.raises(Exit, match="no earlier release"):
        prod.rollback(c)
    assert commands(c) == []


def test_history_prints_entries(env_path, capsys):
    prod.upgrade(upgrade_context(env_path), api_image=NEW_API, no_backup=True)
    prod.history(mock_context(env_path, {}), json=True)
    entry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert entry["action"] == "upgrade" and entry["to"]["DIFY_API_IMAGE"] == NEW_API


def test_scale_runs_compose_scale_and_remembers(env_path):
    c = mock_context(env_path, {r".": OK})
    prod.scale(c, "api=2, web=3")
    ran = commands(c)
    assert any("-p unit-api " in cmd and "--scale api=2" in cmd and "--no-recreate" in cmd for cmd in ran)
    assert any("-p unit-web " in cmd and "--scale web=3" in cmd for cmd in ran)
    settings = load_settings(c)
    assert releases.replica_env(settings) == {"API_REPLICAS": "2", "WEB_REPLICAS": "3"}
    # a later deploy or restart keeps the counts: compose sees them in its environment
    from difyops import clusters

    assert clusters.compose_env(settings)["API_REPLICAS"] == "2"


@pytest.mark.parametrize("spec, expected", [
    ("", "say what to scale"), ("api", "is not KEY=N"), ("db=2", "is not KEY=N"),
    ("api=-1", "whole number"), ("worker=99", "whole number"), ("web=0", "at least one"),
])
def test_scale_refusals(env_path, spec, expected):
    c = mock_context(env_path, {r".": OK})
    with pytest.raises(Exit, match=expected):
        prod.scale(c, spec)
    assert commands(c) == []


def test_worker_groups_default_is_one_group_on_every_queue_of_the_release(env_path):
    settings = load_settings(mock_context(env_path, {}))
    assert [g.name for g in workers.groups(settings)] == ["worker"]
    assert workers.groups(settings)[0].env == {"CELERY_WORKER_QUEUES": release_sets.for_env(settings.env).queue_list()}


def test_the_main_worker_takes_every_release_queue_no_group_took(env_path):
    # Workflow runs (workflow_based_app_execution) and summaries (dataset_summary) must reach a
    # worker when a group takes the indexing queues.
    settings = load_settings(mock_context(env_path, {}))
    settings.env.update({"WORKER_GROUPS": "dataset",
                         "WORKER_DATASET_QUEUES": "dataset,priority_dataset,pipeline,priority_pipeline"})
    main, group = workers.groups(settings)
    assert set(main.queues) | set(group.queues) == set(release_sets.for_env(settings.env).queues)
    assert {"workflow_based_app_execution", "dataset_summary"} <= set(main.queues)
    assert not set(main.queues) & set(group.queues)


def test_a_worker_group_queue_the_release_does_not_have_is_refused(env_path):
    settings = load_settings(mock_context(env_path, {}))
    settings.env.update({"WORKER_GROUPS": "dataset", "WORKER_DATASET_QUEUES": "datset"})
    release = release_sets.for_env(settings.env).release
    with pytest.raises(workers.WorkerGroupError, match=f"'datset' is not a queue of Dify {release}"):
        workers.groups(settings)


def test_a_release_without_a_release_set_is_refused_with_one_line(env_path):
    settings = load_settings(mock_context(env_path, {}))
    settings.env["DIFY_VERSION"] = "9.9.9"
    with pytest.raises(workers.WorkerGroupError, match="Dify 9.9.9 has no release set"):
        workers.groups(settings)


def test_worker_groups_split_queues(env_path):
    settings = load_settings(mock_context(env_path, {}))
    settings.env.update({"WORKER_GROUPS": "dataset", "WORKER_DATASET_QUEUES": "dataset,pipeline",
                         "WORKER_DATASET_AUTO_SCALE": "true", "WORKER_DATASET_MAX_WORKERS": "4"})
    main, dataset = workers.groups(settings)
    assert "dataset" not in main.env["CELERY_WORKER_QUEUES"].split(",") and "mail" in main.queues
    assert dataset.env == {"CELERY_WORKER_QUEUES": "dataset,pipeline", "CELERY_AUTO_SCALE": "true",
                           "CELERY_MAX_WORKERS": "4", "WORKER_REPLICAS": "1"}
    settings.env.update({"WORKER_GROUPS": "dataset,mail", "WORKER_MAIL_QUEUES": "mail,dataset"})
    with pytest.raises(workers.WorkerGroupError, match="queue dataset is in worker groups"):
        workers.groups(settings)


def test_worker_group_is_its_own_project_with_its_env(env_path):
    with open(env_path, "a") as env:
        env.write("WORKER_GROUPS=dataset\nWORKER_DATASET_QUEUES=dataset\nWORKER_DATASET_AMOUNT=3\n")
    c = mock_context(env_path, {r".": OK})
    prod.scale(c, "worker_dataset=2")
    call = next(cl for cl in c.run.call_args_list if "--scale worker=2" in cl.args[0])
    assert "-p unit-worker_dataset " in call.args[0]
    assert call.kwargs["env"]["CELERY_WORKER_QUEUES"] == "dataset"
    assert call.kwargs["env"]["CELERY_WORKER_AMOUNT"] == "3" and call.kwargs["env"]["WORKER_REPLICAS"] == "2"


def test_new_release_that_docker_does_not_call_healthy_is_rolled_back_even_if_compose_said_so(env_path):
    # `up --wait` answered 0, yet the new api is still starting, or runs another image.
    starting = Result(json.dumps({"Name": "unit-api-green-api-1", "State": "running", "Health": "starting",
                                  "Image": NEW_API}))
    other = Result(json.dumps({"Name": "unit-api-green-api-1", "State": "running", "Health": "healthy",
                               "Image": "difyops-standin/dify-api:v1"}))
    for answer in (starting, other):
        c = upgrade_context(env_path, **{r"-p unit-api-green ps -a --format json": answer})
        with pytest.raises(Exit, match="did not become healthy"):
            prod.upgrade(c, api_image=NEW_API, no_backup=True)
        ran = commands(c)
        assert any("-p unit-api-green" in cmd and " down" in cmd for cmd in ran)  # the new release is removed
        assert not any("-p unit-api " in cmd and " down" in cmd for cmd in ran)  # the old one untouched
