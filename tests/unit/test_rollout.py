"""prod.upgrade, prod.rollback, prod.history and prod.scale through MockContext: the exact command
sequences, the automatic rollback, and the refusals (nothing changed)."""

from __future__ import annotations

import json

import pytest
from conftest import OK, commands, fail_result, mock_context
from invoke import Result
from invoke.exceptions import Exit

from difyops import releases, rollout, workers
from difyops.config import load_settings
from difyops.tasks import prod

NEW_API, NEW_WEB = "difyops-standin/dify-api:v2", "difyops-standin/dify-web:v2"
RUNNING = Result(json.dumps({"Service": "x", "State": "running", "Health": "healthy"}))


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr("difyops.probes.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(rollout, "DNS_SETTLE_SECONDS", 0)


def upgrade_context(env_path, **extra):
    results = {r"docker info": Result("26.1.5"), r"docker compose version": Result("2.26.1")}
    results.update(extra)
    results.setdefault(r" ps (-a )?--format json", RUNNING)
    results.setdefault(r"docker image inspect", Result("sha256:x"))
    results.setdefault(r"run --rm --no-deps migrate", OK)
    results.setdefault(r" up -d", OK)
    results.setdefault(r" down ", OK)
    return mock_context(env_path, results)


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
    # the old release drains with its own grace period (no --timeout), then beat joins the new one
    assert "--timeout" not in ran[down_api]
    assert ran[-1].endswith("up -d --no-deps --wait --wait-timeout 300") and "-p unit-worker-green" in ran[-1]
    # the new images reach compose through its process environment
    migrate_call = calls(c, "--profile migrate")[0]
    assert migrate_call.kwargs["env"]["DIFY_API_IMAGE"] == NEW_API
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


def test_backup_hook_is_called_when_present_and_skipped_otherwise(env_path, monkeypatch, capsys):
    from invoke import Collection, task

    from difyops.tasks import ns as root

    monkeypatch.delitem(root.collections, "backup", raising=False)
    c = upgrade_context(env_path)
    prod.upgrade(c, api_image=NEW_API)
    assert "skipped (no `backup.create` task" in capsys.readouterr().err
    called = []

    @task
    def create(ctx):
        called.append(ctx)

    backup_ns = Collection("backup", create)
    monkeypatch.setitem(root.collections, "backup", backup_ns)
    c = upgrade_context(env_path)
    prod.upgrade(c, api_image="difyops-standin/dify-api:v3")
    assert called == [c]


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


def test_worker_groups_default_is_one_group(env_path):
    settings = load_settings(mock_context(env_path, {}))
    assert [g.name for g in workers.groups(settings)] == ["worker"]
    assert workers.groups(settings)[0].env == {}


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
