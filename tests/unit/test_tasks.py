"""env and prod tasks run through invoke's MockContext: the exact commands, no Docker."""

from __future__ import annotations

import json
import stat

import pytest
from conftest import OK, commands, fail_result, mock_context, write_env
from invoke import Result
from invoke.exceptions import Exit

from difyops import clusters
from difyops.tasks import env as env_tasks
from difyops.tasks import prod

HEALTHY_DOCKER = {
    r"docker info": Result("26.1.5"),
    r"docker compose version": Result("2.26.1"),
}


def images_for(cluster_file_regex, refs):
    return {rf"docker compose -f \S*{cluster_file_regex}\.yml .* config --images": Result("\n".join(refs))}


@pytest.fixture(autouse=True)
def docker_on_path(monkeypatch):
    monkeypatch.setattr("difyops.probes.shutil.which", lambda name: f"/usr/bin/{name}")


def deploy_context(env_path, **extra):
    results = dict(HEALTHY_DOCKER)
    results.update(extra)
    results.setdefault(r"config --images", Result("img:1"))
    results.setdefault(r"docker image inspect", Result("sha256:x"))
    results.setdefault(r"docker (network|volume) inspect", fail_result())
    results.setdefault(r"docker (network|volume) create", OK)
    results.setdefault(r"run --rm --no-deps migrate", OK)
    results.setdefault(r" up -d (--no-deps )?--wait", OK)
    return mock_context(env_path, results)


def test_deploy_brings_clusters_up_in_order_with_migration_first(env_path):
    c = deploy_context(env_path)
    prod.deploy(c)
    ran = commands(c)
    ups = [cmd for cmd in ran if " up -d --wait" in cmd or "migrate" in cmd]
    order = [next(name for name in clusters.CLUSTERS if f"/compose/{name}.yml" in cmd) for cmd in ups]
    assert order == ["data", "support", "api", "api", "worker", "web", "gateway"]
    assert "--profile migrate run --rm --no-deps migrate" in ups[2]
    assert all("-p unit-" in cmd and "--env-file" in cmd for cmd in ups)
    created = [cmd for cmd in ran if " create " in cmd]
    assert "docker network create --driver bridge --label io.difyops.stack=unit --internal unit-backend" in created
    assert "docker network create --driver bridge --label io.difyops.stack=unit unit-app" in created
    assert "docker volume create --label io.difyops.stack=unit unit-pgdata" in created
    # compose sees the stack name and the env file through its process environment
    up_call = next(call for call in c.run.call_args_list if " up -d --wait" in call.args[0])
    assert up_call.kwargs["env"] == {"DIFYOPS_STACK": "unit", "DIFYOPS_ENV_FILE": str(env_path)}


def test_deploy_refuses_when_docker_is_down_and_changes_nothing(env_path):
    c = deploy_context(env_path, **{r"docker info": fail_result("Cannot connect")})
    with pytest.raises(Exit) as exc:
        prod.deploy(c)
    assert "the Docker daemon is not running" in str(exc.value.message)
    assert not [cmd for cmd in commands(c) if " up " in cmd or " create " in cmd]


def test_deploy_refuses_compose_v1_only(env_path):
    c = deploy_context(env_path, **{r"docker compose version": fail_result("unknown command")})
    with pytest.raises(Exit, match="Docker Compose v2 is missing"):
        prod.deploy(c)


def test_deploy_refuses_old_compose(env_path):
    c = deploy_context(env_path, **{r"docker compose version": Result("2.17.0")})
    with pytest.raises(Exit, match=r"2\.20\.3 or newer"):
        prod.deploy(c)


def test_deploy_refuses_placeholder_env(tmp_path, capsys):
    env_path = tmp_path / ".env"
    env_path.write_text("SECRET_KEY=!!!GENERATED!!!\n")
    c = deploy_context(env_path)
    with pytest.raises(Exit):
        prod.deploy(c)
    err = capsys.readouterr().err
    assert "SECRET_KEY is still the placeholder" in err
    assert not [cmd for cmd in commands(c) if " up " in cmd]


def test_deploy_reports_missing_images_that_cannot_be_pulled(env_path):
    c = deploy_context(env_path, **{
        r"docker image inspect": fail_result("No such image"),
        r"docker pull": fail_result("dial tcp: lookup registry-1.docker.io"),
    })
    with pytest.raises(Exit, match="image img:1 is not present and could not be pulled"):
        prod.deploy(c)
    assert not [cmd for cmd in commands(c) if " up " in cmd]


def test_unknown_cluster_is_refused(env_path):
    c = deploy_context(env_path)
    with pytest.raises(Exit, match="unknown cluster nope"):
        prod.up(c, "nope")
    assert commands(c) == []


def test_up_one_cluster_touches_only_it(env_path):
    c = deploy_context(env_path)
    prod.up(c, "web")
    ups = [cmd for cmd in commands(c) if " up -d" in cmd]
    assert len(ups) == 1 and "/compose/web.yml" in ups[0] and "-p unit-web" in ups[0]


def test_down_one_cluster_keeps_networks_and_volumes(env_path):
    c = mock_context(env_path, {r".": OK})
    prod.down(c, "api")
    ran = commands(c)
    assert len(ran) == 1 and "/compose/api.yml" in ran[0] and " down " in ran[0]


def test_down_all_removes_networks_and_volumes_only_when_asked(env_path):
    c = mock_context(env_path, {r".": OK})
    prod.down(c, "all")
    ran = commands(c)
    assert [cmd for cmd in ran if "network rm" in cmd] and not [cmd for cmd in ran if "volume rm" in cmd]
    c = mock_context(env_path, {r".": OK})
    prod.down(c, "all", volumes=True, yes=True)
    assert "docker volume rm unit-pgdata" in commands(c)


def test_down_volumes_with_a_cluster_is_refused(env_path):
    c = mock_context(env_path, {r".": OK})
    with pytest.raises(Exit, match="use it with `all`"):
        prod.down(c, "data", volumes=True, yes=True)
    assert commands(c) == []


def test_status_reads_compose_ps(env_path, capsys):
    records = [
        {"Service": "api", "State": "running", "Health": "healthy",
         "Publishers": []},
        {"Service": "api", "State": "running", "Health": "starting", "Publishers": []},
    ]
    gateway = [{"Service": "nginx", "State": "running", "Health": "healthy",
                "Publishers": [{"URL": "127.0.0.1", "PublishedPort": 8080, "TargetPort": 80}]}]
    c = mock_context(env_path, {
        r"api\.yml .* ps": Result("\n".join(json.dumps(r) for r in records)),
        r"gateway\.yml .* ps": Result(json.dumps(gateway)),
        r" ps ": Result(""),
    })
    prod.status(c)
    out = capsys.readouterr().out
    assert "healthy,starting" in out and "2/2" in out
    assert "127.0.0.1:8080->80" in out
    assert "absent" in out  # clusters that are not running say so


def test_env_init_writes_0600_and_never_overwrites(tmp_path):
    target = tmp_path / ".env"
    c = mock_context(target, {})
    env_tasks.init(c, set=["EXPOSE_NGINX_PORT=8081"])
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    first = target.read_text()
    assert "EXPOSE_NGINX_PORT=8081" in first
    with pytest.raises(Exit, match="already exists"):
        env_tasks.init(c)
    assert target.read_text() == first
    env_tasks.init(c, force=True)
    backups = list(tmp_path.glob(".env.bak.*"))
    assert len(backups) == 1 and backups[0].read_text() == first
    assert target.read_text() != first


def test_env_init_rejects_bad_set(tmp_path):
    c = mock_context(tmp_path / ".env", {})
    with pytest.raises(Exit, match="not KEY=VALUE"):
        env_tasks.init(c, set=["JUSTAKEY"])
    assert not (tmp_path / ".env").exists()


def test_env_check_lists_problems(tmp_path, capsys):
    target = write_env(tmp_path / ".env")
    text = target.read_text().replace("UPLOAD_FILE_SIZE_LIMIT=15", "UPLOAD_FILE_SIZE_LIMIT=500")
    target.write_text(text.replace("NGINX_CLIENT_MAX_BODY_SIZE=", "NGINX_CLIENT_MAX_BODY_SIZE=100M"))
    c = mock_context(target, {})
    with pytest.raises(Exit, match="1 problem"):
        env_tasks.check(c)
    assert "413" in capsys.readouterr().err


def test_env_check_passes_generated(env_path, capsys):
    env_tasks.check(mock_context(env_path, {}))
    assert ": ok" in capsys.readouterr().out


def test_up_worker_with_groups_gives_the_main_worker_the_other_queues(tmp_path):
    env_path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1", WORKER_GROUPS="dataset",
                         WORKER_DATASET_QUEUES="dataset,priority_dataset")
    c = deploy_context(env_path)
    prod.up(c, "worker")
    main = next(call for call in c.run.call_args_list
                if " up -d --wait" in call.args[0] and "-p unit-worker " in call.args[0])
    queues = main.kwargs["env"]["CELERY_WORKER_QUEUES"].split(",")
    assert "mail" in queues and "dataset" not in queues and "priority_dataset" not in queues
