"""What each Dify container is given (issue 10): Dify's variables without difyops' own for the api,
worker and beat; Dify's public URLs from one origin (env.init --url, env.check); the opt-in plugin
debugging port; and the stand-in plugin daemon's copy of 0.5.3's configuration rules."""

from __future__ import annotations

import importlib.util
import json
import shutil
import stat
import subprocess
import sys

import pytest
from conftest import mock_context, write_env
from invoke.exceptions import Exit

from difyops import clusters, envfile, paths
from difyops.config import load_settings
from difyops.tasks import env as env_tasks

EXAMPLE = paths.ENV_EXAMPLE.read_text()
EXAMPLE_KEYS = list(envfile.values_of(EXAMPLE))


def _daemon_config():
    path = paths.ROOT / "tests" / "standin" / "plugin_daemon" / "daemon_config.py"
    spec = importlib.util.spec_from_file_location("standin_daemon_config", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


daemon_config = _daemon_config()


# ---------------------------------------------------------------- difyops' own variables
@pytest.mark.parametrize("key", ["GRAFANA_ADMIN_PASSWORD", "PATRONI_REPLICATION_PASSWORD", "PATRONI_RESTAPI_PASSWORD",
                                 "DIFYOPS_BACKUP_RESTIC_PASSWORD", "DIFYOPS_BACKUP_AGE_IDENTITY", "DIFYOPS_PUBLIC_URL",
                                 "ALERTMANAGER_WEBHOOK_URL", "DIFY_API_IMAGE", "API_CPU_LIMIT", "WORKER_GROUPS",
                                 "WORKER_DATASET_QUEUES", "API_REPLICAS", "SWARM_ENDPOINT_MODE", "RESTIC_PASSWORD"])
def test_difyops_settings_are_ops_variables(key):
    assert envfile.is_ops_variable(key)


@pytest.mark.parametrize("key", ["SECRET_KEY", "DB_PASSWORD", "REDIS_SENTINEL_PASSWORD", "WEAVIATE_API_KEY",
                                 "SERVER_WORKER_AMOUNT", "CELERY_WORKER_AMOUNT", "API_SENTRY_DSN", "WEB_SENTRY_DSN",
                                 "WEB_API_CORS_ALLOW_ORIGINS", "API_TOOL_DEFAULT_READ_TIMEOUT", "TENCENT_VECTOR_DB_REPLICAS",
                                 "DIFY_BIND_ADDRESS", "DIFY_PORT", "FILES_URL", "LOOP_NODE_MAX_COUNT", "NGINX_PORT",
                                 "PLUGIN_DAEMON_KEY", "SSRF_PROXY_ALLOW_PRIVATE_IPS"])
def test_dify_variables_are_not_ops_variables(key):
    assert not envfile.is_ops_variable(key)


def test_every_secret_env_init_generates_is_either_dify_or_ops_and_ops_ones_never_reach_dify():
    text = envfile.generate(EXAMPLE, {"DIFYOPS_STACK": "u", "MY_DIFY_SETTING": "kept"})
    env = envfile.values_of(text)
    rendered = envfile.values_of(envfile.dify_env_text(env))
    ops = {k for k in env if envfile.is_ops_variable(k)}
    assert {"GRAFANA_ADMIN_PASSWORD", "PATRONI_REPLICATION_PASSWORD", "PATRONI_RESTAPI_PASSWORD"} <= ops
    assert not ops & set(rendered)
    # Every Dify variable, a user's own included, but the secrets only other services read (the
    # agent backend's key, the local sandbox's token, the sandbox's key: they get them by name).
    foreign = envfile.foreign_secrets()
    assert {"DIFY_AGENT_SERVER_SECRET_KEY", "DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN", "SANDBOX_API_KEY"} <= foreign
    assert "PLUGIN_DAEMON_KEY" not in foreign and "CODE_EXECUTION_API_KEY" in rendered
    assert set(rendered) == set(env) - ops - foreign
    assert rendered["MY_DIFY_SETTING"] == "kept" and rendered["SECRET_KEY"] == env["SECRET_KEY"]
    for key in ops:
        if len(env[key]) >= 16:
            assert env[key] not in envfile.dify_env_text(env), key


def test_dify_env_file_is_rendered_private_and_follows_env(tmp_path):
    path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit")
    settings = load_settings(None, path)
    rendered = clusters.dify_env_file(settings)
    assert rendered == tmp_path / "var" / "unit" / "dify.env"
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    assert "GRAFANA_ADMIN_PASSWORD" not in rendered.read_text() and "SECRET_KEY=" in rendered.read_text()
    assert clusters.compose_env(settings)["DIFYOPS_DIFY_ENV_FILE"] == str(rendered)
    path.write_text(path.read_text() + "NEW_DIFY_THING=1\n")
    clusters.compose_env(load_settings(None, path))
    assert "NEW_DIFY_THING=1" in rendered.read_text()


def test_api_and_worker_read_the_rendered_file_and_nothing_reads_the_whole_env():
    for name in ("api", "worker"):
        text = (paths.COMPOSE_DIR / f"{name}.yml").read_text()
        assert "env_file: ${DIFYOPS_DIFY_ENV_FILE:?" in text
    for name in ("data", "support", "api", "worker", "web", "gateway"):
        assert "DIFYOPS_ENV_FILE" not in (paths.COMPOSE_DIR / f"{name}.yml").read_text().replace(
            "DIFYOPS_DIFY_ENV_FILE", ""), name


# ---------------------------------------------------------------- public URLs
def test_one_origin_gives_every_public_url():
    values = envfile.public_url_values("https://Dify.Example.com/")
    assert values["DIFYOPS_PUBLIC_URL"] == "https://dify.example.com"
    for key in envfile.PUBLIC_URL_KEYS:
        assert values[key] == "https://dify.example.com"
    assert values["ENDPOINT_URL_TEMPLATE"] == "https://dify.example.com/e/{hook_id}"
    assert values["NEXT_PUBLIC_SOCKET_URL"] == "wss://dify.example.com"
    assert envfile.public_url_values("http://10.0.0.5:8080")["NEXT_PUBLIC_SOCKET_URL"] == "ws://10.0.0.5:8080"
    assert envfile.public_url_values("https://dify.example.com:443")["FILES_URL"] == "https://dify.example.com"


@pytest.mark.parametrize("bad, why", [
    ("dify.example.com", "not an http(s) origin"), ("ftp://dify.example.com", "not an http(s) origin"),
    ("https://dify.example.com/dify", "path, query or fragment"), ("https://dify.example.com/?a=1", "path, query"),
    ("https://dify.example.com#x", "fragment"), ("https://user:pw@dify.example.com", "user name or password"),
    ("https://dify.example.com:99999", "not a URL"), ("", "not an http(s) origin"),
])
def test_bad_origins_are_refused_with_the_reason(bad, why):
    with pytest.raises(ValueError, match="^.*" + why.split()[0]):
        envfile.public_origin(bad)


def test_env_check_flags_urls_that_disagree_with_the_origin():
    env = envfile.values_of(envfile.generate(EXAMPLE, envfile.public_url_values("https://dify.example.com")))
    assert envfile.check(env) == []
    env["FILES_URL"] = "https://files.other.example"
    env["TRIGGER_URL"] = ""
    env["ENDPOINT_URL_TEMPLATE"] = "https://dify.example.com/e/"
    problems = envfile.check(env)
    joined = "\n".join(problems)
    assert "FILES_URL=https://files.other.example disagrees with DIFYOPS_PUBLIC_URL=https://dify.example.com" in joined
    assert "TRIGGER_URL is empty but DIFYOPS_PUBLIC_URL" in joined and "set TRIGGER_URL=https://dify.example.com" in joined
    assert "ENDPOINT_URL_TEMPLATE='https://dify.example.com/e/' lacks {hook_id}" in joined
    assert len(problems) == 4  # the template lacks {hook_id} and disagrees: two lines, one each


def test_env_check_without_an_origin_checks_only_the_form():
    env = envfile.values_of(envfile.generate(EXAMPLE))
    assert envfile.url_problems(env) == []
    env.update(FILES_URL="dify.example.com", NEXT_PUBLIC_SOCKET_URL="https://dify.example.com")
    problems = envfile.url_problems(env)
    assert problems == ["FILES_URL='dify.example.com' is not an http(s) URL such as https://dify.example.com",
                        "NEXT_PUBLIC_SOCKET_URL='https://dify.example.com' is not a ws:// or wss:// URL"]


def test_env_init_url_fills_the_urls(tmp_path):
    target = tmp_path / ".env"
    c = mock_context(target, {})
    env_tasks.init(c, url="https://dify.example.com")
    env = envfile.read(target)
    assert env["DIFYOPS_PUBLIC_URL"] == env["FILES_URL"] == env["APP_WEB_URL"] == "https://dify.example.com"
    assert env["ENDPOINT_URL_TEMPLATE"] == "https://dify.example.com/e/{hook_id}"
    assert envfile.check(env) == []


def test_env_init_set_wins_over_url(tmp_path):
    target = tmp_path / ".env"
    env_tasks.init(mock_context(target, {}), url="https://dify.example.com", set=["SERVICE_API_URL=https://api.x.test"])
    assert envfile.read(target)["SERVICE_API_URL"] == "https://api.x.test"


@pytest.mark.parametrize("bad", ["dify.example.com", "https://dify.example.com/path", "https://dify.example.com?q=1"])
def test_env_init_refuses_a_bad_url_with_one_line_and_writes_nothing(tmp_path, bad, capsys):
    target = tmp_path / ".env"
    with pytest.raises(Exit) as exc:
        env_tasks.init(mock_context(target, {}), url=bad)
    message = str(exc.value.message)
    assert message.startswith("error: --url: ") and "\n" not in message and exc.value.code == 1
    assert not target.exists() and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- plugin debugging port
def test_debugging_port_is_published_only_when_an_address_is_set(tmp_path):
    support = clusters.CLUSTERS["support"]
    off = load_settings(None, write_env(tmp_path / ".env", DIFYOPS_STACK="unit"))
    assert str(paths.COMPOSE_DIR / "support.debug.yml") not in clusters.compose_argv(off, support, "up")
    on = load_settings(None, write_env(tmp_path / "on.env", DIFYOPS_STACK="unit",
                                       DIFYOPS_PLUGIN_DEBUGGING_ADDRESS="127.0.0.1"))
    argv = clusters.compose_argv(on, support, "up")
    assert argv[argv.index(str(paths.COMPOSE_DIR / "support.debug.yml")) - 1] == "-f"
    assert str(paths.COMPOSE_DIR / "support.debug.yml") not in clusters.compose_argv(on, clusters.CLUSTERS["api"], "up")


# ---------------------------------------------------------------- the stand-in daemon's rules
GOOD = {"SERVER_KEY": "k", "DIFY_INNER_API_URL": "http://api:5001", "DIFY_INNER_API_KEY": "i", "DB_USERNAME": "u",
        "DB_PASSWORD": "p", "DB_HOST": "db", "DB_PORT": "5432", "DB_DATABASE": "dify_plugin", "PLATFORM": "local",
        "PLUGIN_WORKING_PATH": "/app/storage/cwd", "PLUGIN_REMOTE_INSTALLING_HOST": "0.0.0.0",
        "PLUGIN_REMOTE_INSTALLING_PORT": "5003"}


def test_standin_daemon_accepts_a_complete_configuration_with_0_5_3_defaults():
    config = daemon_config.load(GOOD)
    assert (config["SERVER_PORT"], config["DB_SSL_MODE"], config["DB_DEFAULT_DATABASE"]) == (5002, "disable", "postgres")
    assert (config["PLUGIN_REMOTE_INSTALLING_MAX_CONN"], config["PLUGIN_REMOTE_INSTALL_SERVER_EVENT_LOOP_NUMS"]) == (256, 8)
    assert config["PLUGIN_REMOTE_INSTALLING_ENABLED"] is True and config["FORCE_VERIFYING_SIGNATURE"] is True


@pytest.mark.parametrize("change, code, message", [
    ({"PLUGIN_REMOTE_INSTALLING_HOST": None}, 1, "plugin remote installing host is empty"),
    ({"PLUGIN_REMOTE_INSTALLING_PORT": None}, 1, "plugin remote installing port is empty"),
    ({"PLUGIN_REMOTE_INSTALLING_PORT": "0"}, 1, "plugin remote installing port is empty"),
    ({"PLUGIN_WORKING_PATH": None}, 1, "plugin working path is empty"),
    ({"PLATFORM": None}, 1, "'PLATFORM' failed on the 'required' tag"),
    ({"PLATFORM": "cloud"}, 1, "invalid platform"),
    ({"DB_PORT": None}, 1, "'DB_PORT' failed on the 'required' tag"),
    ({"DB_SSL_MODE": "verify-full"}, 1, "'oneof'"),
    ({"DB_PORT": ""}, 2, "error processing environment variables"),
    ({"PLUGIN_REMOTE_INSTALLING_PORT": "70000"}, 2, "out of range"),
    ({"FORCE_VERIFYING_SIGNATURE": ""}, 2, "ParseBool"),
    ({"REDIS_SENTINEL_SOCKET_TIMEOUT": ""}, 2, "ParseFloat"),
])
def test_standin_daemon_refuses_what_0_5_3_refuses(change, code, message):
    env = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    refusal = daemon_config.check(env)
    assert refusal is not None and refusal.code == code and message in refusal.message, refusal


def test_remote_installing_off_needs_no_host_or_port():
    env = {k: v for k, v in GOOD.items() if not k.startswith("PLUGIN_REMOTE_INSTALLING")}
    assert daemon_config.check({**env, "PLUGIN_REMOTE_INSTALLING_ENABLED": "false"}) is None


@pytest.mark.skipif(shutil.which("docker") is None or subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="needs the docker compose CLI (no daemon); runs in CI, where .ci/run installs it")
def test_the_development_middleware_starts_a_plugin_daemon_0_5_3_accepts_with_debugging_on_loopback(tmp_path):
    env_file = tmp_path / "middleware.env"
    env_file.write_text((paths.COMPOSE_DIR / "dev" / "middleware.env.example").read_text()
                        .replace(envfile.PLACEHOLDER, "0123456789abcdef0123456789abcdef"))
    result = subprocess.run(["docker", "compose", "-f", str(paths.COMPOSE_DIR / "dev" / "middleware.yml"),
                             "--env-file", str(env_file), "config", "--format", "json"],
                            capture_output=True, text=True, env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    daemon = json.loads(result.stdout)["services"]["plugin_daemon"]
    assert daemon_config.check({"PLATFORM": "local", **daemon["environment"]}) is None
    debugging = [p for p in daemon["ports"] if p["target"] == 5003]
    assert debugging and all(p["host_ip"] == "127.0.0.1" for p in daemon["ports"])
