"""prod.upgrade across Dify releases (1.13.3 -> 1.16.1) through MockContext and the pure planners of
difyops/rollout_release.py: the phases in order with their timings, the new services healthy before
traffic moves, the plugin daemon and sandbox moved with the api in order, the gateway's routes
switched by a reload, the new secrets generated into .env (kept in a backup first), DIFY_VERSION
written only at the end, and the refusals (nothing changed)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import OK, commands, fail_result, mock_context, rollout_context, write_env
from invoke import Result
from invoke.exceptions import Exit

from difyops import envfile, release_sets, releases
from difyops import rollout_release as rr
from difyops.config import load_settings
from difyops.tasks import prod

OLD, NEW = release_sets.load("1.13.3"), release_sets.load("1.16.1")
AGENT_SECRETS = ("DIFY_AGENT_SERVER_SECRET_KEY", "DIFY_AGENT_API_TOKEN", "DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN")
AT_HEAD = Result("0005_v3_agent_runs (head)\n")
pytestmark = pytest.mark.usefixtures("fast_rollout")


@pytest.fixture
def old_env(tmp_path):
    """A 1.13.3 deployment's .env (official images; no agent secret: 1.13.3 has none)."""
    return write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1", DIFY_VERSION="1.13.3",
                     **{name: "" for name in AGENT_SECRETS})


def release_context(env_path, **extra):
    """rollout_context, and what a release upgrade asks besides: its networks (new), the gateway's
    route switch, the retired services' removal."""
    extra.setdefault(r"docker network inspect", fail_result("No such network"))
    extra.setdefault(r"docker network create", OK)
    extra.setdefault(r" exec -T nginx ", OK)
    extra.setdefault(r" rm -s -f ", OK)
    return rollout_context(env_path, AT_HEAD, **extra)


def index_of(ran, *needles):
    return next(i for i, cmd in enumerate(ran) if all(n in cmd for n in needles))


def call_of(c, *needles):
    return next(call for call in c.run.call_args_list if all(n in call.args[0] for n in needles))


# ----------------------------------------------------------------------------- the pure planners
def test_the_plan_from_1_13_3_to_1_16_1():
    env = {"DIFY_VERSION": "1.13.3"}
    target_env = {"DIFY_VERSION": "1.16.1"}
    plan = rr.make_plan(env, target_env, OLD, NEW, {"DIFY_AGENT_API_TOKEN": "x"}, backup=True)
    assert plan.new_services == {"support": ("agent_backend", "local_sandbox", "agent_ssrf_proxy")}
    assert plan.lockstep == ("plugin_daemon", "sandbox")  # the daemon first: the api calls it
    assert plan.gateway == {"NGINX_SOCKET_IO_UPSTREAM": "api_websocket:5001", "NGINX_OPENAPI_UPSTREAM": "api:5001"}
    assert plan.app_services["api"] == ("api", "api_websocket") and plan.app_services["web"] == ("web",)
    assert plan.networks == ("agent_egress", "agent_sandbox") and plan.retired == {}
    assert plan.phases() == list(rr.PHASES) and len(plan.phases()) == 10
    back = rr.make_plan(target_env, env, NEW, OLD, {}, backup=False)
    assert back.retired == {"support": ("agent_backend", "local_sandbox", "agent_ssrf_proxy")}
    assert back.new_services == {} and back.work()["backup"] == ""


def test_the_same_release_moves_only_the_app():
    env = {"DIFY_VERSION": "1.13.3"}
    plan = rr.make_plan(env, {**env, "DIFY_API_IMAGE": "x/api:2"}, OLD, OLD, {}, backup=False)
    assert (plan.new_services, plan.lockstep, plan.gateway, plan.retired) == ({}, (), {}, {})
    assert plan.work()["new services"] == "" and plan.work()["gateway"] == ""


def test_target_updates_follow_the_release_and_keep_a_mirror():
    env = {"DIFY_VERSION": "1.13.3", "DIFY_SANDBOX_IMAGE": "mirror.example:5000/langgenius/dify-sandbox:0.2.14",
           "DIFY_API_IMAGE": "mirror.example:5000/langgenius/dify-api:1.13.3"}
    updates, problems = rr.target_updates(env, OLD, NEW)
    assert problems == []
    assert updates == {"DIFY_VERSION": "1.16.1",
                       "DIFY_SANDBOX_IMAGE": "mirror.example:5000/langgenius/dify-sandbox:0.2.15",
                       "DIFY_API_IMAGE": "mirror.example:5000/langgenius/dify-api:1.16.1"}


def test_a_pin_that_is_no_image_of_the_release_is_refused_unless_given():
    env = {"DIFY_VERSION": "1.13.3", "DIFY_PLUGIN_DAEMON_IMAGE": "difyops-standin/dify-plugin-daemon:v1"}
    updates, problems = rr.target_updates(env, OLD, NEW)
    assert len(problems) == 1 and "DIFY_PLUGIN_DAEMON_IMAGE=difyops-standin/dify-plugin-daemon:v1" in problems[0]
    assert "--image DIFY_PLUGIN_DAEMON_IMAGE=REF" in problems[0] and "DIFY_PLUGIN_DAEMON_IMAGE" not in updates
    given = {"DIFY_PLUGIN_DAEMON_IMAGE": "difyops-standin/dify-plugin-daemon:v3"}
    updates, problems = rr.target_updates(env, OLD, NEW, given)
    assert problems == [] and updates["DIFY_PLUGIN_DAEMON_IMAGE"] == "difyops-standin/dify-plugin-daemon:v3"
    _, problems = rr.target_updates(env, OLD, NEW, {**given, "DIFY_NOPE_IMAGE": "a/b:1"})
    assert problems and "DIFY_NOPE_IMAGE is not an image variable of Dify 1.16.1" in problems[0]


def test_a_gateway_upstream_env_init_wrote_for_the_old_release_follows_the_release():
    updates, _ = rr.target_updates({"NGINX_SOCKET_IO_UPSTREAM": "api:5001"}, OLD, NEW)
    assert updates["NGINX_SOCKET_IO_UPSTREAM"] == "api_websocket:5001"
    updates, _ = rr.target_updates({"NGINX_SOCKET_IO_UPSTREAM": "collab.internal:7000"}, OLD, NEW)
    assert "NGINX_SOCKET_IO_UPSTREAM" not in updates  # the user's own stays


def test_compose_values_render_the_target_whatever_env_says():
    values = rr.compose_values({"DIFY_VERSION": "1.13.3", "DIFY_WEB_IMAGE": "x/web:9"}, NEW)
    assert values["DIFY_VERSION"] == "1.16.1" and values["DIFY_WEB_IMAGE"] == "x/web:9"
    assert values["DIFY_PLUGIN_DAEMON_IMAGE"] == "langgenius/dify-plugin-daemon:0.6.3-local"
    assert values["NGINX_SOCKET_IO_UPSTREAM"] == "api_websocket:5001"
    # a gateway upstream .env sets itself is the user's
    assert "NGINX_SOCKET_IO_UPSTREAM" not in rr.compose_values({"NGINX_SOCKET_IO_UPSTREAM": "api:5001"}, NEW)


def test_new_secrets_are_generated_in_their_form_and_bad_ones_named_without_their_value():
    generated, problems = rr.secrets_to_generate({}, NEW)
    assert set(AGENT_SECRETS) <= set(generated) and problems == []
    assert all(NEW.secrets[k].problem(v) is None for k, v in generated.items())
    bad = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"
    generated, problems = rr.secrets_to_generate({"DIFY_AGENT_SERVER_SECRET_KEY": bad}, NEW,
                                                 check=["DIFY_AGENT_SERVER_SECRET_KEY"])
    assert "DIFY_AGENT_SERVER_SECRET_KEY" not in generated
    assert len(problems) == 1 and "published development default" in problems[0] and bad not in problems[0]


def test_the_routes_script_takes_only_host_port_values_of_route_variables():
    script = rr.routes_script({"NGINX_SOCKET_IO_UPSTREAM": ("api:5001", "api_websocket:5001")})
    assert "'NGINX_SOCKET_IO_UPSTREAM api:5001 api_websocket:5001'" in script and rr.GATEWAY_ROUTES_OVERRIDE in script
    with pytest.raises(ValueError, match="is not host:port"):
        rr.routes_script({"NGINX_SOCKET_IO_UPSTREAM": ("api:5001", "x; rm -rf /:1")})
    with pytest.raises(ValueError, match="is not host:port"):
        rr.routes_script({"NGINX_SOCKET_IO_UPSTREAM": ("'; reboot; '", "api:5001")})
    with pytest.raises(ValueError, match="not a gateway route variable"):
        rr.routes_script({"DIFY_API_UPSTREAM": ("api:5001", "evil:1")})
    # the variables it switches are the ones the routes snippet sets, and the ones the watcher knows
    snippet = (rr.release_sets.COMPOSE_DIR.parent / "nginx/templates/snippets/dify-routes.conf.template").read_text()
    watcher = (rr.release_sets.COMPOSE_DIR.parent / "nginx/entrypoint.d/45-difyops-routes.sh").read_text()
    for key, var in rr.GATEWAY_ROUTE_VARIABLES.items():
        assert f"set ${var} ${{{key}}};" in snippet and f"{key}:{var}" in watcher


def test_phases_print_their_number_name_and_seconds():
    lines, now = [], iter([0.0, 4.2, 4.2, 5.0])
    phases = rr.Phases("upgrade", ["pre-flight", "migrate"], lines.append, clock=lambda: next(now))
    phases.start("pre-flight", "Dify 1.13.3 -> 1.16.1")
    phases.start("migrate")
    phases.end()
    # escaped for the rich reporter, which prints "[upgrade] phase 1/2 ..."
    assert lines == [r"\[upgrade] phase 1/2 pre-flight: Dify 1.13.3 -> 1.16.1", r"\[upgrade] phase 1/2 pre-flight ... 4.2s",
                     r"\[upgrade] phase 2/2 migrate: nothing to do", r"\[upgrade] phase 2/2 migrate ... 0.8s"]
    assert phases.timings == {"pre-flight": 4.2, "migrate": 0.8}


def test_a_gateway_without_the_routes_watcher_is_recreated_with_the_new_routes(old_env, capsys):
    # A gateway container made by an older difyops has no watcher: the switch says so (exit 3), and
    # the gateway is created again from the target's settings instead (its port closes a moment).
    c = release_context(old_env, **{r" exec -T nginx ": Result("no gateway watches", exited=rr.NO_GATEWAY_HERE)})
    prod.upgrade(c, version="1.16.1", no_backup=True)
    ran = commands(c)
    switch = index_of(ran, "-p unit-gateway ", " exec -T nginx sh -c")
    recreate = index_of(ran, "-p unit-gateway ", " up -d --no-deps --wait", " nginx")
    down_api = index_of(ran, "-p unit-api ", " down --remove-orphans")
    assert switch < recreate < down_api
    env = call_of(c, "-p unit-gateway ", " up -d --no-deps --wait").kwargs["env"]
    assert env.get("NGINX_SOCKET_IO_UPSTREAM") == "api_websocket:5001"  # the target's routes
    assert "does not watch for switched routes: recreating it" in capsys.readouterr().err
    assert load_settings(c).env["DIFY_VERSION"] == "1.16.1"


def test_a_gateway_that_refuses_the_new_routes_rolls_the_upgrade_back(old_env):
    c = release_context(old_env, **{r" exec -T nginx ": fail_result("the gateway did not apply it within 60s")})
    with pytest.raises(Exit, match="the gateway did not take the new routes .*rolled back"):
        prod.upgrade(c, version="1.16.1", no_backup=True)
    assert load_settings(c).env["DIFY_VERSION"] == "1.13.3"
    assert not [cmd for cmd in commands(c) if "-p unit-gateway " in cmd and " up -d" in cmd]



# ----------------------------------------------------------------------------- prod.upgrade --version
def test_release_upgrade_runs_every_phase_in_order(old_env, capsys):
    c = release_context(old_env)
    prod.upgrade(c, version="1.16.1", no_backup=True)
    ran = commands(c)
    migrate = index_of(ran, "-p unit-api-green", "--profile migrate run --rm --no-deps migrate")
    agents = index_of(ran, "-p unit-support ", "up -d --no-deps --wait", "agent_backend local_sandbox agent_ssrf_proxy")
    networks = [cmd for cmd in ran if cmd.startswith("docker network create")]
    stop_daemon = index_of(ran, "-p unit-support ", " stop plugin_daemon")
    up_daemon = index_of(ran, "-p unit-support ", "up -d --no-deps --wait", " plugin_daemon")
    stop_sandbox = index_of(ran, "-p unit-support ", " stop sandbox")
    up_sandbox = index_of(ran, "-p unit-support ", "up -d --no-deps --wait", " sandbox")
    up_api = index_of(ran, "-p unit-api-green", "up -d --no-deps --wait", " api api_websocket")
    up_worker = index_of(ran, "-p unit-worker-green", "up -d --no-deps --wait", " worker")
    gateway = index_of(ran, "-p unit-gateway ", " exec -T nginx sh -c")
    down_api = index_of(ran, "-p unit-api ", " down --remove-orphans")
    down_worker = index_of(ran, "-p unit-worker ", " down --remove-orphans")
    assert migrate < agents < stop_daemon < up_daemon < stop_sandbox < up_sandbox < up_api < up_worker < gateway \
        < down_api < down_worker
    # the new processes are rendered as the target release (its overlays), the old ones as theirs
    assert "compose/api.websocket.yml" in ran[up_api] and "compose/support.agent.yml" in ran[agents]
    assert "compose/support.agent.yml" in ran[up_daemon] and "compose/support.agent.yml" not in ran[stop_daemon]
    assert "compose/api.websocket.yml" not in ran[down_api]
    assert sorted(cmd.split()[-1] for cmd in networks) == ["unit-agent-egress", "unit-agent-sandbox"]
    assert all("--internal" in cmd for cmd in networks)
    # the new processes run the target's images; the daemon keeps its storage (the same project's volume)
    env_of = {name: call_of(c, "-p unit-support ", "up -d", f" {name}").kwargs["env"] for name in ("plugin_daemon", "sandbox")}
    assert env_of["plugin_daemon"]["DIFY_PLUGIN_DAEMON_IMAGE"] == "langgenius/dify-plugin-daemon:0.6.3-local"
    assert env_of["sandbox"]["DIFY_SANDBOX_IMAGE"] == "langgenius/dify-sandbox:0.2.15"
    assert call_of(c, "-p unit-api-green", "up -d").kwargs["env"]["DIFY_API_IMAGE"] == "langgenius/dify-api:1.16.1"
    assert call_of(c, "-p unit-api-green", "up -d").kwargs["env"]["DIFY_VERSION"] == "1.16.1"
    assert "api_websocket:5001" in ran[gateway] and "api:5001" in ran[gateway]
    # .env: the release and its new secrets, each in its form; a copy of the old one beside it
    settings = load_settings(c)
    assert settings.env["DIFY_VERSION"] == "1.16.1"
    assert all(NEW.secrets[name].problem(settings.env[name]) is None for name in AGENT_SECRETS)
    copies = list(old_env.parent.glob(".env.bak.*"))
    assert len(copies) == 1 and "DIFY_VERSION=1.13.3" in copies[0].read_text()
    err = capsys.readouterr().err
    for n, name in enumerate(rr.PHASES, 1):
        assert re.search(rf"^\[upgrade\] phase {n}/10 {name} \.\.\. \d+\.\ds$", err, re.M), name
    assert f".env backed up to {copies[0]}" in err
    last = releases.history(settings)[-1]
    assert (last["action"], last["result"], last["release"]) == ("upgrade", "ok", {"from": "1.13.3", "to": "1.16.1"})
    assert set(last["phases"]) == set(rr.PHASES)
    for name in AGENT_SECRETS:  # never printed, never in the history
        assert settings.env[name] not in err and settings.env[name] not in json.dumps(last)


def test_dify_version_moves_only_when_everything_is_healthy(old_env):
    c = release_context(old_env, **{r"-p unit-web-green up -d": fail_result("unhealthy")})
    with pytest.raises(Exit) as exc:
        prod.upgrade(c, version="1.16.1", no_backup=True)
    assert "rolled back" in str(exc.value.message) and "\n" not in str(exc.value.message)
    ran = commands(c)
    settings = load_settings(c)
    assert settings.env["DIFY_VERSION"] == "1.13.3"
    # the running release's daemon and sandbox are back, and the new services are gone
    last_daemon_up = max(i for i, cmd in enumerate(ran) if "-p unit-support " in cmd and " up -d" in cmd
                         and cmd.endswith(" plugin_daemon sandbox"))
    assert c.run.call_args_list[last_daemon_up].kwargs["env"]["DIFY_PLUGIN_DAEMON_IMAGE"] == \
        "langgenius/dify-plugin-daemon:0.5.3-local"
    assert index_of(ran, "-p unit-support ", " rm -s -f agent_backend local_sandbox agent_ssrf_proxy") > last_daemon_up - 5
    assert not [cmd for cmd in ran if "-p unit-api " in cmd and " down " in cmd]  # the old release untouched
    assert not [cmd for cmd in ran if " exec -T nginx" in cmd]  # the gateway was never switched
    assert releases.history(settings)[-1]["result"] == "rolled-back"


def test_new_services_that_never_get_healthy_stop_the_upgrade_before_anything_moves(old_env):
    c = release_context(old_env, **{r"up -d --no-deps --wait --wait-timeout \d+ agent_backend": fail_result("unhealthy")})
    with pytest.raises(Exit, match="new services of Dify 1.16.1 .* did not become healthy"):
        prod.upgrade(c, version="1.16.1", no_backup=True)
    ran = commands(c)
    assert any(" rm -s -f agent_backend local_sandbox agent_ssrf_proxy" in cmd for cmd in ran)
    assert not [cmd for cmd in ran if " up " in cmd and ("plugin_daemon" in cmd or "-green" in cmd)]
    assert not [cmd for cmd in ran if " stop " in cmd]
    assert load_settings(c).env["DIFY_VERSION"] == "1.13.3"


def test_a_new_daemon_that_never_gets_healthy_puts_the_old_one_back(old_env):
    c = release_context(old_env, **{r"up -d --no-deps --wait --wait-timeout \d+ plugin_daemon$": [
        fail_result("unhealthy"), OK]})
    with pytest.raises(Exit, match="the new plugin_daemon did not become healthy"):
        prod.upgrade(c, version="1.16.1", no_backup=True)
    ups = [call for call in c.run.call_args_list if call.args[0].endswith("up -d --no-deps --wait --wait-timeout 300 "
                                                                          "plugin_daemon")]
    assert [call.kwargs["env"]["DIFY_PLUGIN_DAEMON_IMAGE"] for call in ups] == [
        "langgenius/dify-plugin-daemon:0.6.3-local", "langgenius/dify-plugin-daemon:0.5.3-local"]
    assert not [cmd for cmd in commands(c) if "-green" in cmd and " up " in cmd]


def test_a_pinned_local_image_without_its_new_ref_is_refused_and_nothing_changes(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1", DIFY_VERSION="1.13.3",
                    DIFY_SANDBOX_IMAGE="difyops-standin/dify-sandbox:v1")
    before = env.read_text()
    c = release_context(env)
    with pytest.raises(Exit, match=r"--image DIFY_SANDBOX_IMAGE=REF"):
        prod.upgrade(c, version="1.16.1", no_backup=True)
    assert env.read_text() == before and not list(tmp_path.glob(".env.bak.*"))
    assert not [cmd for cmd in commands(c) if " up " in cmd or "migrate" in cmd or " network create" in cmd]
    # given, it goes through
    c = release_context(env)
    prod.upgrade(c, version="1.16.1", image=["DIFY_SANDBOX_IMAGE=difyops-standin/dify-sandbox:v3"], no_backup=True)
    assert load_settings(c).env["DIFY_SANDBOX_IMAGE"] == "difyops-standin/dify-sandbox:v3"


@pytest.mark.parametrize("kwargs, expected", [
    ({"version": "9.9.9"}, "Dify 9.9.9 has no release set"),
    ({"version": "1.16.1", "image": ["DIFY_SANDBOX_IMAGE"]}, "is not KEY=VALUE"),
    ({"api_image": "x/api:2", "image": ["DIFY_SANDBOX_IMAGE=x/s:1"]}, "--image goes with --version"),
])
def test_release_upgrade_refusals_change_nothing(old_env, kwargs, expected):
    before = old_env.read_text()
    c = release_context(old_env)
    with pytest.raises(Exit, match=expected):
        prod.upgrade(c, no_backup=True, **kwargs)
    assert old_env.read_text() == before
    assert not [cmd for cmd in commands(c) if " up " in cmd or "migrate" in cmd]


def test_rollback_across_releases_past_the_migration_is_refused_naming_backup_restore(old_env):
    prod.upgrade(release_context(old_env), version="1.16.1", no_backup=True)
    after = envfile.values_of(old_env.read_text())
    c = release_context(old_env, **{r"run --rm --no-deps migrate": fail_result(
        "Can't locate revision identified by '0005_v3_agent_runs'")})
    with pytest.raises(Exit) as exc:
        prod.rollback(c)
    message = str(exc.value.message)
    assert "backup.restore" in message and "\n" not in message and "langgenius/dify-api:1.13.3" in message
    ran = commands(c)
    assert not [cmd for cmd in ran if " up " in cmd or " down " in cmd or " stop " in cmd or " exec " in cmd]
    assert envfile.values_of(old_env.read_text())["DIFY_VERSION"] == after["DIFY_VERSION"] == "1.16.1"
    assert releases.history(load_settings(c))[-1]["result"] == "refused"


def test_a_rollback_the_schema_allows_puts_the_old_release_set_back_whole(tmp_path):
    # (Dify's schema never allows it across these releases; the plan is the same for any pair.)
    # An older env.init wrote 1.13.3's /socket.io/ upstream into .env: it follows the release.
    old_env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1", DIFY_VERSION="1.13.3",
                        NGINX_SOCKET_IO_UPSTREAM="api:5001", **{name: "" for name in AGENT_SECRETS})
    before = envfile.values_of(old_env.read_text())
    prod.upgrade(release_context(old_env), version="1.16.1", no_backup=True)
    assert envfile.values_of(old_env.read_text())["NGINX_SOCKET_IO_UPSTREAM"] == "api_websocket:5001"
    c = release_context(old_env, **{r"migrate db current": Result("0003_upload_files (head)\n")})
    prod.rollback(c)
    ran = commands(c)
    after = envfile.values_of(old_env.read_text())
    for key in ("DIFY_VERSION", "NGINX_SOCKET_IO_UPSTREAM", "DIFY_PLUGIN_DAEMON_IMAGE", "DIFY_SANDBOX_IMAGE"):
        assert after[key] == before[key], key
    up_daemon = call_of(c, "-p unit-support ", "up -d", " plugin_daemon")
    assert up_daemon.kwargs["env"]["DIFY_PLUGIN_DAEMON_IMAGE"] == "langgenius/dify-plugin-daemon:0.5.3-local"
    retire = index_of(ran, "-p unit-support ", " rm -s -f agent_backend local_sandbox agent_ssrf_proxy")
    assert retire > index_of(ran, "-p unit-api-green ", " down --remove-orphans")  # after the drain
    assert "NGINX_SOCKET_IO_UPSTREAM api_websocket:5001 api:5001" in ran[index_of(ran, " exec -T nginx ")]
    assert not [cmd for cmd in ran if " network create" in cmd]


def test_a_pin_of_an_image_the_release_does_not_change_stays():
    env = {"DIFY_VERSION": "1.15.0", "DIFY_SANDBOX_IMAGE": "difyops-standin/dify-sandbox:v1"}
    updates, problems = rr.target_updates(env, release_sets.load("1.15.0"), NEW)  # both on sandbox 0.2.15
    assert problems == [] and "DIFY_SANDBOX_IMAGE" not in updates


# ----------------------------------------------------------------------------- --target swarm
def test_on_swarm_the_target_is_deployed_cluster_by_cluster_from_a_staged_env(old_env, monkeypatch, capsys):
    from difyops import rollout_swarm, swarm
    from difyops.swarm import jobs

    seen, switched = [], []

    def deploy(c, settings, selected, context, wait, say=None):
        seen.append({"env_file": settings.env_file.name, "version": settings.env["DIFY_VERSION"],
                     "clusters": [x.name for x in selected],
                     "context": context, "live": envfile.values_of(old_env.read_text())["DIFY_VERSION"],
                     "secret": settings.env.get("DIFY_AGENT_SERVER_SECRET_KEY", ""),
                     "gateway": settings.env.get("NGINX_SOCKET_IO_UPSTREAM")})
        return [(x.name, 1.5) for x in selected]

    monkeypatch.setattr(swarm, "deploy", deploy)
    monkeypatch.setattr(jobs, "switch_routes", lambda c, settings, context, switches, wait, say=None:
                        switched.append((switches, envfile.values_of(old_env.read_text())["DIFY_VERSION"])))
    prod.upgrade(mock_context(old_env, {}), version="1.16.1", target="swarm", context="prod")
    # the gateway is deployed with the routes it runs with (its tasks unchanged), then they are switched
    assert seen == [{"env_file": ".env.upgrading", "version": "1.16.1",
                     "clusters": ["support", "api", "worker", "web", "gateway"], "context": "prod", "live": "1.13.3",
                     "secret": seen[0]["secret"], "gateway": "api:5001"}]
    assert switched == [({"NGINX_SOCKET_IO_UPSTREAM": ("api:5001", "api_websocket:5001"),
                          "NGINX_OPENAPI_UPSTREAM": ("web:3000", "api:5001")}, "1.13.3")]
    assert NEW.secrets["DIFY_AGENT_SERVER_SECRET_KEY"].problem(seen[0]["secret"]) is None
    assert envfile.values_of(old_env.read_text())["DIFY_VERSION"] == "1.16.1"
    assert not rollout_swarm.staged_path(load_settings(mock_context(old_env, {}))).exists()
    err = capsys.readouterr().err
    for n, name in enumerate(rollout_swarm.PHASES, 1):
        assert re.search(rf"^\[upgrade\] phase {n}/8 {name} \.\.\. \d+\.\ds$", err, re.M), name
    last = releases.history(load_settings(mock_context(old_env, {})))[-1]
    assert (last["result"], last["target"], last["release"]) == ("ok", "swarm", {"from": "1.13.3", "to": "1.16.1"})


def test_on_swarm_without_the_routes_watcher_the_gateway_takes_the_new_routes_from_its_spec(old_env, monkeypatch):
    # NGINX_ROUTES_POLL=0: no watcher would apply a switch, so nothing is pinned and no one-shot runs
    from difyops import swarm
    from difyops.swarm import jobs

    envfile_text = old_env.read_text().replace("NGINX_ROUTES_POLL=1", "NGINX_ROUTES_POLL=0")
    old_env.write_text(envfile_text if "NGINX_ROUTES_POLL=0" in envfile_text else envfile_text + "NGINX_ROUTES_POLL=0\n")
    seen = []
    monkeypatch.setattr(swarm, "deploy", lambda c, settings, selected, context, wait, say=None: (
        seen.append(settings.env.get("NGINX_SOCKET_IO_UPSTREAM")), [(x.name, 1.0) for x in selected])[1])
    monkeypatch.setattr(jobs, "switch_routes", lambda *a, **k: pytest.fail("routes switched without a watcher"))
    prod.upgrade(mock_context(old_env, {}), version="1.16.1", target="swarm", context="prod")
    assert seen == [""]  # not pinned: the gateway renders the release's own upstreams


def test_on_swarm_a_failed_cluster_leaves_env_naming_the_running_release(old_env, monkeypatch):
    from difyops import rollout_swarm, swarm
    from difyops.errors import DifyopsError

    def deploy(c, settings, selected, context, wait, say=None):
        raise DifyopsError("stack unit-api did not converge within 300s")

    monkeypatch.setattr(swarm, "deploy", deploy)
    with pytest.raises(Exit, match="did not converge.*still names Dify 1.13.3"):
        prod.upgrade(mock_context(old_env, {}), version="1.16.1", target="swarm")
    assert envfile.values_of(old_env.read_text())["DIFY_VERSION"] == "1.13.3"
    assert not rollout_swarm.staged_path(load_settings(mock_context(old_env, {}))).exists()
    assert releases.history(load_settings(mock_context(old_env, {})))[-1]["result"] == "failed"


def test_on_swarm_the_refusals_change_nothing(old_env, monkeypatch):
    from difyops import swarm

    monkeypatch.setattr(swarm, "deploy", lambda *a, **k: pytest.fail("deployed"))
    before = old_env.read_text()
    with pytest.raises(Exit, match="Dify 9.9.9 has no release set"):
        prod.upgrade(mock_context(old_env, {}), version="9.9.9", target="swarm")
    with pytest.raises(Exit, match="unknown target"):
        prod.upgrade(mock_context(old_env, {}), version="1.16.1", target="kubernetes")
    with pytest.raises(Exit, match="--context goes with --target swarm"):
        prod.upgrade(mock_context(old_env, {}), version="1.16.1", context="prod")
    assert old_env.read_text() == before and not list(old_env.parent.glob(".env.bak.*"))


class FakeGateway:
    """nginx/entrypoint.d/45-difyops-routes.sh run by sh against a rendered routes snippet in a
    folder of its own, with an `nginx` on PATH that records reloads (and fails `-t` on demand)."""

    ROOT = rr.release_sets.COMPOSE_DIR.parent

    def __init__(self, tmp_path, **created: str):
        import os

        self.tmp = tmp_path
        self.routes, self.snippet = tmp_path / "routes", tmp_path / "dify-routes.conf"
        template = (self.ROOT / "nginx/templates/snippets/dify-routes.conf.template").read_text()
        self.snippet.write_text(template.replace("${NGINX_SOCKET_IO_UPSTREAM}", created["NGINX_SOCKET_IO_UPSTREAM"])
                                .replace("${NGINX_OPENAPI_UPSTREAM}", created["NGINX_OPENAPI_UPSTREAM"]))
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "nginx").write_text(f'#!/bin/sh\n[ "$1" = -s ] && echo reload >> {tmp_path}/reloads\n'
                                       f'[ "$1" = -t ] && [ -e {tmp_path}/broken ] && exit 1\nexit 0\n')
        (bin_dir / "nginx").chmod(0o755)
        self.script = tmp_path / "45-difyops-routes.sh"
        self.script.write_text(self.here((self.ROOT / "nginx/entrypoint.d/45-difyops-routes.sh").read_text()))
        self.env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "NGINX_ROUTES_POLL": "1", **created}
        self.watcher = None

    def here(self, text: str) -> str:
        return text.replace(rr.GATEWAY_ROUTES_DIR, str(self.routes)).replace(rr.GATEWAY_ROUTES_FILE, str(self.snippet))

    def run(self, *argv: str, env: dict | None = None):
        import subprocess

        return subprocess.run(argv, capture_output=True, text=True, timeout=90, env={**self.env, **(env or {})})

    def start(self):
        import subprocess

        # the watcher's loop outlives the script (as in the container): in a session of its own, killed after
        self.watcher = subprocess.Popen(["sh", str(self.script)], env=self.env, start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.watcher.wait(timeout=30)
        return self

    def stop(self):
        import os
        import signal

        if self.watcher is not None:
            try:
                os.killpg(self.watcher.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def upstreams(self) -> list[str]:
        return [ln for ln in self.snippet.read_text().splitlines() if ln.startswith(("set $dify_socket_io ",
                                                                                     "set $dify_openapi "))]

    def reloads(self) -> int:
        path = self.tmp / "reloads"
        return len(path.read_text().splitlines()) if path.exists() else 0


SWITCHES = {"NGINX_SOCKET_IO_UPSTREAM": ("api:5001", "api_websocket:5001"), "NGINX_OPENAPI_UPSTREAM": ("web:3000", "api:5001")}
CREATED_1_13 = {"NGINX_SOCKET_IO_UPSTREAM": "api:5001", "NGINX_OPENAPI_UPSTREAM": "web:3000"}


def test_switched_routes_are_applied_by_the_running_gateway_with_one_reload(tmp_path):
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "routes.env").write_text("SOMETHING_ELSE a:1 b:2\n")  # another name's line stays
    gateway = FakeGateway(tmp_path, **CREATED_1_13).start()
    try:
        done = gateway.run("sh", "-c", gateway.here(rr.routes_script(SWITCHES)))
        assert done.returncode == 0, done.stdout + done.stderr
        assert gateway.upstreams() == ["set $dify_socket_io api_websocket:5001;", "set $dify_openapi api:5001;"]
        assert gateway.reloads() == 1
        assert (tmp_path / "routes" / "routes.env").read_text() == (
            "SOMETHING_ELSE a:1 b:2\nNGINX_OPENAPI_UPSTREAM web:3000 api:5001\n"
            "NGINX_SOCKET_IO_UPSTREAM api:5001 api_websocket:5001\n")
        # the same container started again (its variables still 1.13.3's) renders the switched values
        exports = gateway.run("sh", str(gateway.script), "exports").stdout
        assert "NGINX_SOCKET_IO_UPSTREAM='api_websocket:5001'" in exports and "NGINX_OPENAPI_UPSTREAM='api:5001'" in exports
        # a container created with other values (a later deploy from .env, or the user's own) keeps them
        own = gateway.run("sh", str(gateway.script), "exports",
                          env={"NGINX_SOCKET_IO_UPSTREAM": "collab.internal:7000", "NGINX_OPENAPI_UPSTREAM": "api:5001"})
        assert "NGINX_SOCKET_IO_UPSTREAM='collab.internal:7000'" in own.stdout
    finally:
        gateway.stop()


def test_a_switch_nginx_refuses_is_reported_and_the_running_routes_stay(tmp_path):
    gateway = FakeGateway(tmp_path, **CREATED_1_13).start()
    try:
        (tmp_path / "broken").write_text("")
        before = gateway.snippet.read_text()
        done = gateway.run("sh", "-c", gateway.here(rr.routes_script(SWITCHES, wait_seconds=4)))
        assert done.returncode == 1 and "did not apply" in done.stderr
        assert gateway.snippet.read_text() == before and gateway.reloads() == 0
    finally:
        gateway.stop()


def test_where_no_gateway_watches_the_switch_says_so_and_leaves_the_file_for_the_next_start(tmp_path):
    gateway = FakeGateway(tmp_path, **CREATED_1_13)  # never started: no watcher
    done = gateway.run("sh", "-c", gateway.here(rr.routes_script(SWITCHES)))
    assert done.returncode == rr.NO_GATEWAY_HERE and "no gateway watches" in done.stdout
    exports = gateway.run("sh", str(gateway.script), "exports").stdout
    assert "NGINX_SOCKET_IO_UPSTREAM='api_websocket:5001'" in exports
    (tmp_path / "routes" / "routes.env").write_text("NGINX_SOCKET_IO_UPSTREAM api:5001 x;reboot\n")
    bad = gateway.run("sh", str(gateway.script), "exports")
    assert "NGINX_SOCKET_IO_UPSTREAM='api:5001'" in bad.stdout and "ignoring" in bad.stderr


def test_the_plan_carries_each_switched_route_from_the_running_value(tmp_path):
    plan = rr.make_plan({"DIFY_VERSION": "1.13.3"}, {"DIFY_VERSION": "1.16.1"}, OLD, NEW, {}, backup=False)
    assert plan.gateway_switches == {"NGINX_SOCKET_IO_UPSTREAM": ("api:5001", "api_websocket:5001"),
                                     "NGINX_OPENAPI_UPSTREAM": ("web:3000", "api:5001")}
