"""Development tasks through invoke's MockContext (the exact commands, no Docker), and the pure
parts of difyops.dev: settings resolution, env-file merging, app commands, the compose file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import OK, commands, fail_result
from invoke import Config, MockContext, Result
from invoke.exceptions import Exit

from difyops import dev, dotenv, envfile, release_sets
from difyops.errors import DifyopsError
from difyops.devconfig import MIDDLEWARE_ENV_EXAMPLE, MIDDLEWARE_FILE, load_dev
from difyops.tasks import dev as dev_tasks
from difyops.tasks import middleware

HEALTHY_DOCKER = {r"docker info": Result("26.1.5"), r"docker compose version": Result("2.26.1")}


def ps_json(*services, health="healthy"):
    return Result("\n".join(json.dumps({"Service": s, "State": "running", "Health": health, "Publishers": []})
                            for s in services))


@pytest.fixture(autouse=True)
def tools_on_path(monkeypatch):
    monkeypatch.setattr("difyops.probes.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr("difyops.dev.checkout.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr("difyops.probes.port_in_use", lambda host, port: False)


@pytest.fixture
def state(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    dotenv.write_private(folder / "middleware.env", envfile.generate(MIDDLEWARE_ENV_EXAMPLE.read_text(), {}))
    return folder


@pytest.fixture
def checkout(tmp_path):
    src = tmp_path / "dify"
    (src / "api").mkdir(parents=True)
    (src / "web").mkdir()
    (src / "api" / "pyproject.toml").write_text('[project]\nname="x"\nrequires-python=">=3.11,<3.13"\n')
    (src / "api" / ".env.example").write_text("# db\nDB_HOST=localhost\nDB_PASSWORD=difyai123456\nSECRET_KEY=\nLOG_LEVEL=INFO\n")
    (src / "web" / "package.json").write_text('{"engines": {"node": ">=22.11.0"}}')
    (src / "web" / ".env.example").write_text("NEXT_PUBLIC_API_PREFIX=http://localhost:5001/console/api\n")
    return src


def ctx(state, results, src=None, stack="unit"):
    overrides = {"difyops": {"dev_dir": str(state), "dev_stack": stack, "dify_src": str(src) if src else None,
                             "dify_repo": "/nonexistent/dify.git"}}
    table = {re.compile(".*?" + pattern): result for pattern, result in results.items()}
    return MockContext(config=Config(overrides=overrides), run=table, repeat=True)


def test_middleware_start_runs_compose_up_wait_on_the_dev_file(state):
    c = ctx(state, {**HEALTHY_DOCKER, r"ps -a --format json": Result(""), r" up -d --wait": OK})
    middleware.start(c)
    up = next(cmd for cmd in commands(c) if " up -d --wait" in cmd)
    assert up == (f"docker compose -f {MIDDLEWARE_FILE} --env-file {state / 'middleware.env'} -p unit-middleware "
                  "up -d --wait --wait-timeout 300 --remove-orphans")


def test_middleware_start_adds_viewer_and_vector_store_profiles(state):
    c = ctx(state, {**HEALTHY_DOCKER, r"ps -a --format json": Result(""), r" up -d --wait": OK})
    middleware.start(c, viewer=True, set=["VECTOR_STORE=weaviate"])
    up = next(cmd for cmd in commands(c) if " up -d --wait" in cmd)
    assert "--profile weaviate --profile viewer up -d --wait" in up
    assert list(state.glob("middleware.env.bak.*")), "the changed middleware.env was backed up"


def test_middleware_start_refuses_a_taken_port_and_starts_nothing(state, monkeypatch):
    monkeypatch.setattr("difyops.probes.port_in_use", lambda host, port: port == 6379)
    c = ctx(state, {**HEALTHY_DOCKER, r"ps -a --format json": Result("")})
    with pytest.raises(Exit) as exc:
        middleware.start(c)
    assert "port 6379 on 127.0.0.1 is already in use" in str(exc.value.message)
    assert not [cmd for cmd in commands(c) if " up " in cmd]


def test_middleware_stop_includes_every_profile_and_removes_anonymous_volumes_only(state):
    c = ctx(state, {r" stop ": OK, r" rm ": OK, r" down ": OK})
    middleware.stop(c)
    base = (f"docker compose -f {MIDDLEWARE_FILE} --env-file {state / 'middleware.env'} -p "
            "unit-middleware --profile weaviate --profile qdrant --profile viewer ")
    assert commands(c) == [base + "stop --timeout 20", base + "rm --force --volumes",
                           base + "down --remove-orphans --timeout 20"]


def test_middleware_stop_volumes_is_one_down_volumes(state):
    c = ctx(state, {r" down ": OK})
    middleware.stop(c, volumes=True, yes=True)
    assert [cmd.split(" --profile viewer ")[1] for cmd in commands(c)] == [
        "down --remove-orphans --timeout 20 --volumes"]


def test_dev_db_runs_psql_in_the_container(state):
    c = ctx(state, {r"ps -a --format json": ps_json("db_postgres", "redis"), r" exec ": OK})
    dev_tasks.db(c, command="select 1")
    assert commands(c)[-1].endswith("exec -T db_postgres psql -U postgres -d dify -v ON_ERROR_STOP=1 -c "
                                    "'select 1'")


def test_dev_redis_runs_redis_cli(state):
    c = ctx(state, {r"ps -a --format json": ps_json("db_postgres", "redis"), r" exec ": OK})
    dev_tasks.redis(c, command="DBSIZE")
    assert commands(c)[-1].endswith("exec -T redis redis-cli DBSIZE")


def test_dev_db_refuses_when_middleware_is_down(state):
    c = ctx(state, {r"ps -a --format json": ps_json("db_postgres", "redis", health="starting")})
    with pytest.raises(Exit) as exc:
        dev_tasks.db(c)
    assert "middleware is not running (db_postgres running/starting" in str(exc.value.message)


def test_init_without_source_fails_offline_and_changes_nothing(state, tmp_path):
    (state / "middleware.env").unlink()
    c = ctx(state, {r"git clone": fail_result("fatal: repository '/nonexistent/dify.git' does not exist")})
    with pytest.raises(Exit) as exc:
        dev_tasks.init(c)
    assert "no Dify source: cloning /nonexistent/dify.git failed" in str(exc.value.message)
    assert "set DIFY_SRC=" in str(exc.value.message)
    assert not (state / "middleware.env").exists() and not (state / "dify").exists()


def test_init_refuses_missing_uv(state, checkout, monkeypatch):
    monkeypatch.setattr("difyops.dev.checkout.shutil.which", lambda name: None if name == "uv" else f"/usr/bin/{name}")
    c = ctx(state, {r"node --version": Result("v22.12.0")}, src=checkout)
    with pytest.raises(Exit) as exc:
        dev_tasks.init(c)
    assert "uv is not installed" in str(exc.value.message)
    assert not (checkout / "api" / ".env").exists()


def test_init_refuses_old_node_from_package_json(state, checkout):
    c = ctx(state, {r"uv python find": Result("/usr/bin/python3.12"), r"node --version": Result("v20.20.2")},
            src=checkout)
    with pytest.raises(Exit) as exc:
        dev_tasks.init(c)
    assert "Node v20.20.2 is too old: web/package.json needs Node 22" in str(exc.value.message)


def test_init_order_env_files_middleware_install_migrate(state, checkout):
    c = ctx(state, {**HEALTHY_DOCKER, r"uv python find": Result("/usr/bin/python3.12"),
                    r"node --version": Result("v22.12.0"), r"ps -a --format json": ps_json("db_postgres", "redis"),
                    r" up -d --wait": OK, r"uv sync": OK, r"pnpm install": OK, r"flask db upgrade": OK},
            src=checkout)
    dev_tasks.init(c)
    ran = commands(c)
    steps = [next(i for i, cmd in enumerate(ran) if needle in cmd)
             for needle in (" up -d --wait", "uv sync", "pnpm install", "uv run flask db upgrade")]
    assert steps == sorted(steps)
    assert "uv sync" in ran and "pnpm install" in ran
    values = envfile.read(checkout / "api" / ".env")
    assert values["DB_HOST"] == "127.0.0.1" and values["SECRET_KEY"] and values["DB_PASSWORD"] != "difyai123456"
    assert envfile.read(state / "middleware.env")["DIFY_SRC"] == str(checkout)


def test_merge_keeps_user_values_fills_public_secret_and_backs_up(tmp_path):
    example = tmp_path / ".env.example"
    example.write_text("SECRET_KEY=\nDB_HOST=localhost\nLOG_LEVEL=INFO\nNEW_IN_EXAMPLE=1\n")
    target = tmp_path / ".env"
    target.write_text("# mine\nSECRET_KEY=difyai123456\nDB_HOST=db.example\nLOG_LEVEL=DEBUG\n")
    result = dev.merge_app_env(target, example, {"SECRET_KEY": "s" * 64, "DB_HOST": "127.0.0.1", "DB_PORT": "5432"})
    values = envfile.read(target)
    assert values["LOG_LEVEL"] == "DEBUG" and values["DB_HOST"] == "db.example"
    assert values["SECRET_KEY"] == "s" * 64  # a public default is not a user's choice
    assert values["NEW_IN_EXAMPLE"] == "1" and values["DB_PORT"] == "5432"
    assert result.differing == ("DB_HOST",) and result.backup and result.backup.exists()
    assert "# mine" in target.read_text()
    dev.merge_app_env(target, example, {"DB_HOST": "127.0.0.1"}, update_connection=True)
    assert envfile.read(target)["DB_HOST"] == "127.0.0.1"


def test_merge_creates_from_example_with_mode_0600(tmp_path):
    example = tmp_path / ".env.example"
    example.write_text("# comment kept\nDB_HOST=localhost\n")
    result = dev.merge_app_env(tmp_path / ".env", example, {"DB_HOST": "127.0.0.1", "EXTRA": "x"})
    assert result.created and (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".env").read_text().startswith("# comment kept\nDB_HOST=127.0.0.1\n")


def test_source_resolution_order(tmp_path, state):
    dotenv.write_private(state / "middleware.env", "DIFY_SRC=/from/file\n")
    c = ctx(state, {})
    assert load_dev(c, environ={}).dify_src == Path("/from/file")
    assert load_dev(c, environ={"DIFY_SRC": "/from/env"}).dify_src == Path("/from/env")
    c2 = ctx(state, {}, src="/from/config")
    assert load_dev(c2, environ={"DIFY_SRC": "/from/env"}).dify_src == Path("/from/config")
    assert load_dev(c2, src="/from/flag").dify_src == Path("/from/flag")


def test_app_commands_bind_localhost_and_use_difys_queues(tmp_path, state):
    assert dev.api_argv(5001) == ["uv", "run", "flask", "run", "--host", "127.0.0.1", "--port", "5001", "--debug"]
    queues = dev.celery_queues(load_dev(ctx(state, {})))
    worker = dev.worker_argv(tmp_path, queues)
    assert worker[1:3] == ["-m", "watchfiles"] and worker[-1] == str(tmp_path)
    assert f"uv run celery -A app.celery worker -P gevent -c 1 --loglevel INFO -Q {queues}" in worker[-2]
    assert dev.worker_argv(tmp_path, queues, reload=False)[:3] == ["uv", "run", "celery"]
    assert dev.web_argv(3000) == ["pnpm", "dev", "--port", "3000", "--hostname", "127.0.0.1"]


def test_start_worker_consumes_every_queue_of_the_release(tmp_path, state):
    # Workflow runs (workflow_based_app_execution, Dify 1.13) and summaries (dataset_summary) wait
    # forever on a queue the development worker does not consume.
    queues = dev.celery_queues(load_dev(ctx(state, {}))).split(",")
    assert tuple(queues) == release_sets.default().queues
    assert "workflow_based_app_execution" in queues and "dataset_summary" in queues


def test_start_worker_refuses_a_release_without_a_release_set(tmp_path, state):
    (state / "middleware.env").write_text("DIFY_VERSION=0.9.0\n")
    with pytest.raises(DifyopsError, match="Dify 0.9.0 has no release set"):
        dev.celery_queues(load_dev(ctx(state, {})))


def test_procfile_runs_our_foreground_tasks(tmp_path, state):
    ds = load_dev(ctx(state, {}))
    text = dev.procfile(ds, tmp_path, 5001, 3000, "dataset")
    names = [line.split(":", 1)[0] for line in text.splitlines()]
    assert names == ["api", "worker", "web"]
    assert "dev.start-api --src" in text and "--port 5001" in text and "--queues dataset" in text


def test_dev_compose_file_binds_every_port_to_localhost_and_has_healthchecks():
    doc = yaml.safe_load(MIDDLEWARE_FILE.read_text())
    for name, service in doc["services"].items():
        assert "healthcheck" in service, name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert doc["networks"]["ssrf"]["internal"] is True
    assert doc["services"]["sandbox"]["networks"] == ["ssrf"]
    assert "host.docker.internal:host-gateway" in doc["services"]["plugin_daemon"]["extra_hosts"]
    assert doc["services"]["viewer"]["profiles"] == ["viewer"]


@pytest.mark.skipif(shutil.which("docker") is None and os.environ.get("CI") != "true",
                    reason="no docker CLI here: `nox -s dev` validates the file (under CI=true this fails instead)")
def test_dev_compose_file_resolves(tmp_path):
    env = tmp_path / "middleware.env"
    env.write_text(envfile.generate(MIDDLEWARE_ENV_EXAMPLE.read_text(), {}))
    result = subprocess.run(["docker", "compose", "-f", str(MIDDLEWARE_FILE), "--env-file", str(env),
                             "--profile", "viewer", "--profile", "weaviate", "config", "--quiet"],
                            capture_output=True, text=True)
    if result.returncode != 0 and "unknown" in result.stderr and "compose" in result.stderr:
        pytest.skip("docker compose v2 is not installed here: `nox -s dev` validates the file")
    assert result.returncode == 0, result.stderr


def test_every_dev_task_explains_itself():
    import inspect

    from difyops.tasks import api as api_tasks
    from difyops.tasks import web as web_tasks

    for collection in (dev_tasks.ns, middleware.ns, api_tasks.ns, web_tasks.ns):
        for name in collection.task_names:
            task = collection[name]
            first_line = inspect.getdoc(task.body).splitlines()[0]
            assert first_line and len(first_line) <= 80, name
            for param in inspect.signature(task.body).parameters:
                if param != "c":
                    assert task.help.get(param) or task.help.get(param.strip("_")), f"{name}: --{param}"
    assert dev_tasks.ns.default == "up" and middleware.ns.default == "start"


def test_container_access_wraps_the_api_in_the_relay(tmp_path):
    argv = dev.relay_argv("172.17.0.1", 5001, dev.api_argv(5001))
    assert argv[1].endswith("difyops/devrelay.py")
    assert argv[2:7] == ["--listen", "172.17.0.1:5001", "--to", "127.0.0.1:5001", "--"]
    assert argv[7:] == dev.api_argv(5001)
    c = MockContext(run={re.compile(".*network inspect bridge"): Result("172.17.0.1\n")}, repeat=True)
    assert dev.bridge_gateway(c) == "172.17.0.1"
    c = MockContext(run={re.compile(".*network inspect bridge"): fail_result()}, repeat=True)
    assert dev.bridge_gateway(c) is None
