"""env and prod tasks run through invoke's MockContext: the exact commands, no Docker."""

from __future__ import annotations

import json
import stat

import pytest
from conftest import OK, commands, fail_result, mock_context, write_env
from invoke import Result
from invoke.exceptions import Exit

from difyops import clusters, release_sets
from difyops.config import load_settings
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
    results.setdefault(r"run --rm --no-deps init_permissions", Result("storage volume: 2 entries given to 1001:1001"))
    results.setdefault(r"run --rm --no-deps migrate", OK)
    results.setdefault(r"migrate db current", Result("0003_upload_files (head)\n"))
    results.setdefault(r" up -d (--no-deps )?--wait", OK)
    return mock_context(env_path, results)


def test_deploy_brings_clusters_up_in_order_with_migration_first(env_path):
    c = deploy_context(env_path)
    prod.deploy(c)
    ran = commands(c)
    ups = [cmd for cmd in ran if " up -d --wait" in cmd or "migrate" in cmd]
    order = [next(name for name in clusters.CLUSTERS if f"/compose/{name}.yml" in cmd) for cmd in ups]
    # api: the migration job, the check that the schema is at the image's head, then the api
    assert order == ["data", "support", "api", "api", "api", "worker", "web", "gateway"]
    assert "--profile migrate run --rm --no-deps migrate" in ups[2]
    assert ups[3].endswith("--profile migrate run --rm --no-deps -e MODE=job -e MIGRATION_ENABLED=false "
                           "migrate db current")
    assert all("-p unit-" in cmd and "--env-file" in cmd for cmd in ups)
    created = [cmd for cmd in ran if " create " in cmd]
    assert "docker network create --driver bridge --label io.difyops.stack=unit --internal unit-backend" in created
    assert "docker network create --driver bridge --label io.difyops.stack=unit unit-app" in created
    assert "docker volume create --label io.difyops.stack=unit unit-pgdata" in created
    # compose sees the stack name, the env file and the release's images (for what .env leaves
    # empty) through its process environment
    up_call = next(call for call in c.run.call_args_list if " up -d --wait" in call.args[0])
    release = clusters.release_env(load_settings(None, env_path))
    assert release["DIFY_API_IMAGE"] == release_sets.default().image("api").ref
    assert up_call.kwargs["env"] == {**release, "DIFYOPS_STACK": "unit", "DIFYOPS_ENV_FILE": str(env_path),
                                     "DIFYOPS_DIFY_ENV_FILE": str(env_path.parent / "var" / "unit" / "dify.env")}
    worker_up = next(call for call in c.run.call_args_list if "/compose/worker.yml" in call.args[0]
                     and " up -d --wait" in call.args[0])
    assert worker_up.kwargs["env"]["WORKER_STOP_GRACE_PERIOD"] == "1230s"


def test_deploy_gives_the_storage_volume_to_difys_user_before_api_and_worker_start(env_path):
    # Dify's api, worker and beat run as uid 1001 (since 1.10): a new volume is root's.
    c = deploy_context(env_path)
    prod.deploy(c)
    ran = commands(c)
    owners = [i for i, cmd in enumerate(ran) if "--profile init run --rm --no-deps init_permissions" in cmd]
    migrate = next(i for i, cmd in enumerate(ran) if "run --rm --no-deps migrate" in cmd)
    api_up = next(i for i, cmd in enumerate(ran) if "/compose/api.yml" in cmd and " up -d --wait" in cmd)
    worker_up = next(i for i, cmd in enumerate(ran) if "/compose/worker.yml" in cmd and " up -d --wait" in cmd)
    assert len(owners) == 2 and owners[0] < migrate < api_up < owners[1] < worker_up
    call = next(call for call in c.run.call_args_list if "init_permissions" in call.args[0])
    assert call.kwargs["env"]["DIFYOPS_STORAGE_OWNER"] == "1001:1001"
    assert all("init_permissions" not in cmd for cmd in ran if " up " in cmd)  # never left running


def test_restart_of_the_worker_cluster_gives_the_storage_volume_too(env_path):
    c = deploy_context(env_path)
    prod.restart(c, "worker")
    ran = commands(c)
    owners = next(i for i, cmd in enumerate(ran) if "init_permissions" in cmd)
    assert owners < next(i for i, cmd in enumerate(ran) if " up -d --wait" in cmd and "--force-recreate" in cmd)


def test_a_storage_volume_that_cannot_be_given_starts_nothing(env_path):
    c = deploy_context(env_path, **{r"init_permissions": fail_result("chown: Operation not permitted")})
    with pytest.raises(Exit, match="could not give the storage volume to uid:gid 1001:1001"):
        prod.deploy(c)
    assert not [cmd for cmd in commands(c) if "/compose/api.yml" in cmd and " up " in cmd]


def test_deploy_stops_when_the_migration_did_not_reach_the_head(env_path):
    c = deploy_context(env_path, **{r"run --rm --no-deps migrate": Result("Database migration skipped\n"),
                                    r"migrate db current": Result("")})
    with pytest.raises(Exit) as exc:
        prod.deploy(c)
    message = str(exc.value.message)
    assert "at no revision, not at its head" in message and "db_upgrade_lock" in message
    assert message.endswith("nothing after it was started")
    assert not [cmd for cmd in commands(c) if "/compose/api.yml" in cmd and " up " in cmd]


def test_deploy_refuses_a_dify_version_without_a_release_set(tmp_path):
    env_path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1", DIFY_VERSION="1.99.0")
    c = deploy_context(env_path)
    with pytest.raises(Exit, match="Dify 1.99.0 has no release set"):
        prod.deploy(c)
    assert not [cmd for cmd in commands(c) if " create " in cmd or " up " in cmd]


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


def test_status_json_is_one_object_per_service(env_path, capsys):
    api = [{"Service": "api", "State": "running", "Health": "healthy", "Publishers": []},
           {"Service": "api", "State": "exited", "Health": "", "Publishers": []}]
    gateway = [{"Service": "nginx", "State": "running", "Health": "healthy",
                "Publishers": [{"URL": "127.0.0.1", "PublishedPort": 8080, "TargetPort": 80}]}]
    c = mock_context(env_path, {r"api\.yml .* ps -a --format json$": Result("\n".join(json.dumps(r) for r in api)),
                                r"gateway\.yml .* ps -a --format json$": Result(json.dumps(gateway))})
    prod.status(c, clusters="api,gateway", json=True)
    rows = json.loads(capsys.readouterr().out)
    # Each row names the release set; the release's own services (api_websocket) have rows too.
    release = f"dify-{release_sets.default().release}"
    assert rows == [
        {"cluster": "api", "service": "api", "state": "exited,running", "health": "healthy",
         "replicas": {"running": 1, "total": 2}, "ports": [], "release_set": release},
        {"cluster": "api", "service": "api_websocket", "state": "absent", "health": "-",
         "replicas": {"running": 0, "total": 0}, "ports": [], "release_set": release},
        {"cluster": "gateway", "service": "nginx", "state": "running", "health": "healthy",
         "replicas": {"running": 1, "total": 1}, "ports": ["127.0.0.1:8080->80"], "release_set": release},
    ]


def test_status_json_on_swarm_is_one_object_per_service(env_path, capsys):
    c = mock_context(env_path, {
        r"^docker --context m service ls --filter label=com.docker.stack.namespace=unit-api ": Result("unit-api_api\t1/2\n"),
        r"^docker --context m service inspect --format .* unit-api_api$": Result("updating\n")})
    prod.status(c, clusters="api", target="swarm", context="m", json=True)
    assert json.loads(capsys.readouterr().out) == [
        {"cluster": "api", "service": "api", "replicas": {"running": 1, "desired": 2}, "update": "updating",
         "release_set": f"dify-{release_sets.default().release}"}]


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
