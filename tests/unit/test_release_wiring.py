"""The deployment's release set wired into the task library: the one renderer adds the release's
overlays, compose gets the release's images for what .env leaves empty, the release's networks
exist, env.init generates its secrets in their forms and env.check refuses malformed ones."""

from __future__ import annotations

import base64

import pytest
from conftest import OK, commands, mock_context, write_env
from invoke import Result
from test_tasks import deploy_context

from difyops import clusters, envfile, release_sets, stack
from difyops.config import load_settings
from difyops.tasks import env as env_tasks
from difyops.tasks import prod

NEWEST = release_sets.default()
OLD = release_sets.load("1.13.3")


def _files(argv: list[str]) -> list[str]:
    """The compose files of an argv, relative to compose/."""
    base = str(clusters.paths.COMPOSE_DIR) + "/"
    return [argv[i + 1].removeprefix(base) for i, arg in enumerate(argv) if arg == "-f"]


def _settings(tmp_path, **values):
    return load_settings(None, write_env(tmp_path / ".env", DIFYOPS_STACK="unit", **values))


def test_the_default_release_adds_its_overlays_after_the_cluster_file(tmp_path):
    settings = _settings(tmp_path)
    assert clusters.release(settings).release == NEWEST.release
    assert _files(clusters.compose_argv(settings, clusters.CLUSTERS["api"], "config")) == [
        "api.yml", "api.websocket.yml", "api.agent.yml"]
    assert _files(clusters.compose_argv(settings, clusters.CLUSTERS["support"], "config")) == [
        "support.yml", "support.agent.yml"]
    assert _files(clusters.compose_argv(settings, clusters.CLUSTERS["web"], "config")) == [
        "web.yml", "web.1.14.yml", "web.1.16.yml"]
    # Swarm: the cluster's Swarm overlay, then its release overlays' Swarm overlays.
    assert _files(clusters.compose_argv(settings, clusters.CLUSTERS["api"], "config", target="swarm")) == [
        "api.yml", "api.websocket.yml", "api.agent.yml", "swarm/api.yml", "swarm/api.websocket.yml"]


def test_release_1_13_3_adds_no_overlay_and_passes_its_own_images_and_upstreams(tmp_path):
    settings = _settings(tmp_path, DIFY_VERSION="1.13.3")
    for cluster in clusters.CLUSTERS.values():
        assert _files(clusters.compose_argv(settings, cluster, "config")) == [f"{cluster.name}.yml"]
    env = clusters.compose_env(settings)
    assert {k: env[k] for k in release_sets.image_variables(OLD)} == release_sets.image_variables(OLD)
    assert env["DIFY_PLUGIN_DAEMON_IMAGE"] == "langgenius/dify-plugin-daemon:0.5.3-local"
    assert env["NGINX_SOCKET_IO_UPSTREAM"] == "api:5001"
    assert clusters.release_networks(settings, clusters.CLUSTERS.values()) == {}


def test_the_users_own_image_and_upstream_win_over_the_release(tmp_path):
    settings = _settings(tmp_path, DIFY_VERSION="1.13.3", DIFY_API_IMAGE="registry.example.cn/dify-api:1.13.3",
                         NGINX_SOCKET_IO_UPSTREAM="api:5001")
    env = clusters.compose_env(settings)
    # Not in the process environment (which would beat .env): .env's own value applies.
    assert "DIFY_API_IMAGE" not in env and "NGINX_SOCKET_IO_UPSTREAM" not in env
    assert env["DIFY_WEB_IMAGE"] == OLD.image("web").ref


def test_deploy_creates_the_releases_internal_networks_and_down_removes_them(env_path):
    c = deploy_context(env_path)
    prod.deploy(c)
    created = [cmd for cmd in commands(c) if "network create" in cmd]
    for name in ("unit-agent-sandbox", "unit-agent-egress"):
        assert f"docker network create --driver bridge --label io.difyops.stack=unit --internal {name}" in created
    c2 = mock_context(env_path, {r".*": OK})
    stack.remove_shared(c2, load_settings(c2), volumes=False)
    removed = [cmd for cmd in commands(c2) if "network rm" in cmd]
    assert "docker network rm unit-agent-sandbox" in removed and "docker network rm unit-agent-egress" in removed


def test_a_1_13_3_deploy_creates_no_agent_network_and_runs_the_1_13_3_images(tmp_path):
    env_path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1", DIFY_VERSION="1.13.3")
    c = deploy_context(env_path)
    prod.deploy(c)
    ran = commands(c)
    assert not [cmd for cmd in ran if "agent-" in cmd and "network create" in cmd]
    ups = [call for call in c.run.call_args_list if " up -d --wait" in call.args[0]]
    assert all(call.kwargs["env"]["DIFY_API_IMAGE"] == OLD.image("api").ref for call in ups)
    assert not [call for call in ups if "agent.yml" in call.args[0] or "websocket.yml" in call.args[0]]


def _b64url_bytes(value: str) -> int:
    return len(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


def test_env_init_generates_each_secret_of_the_release_in_its_form(tmp_path, capsys):
    target = tmp_path / ".env"
    env_tasks.init(mock_context(target, {}), env_file=str(target))
    assert f"release set: dify-{NEWEST.release}" in capsys.readouterr().out
    env = envfile.values_of(target.read_text())
    key = env["DIFY_AGENT_SERVER_SECRET_KEY"]
    assert "=" not in key and _b64url_bytes(key) == 32
    for name, secret in NEWEST.secrets.items():
        assert secret.problem(env[name]) is None, name
    assert len({env[name] for name in NEWEST.secrets}) == len(NEWEST.secrets)
    assert envfile.check(env) == []
    # A second .env gets values of its own.
    other = envfile.values_of(envfile.generate(clusters.paths.ENV_EXAMPLE.read_text()))
    assert other["DIFY_AGENT_SERVER_SECRET_KEY"] != key


def test_env_init_for_1_13_3_leaves_the_agent_secrets_out(tmp_path):
    env = envfile.values_of(envfile.generate(clusters.paths.ENV_EXAMPLE.read_text(), {"DIFY_VERSION": "1.13.3"}))
    assert env["DIFY_AGENT_SERVER_SECRET_KEY"] == "" and env["DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN"] == ""
    assert envfile.check(env) == []


def test_env_init_refuses_a_release_without_a_set_and_writes_nothing(tmp_path):
    target = tmp_path / ".env"
    with pytest.raises(Exception, match="Dify 1.99.0 has no release set.*nothing was written"):
        env_tasks.init(mock_context(target, {}), env_file=str(target), set=["DIFY_VERSION=1.99.0"])
    assert not target.exists()


@pytest.mark.parametrize("value,why", [
    ("", "DIFY_AGENT_SERVER_SECRET_KEY is empty"),
    ("ab" * 32, "must decode to exactly 32 bytes (it decodes to 48)"),
    ("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "must be unpadded base64url"),
    ("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY", "published development default"),
])
def test_env_check_flags_a_missing_or_malformed_agent_secret_in_one_line(tmp_path, value, why):
    env = envfile.values_of(envfile.generate(clusters.paths.ENV_EXAMPLE.read_text(),
                                             {"DIFY_AGENT_SERVER_SECRET_KEY": value}))
    problems = envfile.check(env)
    assert len(problems) == 1 and why in problems[0], problems
    assert value not in problems[0] or not value


def test_env_check_flags_an_empty_local_sandbox_token(tmp_path):
    env = envfile.values_of(envfile.generate(clusters.paths.ENV_EXAMPLE.read_text(),
                                             {"DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN": ""}))
    problems = envfile.check(env)
    assert len(problems) == 1 and problems[0].startswith("DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN is empty"), problems


def test_the_swarm_stack_carries_the_agent_secrets_as_docker_secrets(tmp_path):
    settings = _settings(tmp_path)
    from difyops import swarm

    found = swarm.secret_values(settings.env)
    for name in ("DIFY_AGENT_SERVER_SECRET_KEY", "DIFY_AGENT_API_TOKEN", "DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN"):
        assert found.get(settings.env[name]) == name


def test_a_release_networks_docker_name_and_internal_flag(tmp_path):
    settings = _settings(tmp_path)
    assert clusters.cluster_networks(settings, clusters.CLUSTERS["support"]) == {
        "backend": True, "ssrf": True, "app": False, "agent-egress": True, "agent-sandbox": True}
    assert clusters.cluster_networks(settings, clusters.CLUSTERS["api"]) == {"backend": True, "ssrf": True,
                                                                             "app": False}
    assert clusters.network_create_argv(settings, "agent-egress")[-2:] == ["--internal", "unit-agent-egress"]
    c = mock_context(settings.env_file, {r"docker --context m network inspect": Result("", exited=1), r".*": OK})
    from difyops import swarm

    swarm.ensure_networks(c, settings, [clusters.CLUSTERS["support"]], "m")
    created = [cmd for cmd in commands(c) if "network create" in cmd]
    assert any(cmd.endswith("--internal unit-agent-sandbox") and "--driver overlay" in cmd for cmd in created), created


def test_status_shows_the_release_set_in_text_and_json(tmp_path, capsys):
    env_path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", DIFY_VERSION="1.13.3")
    c = mock_context(env_path, {r"ps -a --format json$": Result("")})
    prod.status(c, clusters="api,support")
    text = capsys.readouterr().out
    assert "release set: dify-1.13.3" in text
    prod.status(c, clusters="api,support", json=True)
    rows = __import__("json").loads(capsys.readouterr().out)
    assert {r["release_set"] for r in rows} == {"dify-1.13.3"}
    assert {r["service"] for r in rows} == {"api", "sandbox", "ssrf_proxy", "plugin_daemon"}
    # The default release: its new services are listed (absent here), so a missing one shows.
    new = write_env(tmp_path / ".env2", DIFYOPS_STACK="unit")
    c = mock_context(new, {r"ps -a --format json$": Result("")})
    prod.status(c, clusters="api,support", json=True)
    rows = __import__("json").loads(capsys.readouterr().out)
    assert {"api_websocket", "agent_backend", "local_sandbox", "agent_ssrf_proxy"} <= {r["service"] for r in rows}


def test_images_list_names_the_release_set_and_its_images_only(tmp_path, capsys):
    from difyops import images
    from difyops.tasks import images as image_tasks

    old = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", DIFY_VERSION="1.13.3")
    c = mock_context(old, {r"docker info": Result("26.1"), r"docker image inspect": Result("sha256:1")})
    image_tasks.list_(c)
    text = capsys.readouterr().out
    assert "release set: dify-1.13.3" in text and "0.5.3-local" in text
    assert "DIFY_AGENT_BACKEND_IMAGE" not in text
    refs = {r.variable: r.ref for r in images.resolve(envfile.values_of(old.read_text()))}
    assert refs["DIFY_PLUGIN_DAEMON_IMAGE"] == OLD.image("plugin_daemon").ref and "DIFY_AGENT_BACKEND_IMAGE" not in refs
    refs = {r.variable: r.ref for r in images.resolve({})}
    assert refs["DIFY_AGENT_BACKEND_IMAGE"] == NEWEST.image("agent_backend").ref
    assert refs["DIFY_AGENT_LOCAL_SANDBOX_IMAGE"] == NEWEST.image("local_sandbox").ref


# ----------------------------------------------------------------------------- mixed release sets
MIXED_DAEMON = "langgenius/dify-plugin-daemon:0.5.3-local"


def test_a_plugin_daemon_of_another_release_is_refused_in_one_line_naming_both(tmp_path):
    env = envfile.values_of(envfile.generate(clusters.paths.ENV_EXAMPLE.read_text(),
                                             {"DIFY_PLUGIN_DAEMON_IMAGE": MIXED_DAEMON}))
    problems = release_sets.mixed_problems(env)
    assert len(problems) == 1 and "\n" not in problems[0]
    line = problems[0]
    assert MIXED_DAEMON in line and "Dify 1.13.3" in line and NEWEST.image("plugin_daemon").ref in line
    assert f"DIFY_VERSION={NEWEST.release}" in line and "DIFYOPS_ALLOW_MIXED_RELEASE=true" in line
    assert envfile.check(env) == problems  # env.check says the same


def test_an_api_of_another_release_is_mixed_and_the_releases_own_images_are_not():
    base = {"DIFY_VERSION": "1.16.1"}
    assert release_sets.mixed_problems({**base, "DIFY_API_IMAGE": "langgenius/dify-api:1.13.3"})
    for own in release_sets.image_variables(NEWEST).items():
        assert release_sets.mixed_problems({**base, own[0]: own[1]}) == []
    # The sandbox 0.2.15 is 1.15.0's and 1.16.1's: not a mix for either.
    assert release_sets.mixed_problems({"DIFY_VERSION": "1.15.0", "DIFY_SANDBOX_IMAGE": "langgenius/dify-sandbox:0.2.15"}) == []
    # Local builds, the stand-in and a mirror's name are no release's: the user's own choice.
    for ref in ("difyops-standin/dify-plugin-daemon:v1", "registry.example.cn/langgenius/dify-plugin-daemon:0.5.3-local",
                "difyops-local/squid:6"):
        assert release_sets.mixed_problems({**base, "DIFY_PLUGIN_DAEMON_IMAGE": ref}) == [], ref
    assert release_sets.mixed_problems({"DIFY_VERSION": "1.13.3", "DIFY_PLUGIN_DAEMON_IMAGE": MIXED_DAEMON}) == []
    assert release_sets.mixed_problems({**base, "DIFY_PLUGIN_DAEMON_IMAGE": MIXED_DAEMON,
                                        "DIFYOPS_ALLOW_MIXED_RELEASE": "true"}) == []


def test_deploy_refuses_a_mixed_set_before_anything_changes(tmp_path):
    env_path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1",
                         DIFY_PLUGIN_DAEMON_IMAGE=MIXED_DAEMON)
    c = deploy_context(env_path)
    with pytest.raises(Exception, match="0.5.3-local is the plugin_daemon image of Dify 1.13.3.*a mixed release set"):
        prod.deploy(c)
    assert not [cmd for cmd in commands(c) if " create " in cmd or " up " in cmd or " run " in cmd]


def test_deploy_runs_a_mixed_set_when_asked_explicitly(tmp_path):
    env_path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1",
                         DIFY_PLUGIN_DAEMON_IMAGE=MIXED_DAEMON, DIFYOPS_ALLOW_MIXED_RELEASE="true")
    c = deploy_context(env_path)
    prod.deploy(c)
    assert [cmd for cmd in commands(c) if " up -d --wait" in cmd]


def test_swarm_deploy_refuses_a_mixed_set_before_rendering(tmp_path):
    env_path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", DIFY_PLUGIN_DAEMON_IMAGE=MIXED_DAEMON)
    c = mock_context(env_path, {r"docker info": Result("active true\n"), r"docker node ls": Result("n1\n"),
                                r"docker node inspect": Result('{"difyops.role.data": "true"}\n')})
    with pytest.raises(Exception, match="0.5.3-local is the plugin_daemon image of Dify 1.13.3.*a mixed release set"):
        prod.deploy(c, target="swarm")
    assert not [cmd for cmd in commands(c) if "docker compose" in cmd or "stack deploy" in cmd]


def test_an_upgrades_target_of_mixed_releases_is_refused_by_its_release_check():
    # rollout.preflight asks stack.release_problems of the target .env: .env keeps the old daemon.
    target = {"DIFY_VERSION": "1.16.1", "DIFY_PLUGIN_DAEMON_IMAGE": MIXED_DAEMON}
    assert len(stack.release_problems(target)) == 1
    assert stack.release_problems({"DIFY_VERSION": "1.16.1"}) == []


# ----------------------------------------------------------------------------- renamed variables
def test_an_old_name_is_mapped_to_the_new_one_at_render_and_noted(tmp_path):
    settings = _settings(tmp_path, DIFY_AGENT_SHELLCTL_AUTH_TOKEN="old-token-value-0123456789abcdef",
                         DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN="", SSRF_SANDBOX_PROXY_HOST="", SSRF_SANDBOX_HOST="sbx")
    env = clusters.compose_env(settings)
    assert env["DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN"] == "old-token-value-0123456789abcdef"
    assert env["SSRF_SANDBOX_PROXY_HOST"] == "sbx"
    notes = envfile.renamed_notes(settings.env)
    assert [n.split()[0] for n in notes] == ["SSRF_SANDBOX_HOST", "DIFY_AGENT_SHELLCTL_AUTH_TOKEN"]
    assert "old-token-value" not in " ".join(notes)
    # The secret is there under its old name: env.check does not call it missing.
    assert not [p for p in envfile.check(settings.env) if "LOCAL_SANDBOX_AUTH_TOKEN" in p]


def test_an_old_name_beside_a_different_new_one_is_flagged_in_one_line(tmp_path):
    settings = _settings(tmp_path, SSRF_SANDBOX_HOST="old-sandbox")
    problems = envfile.check(settings.env)
    assert problems == [p for p in problems if p.startswith("SSRF_SANDBOX_HOST and SSRF_SANDBOX_PROXY_HOST")]
    assert len(problems) == 1


def test_env_migrate_carries_old_names_and_generates_missing_secrets_with_a_backup(tmp_path, capsys):
    target = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", DIFY_VERSION="1.13.3", SSRF_SANDBOX_PROXY_HOST="",
                       SSRF_SANDBOX_HOST="sbx")
    text = target.read_text().replace("DIFY_VERSION=1.13.3", "DIFY_VERSION=1.16.1")
    target.write_text(text)  # an upgrade's .env: the new release, none of its secrets yet
    before = envfile.values_of(text)
    assert before["DIFY_AGENT_SERVER_SECRET_KEY"] == ""
    c = mock_context(target, {})
    env_tasks.migrate(c)
    out = capsys.readouterr().out
    after = envfile.values_of(target.read_text())
    assert after["SSRF_SANDBOX_PROXY_HOST"] == "sbx" and "SSRF_SANDBOX_HOST" not in after
    assert NEWEST.secrets["DIFY_AGENT_SERVER_SECRET_KEY"].problem(after["DIFY_AGENT_SERVER_SECRET_KEY"]) is None
    assert after["SECRET_KEY"] == before["SECRET_KEY"] and after["DB_PASSWORD"] == before["DB_PASSWORD"]
    assert envfile.check(after) == []
    assert after["DIFY_AGENT_SERVER_SECRET_KEY"] not in out and "DIFY_AGENT_SERVER_SECRET_KEY generated" in out
    backups = list(tmp_path.glob(".env.bak.*"))
    assert len(backups) == 1 and backups[0].read_text() == text
    env_tasks.migrate(c)
    assert "nothing to change" in capsys.readouterr().out


# ----------------------------------------------------------------------------- Dify's split env layout
def _dify_docker_folder(tmp_path):
    """A Dify 1.16-style docker/ folder: envs/**/*.env beside .env (a fixture tree, not Dify's files)."""
    folder = tmp_path / "docker"
    files = {
        "docker-compose.yaml": "services:\n  api:\n    image: langgenius/dify-api:1.16.1\n",
        "envs/core-services/shared.env": "LOG_LEVEL=INFO\nMAIL_TYPE=smtp\nDB_PASSWORD=difyai123456\n",
        "envs/core-services/api.env": "LOG_LEVEL=DEBUG\nAPI_TOOL_DEFAULT_READ_TIMEOUT=90\n",
        "envs/security.env": "SECRET_KEY=sk-from-envs-0123456789abcdef0123456789abcdef\n",
        "envs/databases/db-postgres.env": "DB_DATABASE=difydb\n",
        "envs/core-services/worker.env": "CELERY_WORKER_AMOUNT=6\n",
        "envs/core-services/web.env": "TEXT_GENERATION_TIMEOUT_MS=90000\nLOG_LEVEL=WARNING\n",
        "envs/core-services/api.env.example": "LOG_LEVEL=example-only\n",
        ".env": "MAIL_TYPE=resend\n",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_the_split_layout_is_read_in_difys_order_then_dot_env(tmp_path):
    order = envfile.split_layout_order("1.16.1")
    assert order[:3] == ("envs/core-services/shared.env", "envs/core-services/api.env", "envs/security.env")
    assert order.index("envs/infrastructure/milvus-standalone.env") < order.index("envs/core-services/worker.env") \
        < order.index("envs/core-services/web.env")
    folder = _dify_docker_folder(tmp_path)
    env, sources = envfile.read_split_layout(folder, "1.16.1")
    assert [str(p.relative_to(folder)) for p in sources] == [
        "envs/core-services/shared.env", "envs/core-services/api.env", "envs/security.env",
        "envs/databases/db-postgres.env", "envs/core-services/worker.env", "envs/core-services/web.env", ".env"]
    # Later files win: api.env over shared.env, the web's file after the api's, .env last.
    assert env["LOG_LEVEL"] == "WARNING" and env["MAIL_TYPE"] == "resend" and env["DB_DATABASE"] == "difydb"
    assert env["API_TOOL_DEFAULT_READ_TIMEOUT"] == "90" and "example-only" not in env.values()


def test_env_import_takes_the_split_layouts_settings_into_one_env(tmp_path, capsys):
    folder = _dify_docker_folder(tmp_path)
    target = tmp_path / "stack" / ".env"
    target.parent.mkdir()
    c = mock_context(target, {})
    env_tasks.import_(c, from_=str(folder))
    out = capsys.readouterr().out
    env = envfile.values_of(target.read_text())
    assert env["DIFY_VERSION"] == "1.16.1" and env["SECRET_KEY"] == "sk-from-envs-0123456789abcdef0123456789abcdef"
    assert env["MAIL_TYPE"] == "resend" and env["CELERY_WORKER_AMOUNT"] == "6" and env["DB_DATABASE"] == "difydb"
    # Connection secrets (Dify's public example DB_PASSWORD) are this stack's own; the release's generated.
    assert env["DB_PASSWORD"] != "difyai123456" and len(env["DB_PASSWORD"]) == 64
    assert NEWEST.secrets["DIFY_AGENT_SERVER_SECRET_KEY"].problem(env["DIFY_AGENT_SERVER_SECRET_KEY"]) is None
    assert envfile.check(env) == []
    assert "sk-from-envs" not in out and "7 file(s)" in out
    with pytest.raises(Exception, match="already exists"):
        env_tasks.import_(c, from_=str(folder))


def test_env_import_refuses_a_folder_without_settings_and_writes_nothing(tmp_path):
    target = tmp_path / ".env"
    with pytest.raises(Exception, match="neither envs/ nor .env"):
        env_tasks.import_(mock_context(target, {}), from_=str(tmp_path / "nothing"))
    assert not target.exists()
