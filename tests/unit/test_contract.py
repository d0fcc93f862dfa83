"""The upstream facts the bundle depends on (difyops/release_sets), and the bundle checked
against them for every supported release: images, services and their clusters, the variables
each Dify service gets, secrets, networks, healthchecks, queues, routes.

Each release set's facts come from Dify's own files (file and commit in its `sources`); the
stand-in's behaviours and the tests that exercise them are in tests/standin/CONTRACT.md. The
compose files' defaults are the newest release's; an older release is checked for what the bundle
renders for it: its overlays only, and the images and gateway upstreams the task library passes
(release_sets.release_variables).
"""

from __future__ import annotations

import re

import pytest

from difyops import envfile, images, paths, release_sets, workers

from conftest import load_compose
from release_view import CLUSTERS, dify_services, env_text, needs_compose, render, view

RELEASES = release_sets.supported()
NEWEST = release_sets.default()
OLDEST = RELEASES[0]
COMPOSE = {name: load_compose(paths.COMPOSE_DIR / f"{name}.yml") for name in CLUSTERS}
VIEWS = {release: {cluster: view(release, cluster) for cluster in CLUSTERS} for release in RELEASES}
# Services of the bundle's own (not Dify's): the migration job, the storage owner, certbot.
BUNDLE_ONLY = {"migrate", "init_permissions", "certbot", "db_postgres", "redis", "nginx"}
STANDIN = paths.ROOT / "tests" / "standin"


def _services(release: str):
    rs = release_sets.load(release)
    return [(release, name) for name in rs.services]


ALL_SERVICES = [pair for release in RELEASES for pair in _services(release)]


def _svc(release: str, name: str) -> dict:
    return VIEWS[release][release_sets.load(release).services[name].cluster]["services"][name]


@pytest.mark.parametrize("release", RELEASES)
def test_release_set_parses_and_every_fact_has_a_source(release):
    rs = release_sets.load(release)
    unverified = [key for key, src in rs.sources.items() if "UNVERIFIED" in src.inferred_from]
    assert not unverified, f"Dify {release}: sources not yet read upstream: {', '.join(unverified)}"


def test_the_default_release_is_the_newest_supported():
    assert release_sets.default().release == RELEASES[-1] == "1.16.1"
    assert RELEASES == ["1.13.3", "1.15.0", "1.16.1"]


@pytest.mark.parametrize("key", list(NEWEST.images))
def test_the_image_catalogue_pins_the_default_release_images(key):
    image = NEWEST.image(key)
    assert images.find(image.variable).official(NEWEST.release) == image.ref, image.variable


@pytest.mark.parametrize("release", RELEASES)
def test_each_release_runs_its_services_in_their_clusters_and_no_others(release):
    mine = dify_services(release)
    every = {name: cluster for r in RELEASES for name, cluster in dify_services(r).items()}
    for cluster in CLUSTERS:
        present = set(VIEWS[release][cluster]["services"]) - BUNDLE_ONLY
        expected = {name for name, c in mine.items() if c == cluster}
        assert present == expected, f"Dify {release}, {cluster}: {sorted(present ^ expected)}"
        assert set(release_sets.services_in(release, cluster)) == expected
    # A service another release has and this one does not is nowhere in this release's files.
    absent = set(every) - set(mine)
    assert not [n for c in CLUSTERS for n in VIEWS[release][c]["services"] if n in absent]


def _given(svc: dict) -> set[str]:
    env = svc.get("environment") or {}
    return set(env) if isinstance(env, dict) else {item.split("=", 1)[0] for item in env}


@pytest.mark.parametrize("release,name", ALL_SERVICES)
def test_each_service_is_given_the_variables_it_needs(release, name):
    service = release_sets.load(release).services[name]
    svc = _svc(release, name)
    given = _given(svc)
    if svc.get("env_file"):
        # The whole .env: every variable .env.example defines reaches the service.
        given |= set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", paths.ENV_EXAMPLE.read_text(), re.M))
    missing = sorted(set(service.variables) - given)
    assert not missing, f"Dify {release}: {name} ({service.cluster}) is not given {', '.join(missing)}"


SERVICES_WITH_READS = [(release, name) for release, name in ALL_SERVICES
                       if release_sets.load(release).raw["services"][name].get("reads")]


@pytest.mark.parametrize("release,name", SERVICES_WITH_READS)
def test_each_dify_container_gets_only_the_variables_it_reads(release, name):
    rs = release_sets.load(release)
    reads = set(rs.raw["services"][name]["reads"])
    svc = _svc(release, name)
    assert not svc.get("env_file"), f"{name} must not get a whole env file"
    extra = sorted(_given(svc) - reads)
    assert not extra, f"Dify {release}: {name} is given variables its image does not read: {', '.join(extra)}"
    assert set(rs.services[name].variables) <= reads, f"{name}: variables the bundle sets must be ones it reads"


def test_worker_groups_use_the_release_queues(env_path):
    from difyops.config import load_settings
    from conftest import mock_context

    settings = load_settings(mock_context(env_path, {}))
    assert workers.release_queues(settings) == release_sets.for_env(settings.env).queues


# ----------------------------------------------------------------------------- routes and the gateway
SNIPPETS = paths.NGINX_DIR / "templates" / "snippets"
ROUTES = (SNIPPETS / "dify-routes.conf.template").read_text()


def _location_block(text: str, prefix: str) -> str:
    match = re.search(rf"location\s+(?:[=^~]*\s*)?{re.escape(prefix)}\s*\{{(.*?)\n\}}", text, re.S)
    assert match, f"no location {prefix}"
    return match.group(1)


@pytest.mark.parametrize("release", RELEASES)
def test_every_route_is_in_the_gateway(release):
    for route in release_sets.load(release).routes:
        assert re.search(rf"location\s+(?:[=^~]*\s*)?{re.escape(route.prefix)}(?:\s|\{{)", ROUTES), route.prefix


def test_websocket_routes_pass_the_upgrade_on():
    websocket = (SNIPPETS / "proxy-websocket.conf.template").read_text()
    plain = (SNIPPETS / "proxy.conf.template").read_text()
    default = (paths.NGINX_DIR / "templates" / "default.conf.template").read_text()
    ws_routes = [r for release in RELEASES for r in release_sets.load(release).routes if r.websocket]
    assert ws_routes, "a release has a WebSocket route"
    for route in ws_routes:
        block = _location_block(ROUTES, route.prefix)
        assert "snippets/proxy-websocket.conf;" in block and "snippets/proxy.conf;" not in block, route.prefix
    assert re.search(r"^proxy_set_header Upgrade \$http_upgrade;$", websocket, re.M)
    assert re.search(r"^proxy_set_header Connection \$difyops_connection_upgrade;$", websocket, re.M)
    assert 'Connection ""' not in websocket and "proxy_http_version 1.1;" in (SNIPPETS / "proxy-common.conf.template").read_text()
    assert re.search(r"map \$http_upgrade \$difyops_connection_upgrade \{\s*default upgrade;", default)
    # HTTP routes keep no hop-by-hop Connection towards Dify (and pass no upgrade).
    assert 'proxy_set_header Connection "";' in plain and "Upgrade" not in plain.split("\n", 3)[-1]


GATEWAY_NGINX_VARS = {"NGINX_SOCKET_IO_UPSTREAM": ("$dify_socket_io", "/socket.io/"),
                      "NGINX_OPENAPI_UPSTREAM": ("$dify_openapi", "/openapi/")}


def test_routed_upstreams_are_variables_that_default_to_the_newest_release_service():
    gateway = COMPOSE["gateway"]["services"]["nginx"]["environment"]
    defaults = (paths.NGINX_DIR / "entrypoint.d" / "15-difyops-defaults.envsh").read_text()
    variables = {r.upstream_variable: r for r in NEWEST.routes if r.upstream_variable}
    assert set(variables) == set(GATEWAY_NGINX_VARS)
    for variable, route in variables.items():
        nginx_var, prefix = GATEWAY_NGINX_VARS[variable]
        assert route.prefix == prefix
        assert f"proxy_pass http://{nginx_var};" in _location_block(ROUTES, prefix)
        assert f"set {nginx_var} ${{{variable}}};" in ROUTES
        assert gateway[variable] == f"${{{variable}:-{release_sets.upstream(NEWEST, route)}}}"
        assert f': "${{{variable}:=' in defaults and variable in defaults.split("export", 1)[1]


@pytest.mark.parametrize("release", RELEASES)
def test_the_gateway_upstreams_of_each_release_are_the_services_that_serve_them(release):
    rs = release_sets.load(release)
    got = release_sets.gateway_variables(rs)
    socket = next(r for r in rs.routes if r.websocket)
    assert got["NGINX_SOCKET_IO_UPSTREAM"] == f"{socket.to}:{rs.services[socket.to].port}"
    # /openapi/ is the api's from 1.16; before, the path reaches the web, as it always did.
    openapi = [r for r in rs.routes if r.prefix == "/openapi/"]
    assert got["NGINX_OPENAPI_UPSTREAM"] == ("api:5001" if openapi else "web:3000")
    assert {"1.13.3": "api:5001", "1.15.0": "api_websocket:5001",
            "1.16.1": "api_websocket:5001"}[release] == got["NGINX_SOCKET_IO_UPSTREAM"]


# ----------------------------------------------------------------------------- the plugin daemon
def _standin_daemon_rules():
    """The stand-in plugin daemon's copy of 0.5.3's and 0.6.3's configuration rules (CONTRACT.md)."""
    import importlib.util
    import sys

    path = STANDIN / "plugin_daemon" / "daemon_config.py"
    spec = importlib.util.spec_from_file_location("standin_daemon_config", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _daemon_line(release: str) -> str:
    tag = release_sets.load(release).image("plugin_daemon").tag
    return tag[:3]  # 0.5.3-local -> 0.5, 0.6.3-local -> 0.6


@pytest.mark.parametrize("release", RELEASES)
def test_the_standin_daemon_models_the_variables_the_release_daemon_reads(release):
    module = _standin_daemon_rules()
    reads = set(release_sets.load(release).raw["services"]["plugin_daemon"]["reads"])
    assert set(module.NAMES_BY_LINE[_daemon_line(release)]) == reads


def test_the_0_6_daemon_refuses_what_0_6_3_refuses_and_0_5_3_did_not_check():
    rules = _standin_daemon_rules()
    base = {"SERVER_KEY": "k", "DIFY_INNER_API_URL": "http://api:5001", "DIFY_INNER_API_KEY": "k", "DB_USERNAME": "u",
            "DB_PASSWORD": "p", "DB_HOST": "db", "DB_PORT": "5432", "DB_DATABASE": "dify_plugin", "PLATFORM": "local",
            "PLUGIN_WORKING_PATH": "/app/storage/cwd", "PLUGIN_REMOTE_INSTALLING_HOST": "0.0.0.0",
            "PLUGIN_REMOTE_INSTALLING_PORT": "5003"}
    assert rules.check(base, "0.5") is None and rules.check(base, "0.6") is None
    cases = {"SERVER_TZ": ("Mars/Olympus", 1, "'timezone' tag"), "LOG_LEVEL": ("info", 1, 'invalid LOG_LEVEL "info"'),
             "DB_GORM_LOG_LEVEL": ("debug", 1, "invalid gorm log level"),
             "DB_CONNECT_TIMEOUT": ("5", 2, 'missing unit in duration "5"')}
    for name, (value, code, message) in cases.items():
        refusal = rules.check({**base, name: value}, "0.6")
        assert refusal is not None and refusal.code == code and message in refusal.message, (name, refusal)
        assert rules.check({**base, name: value}, "0.5") is None, name  # 0.5.3 read none of them
    assert rules.check({**base, "SERVER_TZ": "Asia/Shanghai", "DB_CONNECT_TIMEOUT": "1m30s"}, "0.6") is None
    assert rules.check({k: v for k, v in base.items() if k != "PLUGIN_REMOTE_INSTALLING_HOST"}, "0.6").message \
        == "invalid configuration: plugin remote installing host is empty"


def test_api_worker_and_beat_get_dify_variables_and_no_ops_ones():
    for release in RELEASES:
        for cluster, names in (("api", ("api", "migrate")), ("worker", ("worker", "worker_beat"))):
            for name in names:
                svc = VIEWS[release][cluster]["services"][name]
                assert str(svc["env_file"]).startswith("${DIFYOPS_DIFY_ENV_FILE:?"), name
                assert not [k for k in _given(svc) if envfile.is_ops_variable(k)], name
        for name in ("api", "worker", "worker_beat"):
            service = release_sets.load(release).services[name]
            assert not [v for v in service.variables if envfile.is_ops_variable(v)], name


# ----------------------------------------------------------------------------- secrets
@pytest.mark.parametrize("release", RELEASES)
def test_each_secret_reaches_exactly_the_services_that_read_it_from_one_variable(release):
    rs = release_sets.load(release)
    for name, secret in rs.secrets.items():
        for service, variable in secret.consumers.items():
            value = _svc(release, service)["environment"][variable]
            assert value.startswith(f"${{{name}:?") or value.startswith(f"${{{name}}}") \
                or value.startswith(f"${{{name}:-"), (release, name, service, value)
        # No container with an explicit environment gets it under another service's name.
        for other in set(rs.services) - set(secret.consumers):
            svc = _svc(release, other)
            if svc.get("env_file"):
                continue  # api, worker, beat: the whole Dify env file (see the xfail below)
            leaked = [k for k, v in (svc.get("environment") or {}).items() if f"${{{name}" in str(v)]
            assert not leaked, (release, name, other, leaked)


def test_the_agent_secrets_stay_out_of_the_api_and_worker_env_file():
    text = envfile.dify_env_text(envfile.values_of(env_text(NEWEST.release)))
    kept = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")}
    readers = {"api", "worker", "worker_beat", "api_websocket"}
    for name, secret in NEWEST.secrets.items():
        if not readers & set(secret.consumers):
            assert name not in kept, name


def test_secrets_are_generated_in_the_form_their_services_accept_and_malformed_ones_refused():
    key = NEWEST.secrets["DIFY_AGENT_SERVER_SECRET_KEY"]
    rule = _agent_secret_rule()
    for _ in range(20):
        value = key.generate()
        assert key.problem(value) is None and len(rule.decode(value)) == 32 and rule.settings_problem(
            {"DIFY_AGENT_SERVER_SECRET_KEY": value, "DIFY_AGENT_STUB_API_BASE_URL": "http://x"}) is None
    hex64 = "ab" * 32  # envfile.new_secret()'s form: 64 hex characters decode to 48 bytes
    for bad in (hex64, key.generate() + "=", "c2hvcnQ", "a+b/" * 11, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"):
        assert key.problem(bad), bad
    for bad in (hex64, key.generate() + "=", "c2hvcnQ", "a+b/" * 11):
        # The bundle's check and the stand-in's copy of the backend's rule refuse the same values.
        assert rule.settings_problem({"DIFY_AGENT_SERVER_SECRET_KEY": bad}), bad
    assert "48" in key.problem(hex64)
    token = NEWEST.secrets["DIFY_AGENT_API_TOKEN"]
    assert token.problem(token.generate()) is None and token.problem("dify-agent-run-token-for-dev-only")
    assert NEWEST.secrets["DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN"].problem("") is not None


def _agent_secret_rule():
    import importlib.util

    path = STANDIN / "agent_backend" / "dify_agent" / "server" / "secret.py"
    spec = importlib.util.spec_from_file_location("standin_agent_secret", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- networks and isolation
@pytest.mark.parametrize("release", RELEASES)
def test_a_service_with_peers_shares_networks_with_them_only(release):
    rs = release_sets.load(release)
    where = {n: set(_svc(release, n).get("networks") or []) for n in rs.services}
    for name, service in rs.services.items():
        if service.peers is None:
            continue
        neighbours = {other for other, nets in where.items() if other != name and nets & where[name]}
        assert neighbours <= set(service.peers), (name, sorted(neighbours - set(service.peers)))
    for key, network in rs.networks.items():
        members = {n for n, nets in where.items() if key in nets}
        assert members == set(network.members), (key, sorted(members ^ set(network.members)))


def test_the_local_sandbox_reaches_nothing_but_the_agent_backend_and_its_proxy():
    svc = _svc(NEWEST.release, "local_sandbox")
    assert set(svc["networks"]) == {"agent_sandbox", "agent_egress"}
    assert all(NEWEST.networks[n].internal for n in svc["networks"])
    assert svc["environment"]["HTTP_PROXY"].startswith("http://agent_ssrf_proxy:")
    assert svc["environment"]["HTTPS_PROXY"] == svc["environment"]["HTTP_PROXY"]
    proxy = _svc(NEWEST.release, "agent_ssrf_proxy")
    assert set(proxy["networks"]) == {"agent_egress", "app"}  # app: the one network with a route out


# ----------------------------------------------------------------------------- health, images, users
def _probe_tool(test: list[str]) -> str:
    if test[0] == "CMD-SHELL":
        return test[1].split()[0]
    return test[1].rsplit("/", 1)[-1]


@pytest.mark.parametrize("release,name", ALL_SERVICES)
def test_each_service_has_a_healthcheck_its_image_can_run(release, name):
    rs = release_sets.load(release)
    service = rs.services[name]
    test = _svc(release, name)["healthcheck"]["test"]
    if service.image is not None:
        tool = _probe_tool(test)
        assert tool in rs.image(service.image).tools, f"{name}: {tool} is not in its image"
    if service.health is not None and service.health.path:
        probe = " ".join(test)
        assert service.health.path in probe and str(service.health.port) in probe.replace(
            "${DIFY_PORT:-5001}", "5001").replace("${SANDBOX_PORT:-8194}", "8194"), (name, probe)


def _default(text: str, variable: str) -> str:
    """The default a compose file gives ${VARIABLE:-default}, nested ${DIFY_VERSION:-x} resolved."""
    match = re.search(r"\$\{" + variable + r":-((?:[^${}]|\$\{[^}]*\})*)\}", text)
    assert match, f"no ${{{variable}:-...}} default"
    return re.sub(r"\$\{DIFY_VERSION:-([^}]*)\}", r"\1", match.group(1))


COMPOSE_TEXT = "".join(p.read_text() for p in sorted(paths.COMPOSE_DIR.glob("*.yml")))


def test_compose_defaults_are_the_newest_release_images():
    assert _default(COMPOSE_TEXT, "DIFY_VERSION") == NEWEST.release
    for image in NEWEST.images.values():
        assert _default(COMPOSE_TEXT, image.variable) == image.ref, image.variable
    dev_example = (paths.COMPOSE_DIR / "dev" / "middleware.env.example").read_text()
    assert f"\nDIFY_VERSION={NEWEST.release}\n" in dev_example


@pytest.mark.parametrize("release", RELEASES)
def test_image_variables_name_every_dify_image_of_the_release(release):
    rs = release_sets.load(release)
    got = release_sets.image_variables(release)
    assert got == {image.variable: image.ref for image in rs.images.values()}
    assert {"DIFY_API_IMAGE", "DIFY_WEB_IMAGE", "DIFY_PLUGIN_DAEMON_IMAGE", "DIFY_SANDBOX_IMAGE"} <= set(got)
    everywhere = "".join(p.read_text() for p in
                         [paths.COMPOSE_DIR / f"{c}.yml" for c in CLUSTERS] +
                         [p for c in CLUSTERS for p in release_sets.overlay_files(release, c)])
    for variable in got:
        assert f"${{{variable}:-" in everywhere, f"Dify {release}: no compose file takes {variable}"
    variables = release_sets.release_variables(release)
    assert variables["DIFY_VERSION"] == release and set(got) <= set(variables)


def test_every_path_a_non_root_image_writes_is_given_to_its_user_before_it_starts():
    # Dify's api, worker and beat run as uid 1001 (since 1.10): a volume they write must be theirs.
    for release in RELEASES:
        rs = release_sets.load(release)
        owner = VIEWS[release]["api"]["services"]["init_permissions"]
        given = {v.split(":", 1)[1]: v.split(":", 1)[0] for v in owner["volumes"]}
        for image in rs.images.values():
            if image.runs_as_root:
                continue
            for name, service in rs.services.items():
                if service.image != image.key:
                    continue
                for mount in _svc(release, name).get("volumes") or []:
                    volume, target = mount.split(":", 2)[:2]
                    assert target not in image.writes or given.get(target) == volume, \
                        f"Dify {release}: {name} writes {volume} at {target}: not given to {image.user}"
    owner = COMPOSE["api"]["services"]["init_permissions"]
    assert owner["environment"]["DIFYOPS_STORAGE_OWNER"] == "${DIFYOPS_STORAGE_OWNER:-" + NEWEST.image("api").user + "}"
    assert owner["image"] == COMPOSE["api"]["services"]["api"]["image"]  # the api image itself: nothing more to pull
    assert owner["user"] == "0:0" and owner["cap_drop"] == ["ALL"] and owner["network_mode"] == "none"
    assert owner["profiles"] == ["init"]  # never started by `up`: run, then removed, by the tasks


@pytest.mark.parametrize("release", RELEASES)
def test_the_api_images_services_run_in_the_mode_the_release_says(release):
    rs = release_sets.load(release)
    for name, service in rs.services.items():
        if service.mode:
            assert _svc(release, name)["environment"]["MODE"] == service.mode, name
    if "api_websocket" in rs.services:
        env = _svc(release, "api_websocket")["environment"]
        assert "GeventWebSocketWorker" in env["SERVER_WORKER_CLASS"] and env["SERVER_WORKER_AMOUNT"].endswith(":-1}")


# ----------------------------------------------------------------------------- renamed variables
@pytest.mark.parametrize("release", RELEASES)
def test_renamed_variables_the_compose_files_read_prefer_the_new_name(release):
    rs = release_sets.load(release)
    for old, new in rs.variables_renamed.items():
        for match in re.finditer(r"\$\{" + old + r"[:}]", COMPOSE_TEXT):
            before = COMPOSE_TEXT[max(0, match.start() - len(new) - 6):match.start()]
            assert f"${{{new}:-" in before, f"{old} is read without its new name {new} first"
    assert release_sets.renamed_in({"SSRF_SANDBOX_HOST": "sandbox", "ENABLE_AGENT_V2": ""}, rs) == (
        {"SSRF_SANDBOX_HOST": "SSRF_SANDBOX_PROXY_HOST"} if "SSRF_SANDBOX_HOST" in rs.variables_renamed else {})


# ----------------------------------------------------------------------------- rendered by Compose
@needs_compose
@pytest.mark.parametrize("release", RELEASES)
def test_the_bundle_renders_each_release_as_its_set_says(release, tmp_path):
    """Every cluster rendered by `docker compose config` with the release's overlays and variables:
    the images are the release's, the services are its own, the plugin daemon starts under the
    stand-in's copy of that daemon's rules, and the gateway routes the release's way."""
    rs = release_sets.load(release)
    rules = _standin_daemon_rules()
    refs = {image.ref for image in rs.images.values()}
    for cluster in CLUSTERS:
        doc = render(release, cluster, tmp_path)
        for name, svc in doc["services"].items():
            if name in rs.services and rs.services[name].image:
                assert svc["image"] == rs.image(rs.services[name].image).ref, (release, name)
            elif name in ("migrate", "init_permissions"):
                assert svc["image"] in refs
        if cluster == "support":
            environment = doc["services"]["plugin_daemon"]["environment"]
            refusal = rules.check({"PLATFORM": "local", **environment}, _daemon_line(release))
            assert refusal is None, (release, refusal)
        if cluster == "gateway":
            environment = doc["services"]["nginx"]["environment"]
            for variable, value in release_sets.gateway_variables(rs).items():
                assert environment[variable] == value, (release, variable)
    support = render(release, "support", tmp_path, {"DIFYOPS_DATA_HA": "true"})  # HA's Sentinel settings too
    assert rules.check({"PLATFORM": "local", **support["services"]["plugin_daemon"]["environment"]},
                       _daemon_line(release)) is None


@needs_compose
def test_the_oldest_release_renders_as_before_the_newer_ones_existed(tmp_path):
    """1.13.3 with what the task library passes for it: no service, network, variable or image of a
    later release; its images, its gateway upstreams."""
    later = {name for r in RELEASES[1:] for name in dify_services(r)} - set(dify_services(OLDEST))
    later_vars = {"AGENT_BACKEND_BASE_URL", "AGENT_BACKEND_API_TOKEN", "SERVER_CONSOLE_API_URL",
                  "COOKIEYES_SITE_KEY", "NEXT_PUBLIC_ENABLE_AGENT_V2", "WORKFLOW_GENERATION_TIMEOUT_MS"}
    rs = release_sets.load(OLDEST)
    for cluster in CLUSTERS:
        doc = render(OLDEST, cluster, tmp_path)
        assert not set(doc["services"]) & later, (cluster, set(doc["services"]) & later)
        assert set(doc.get("networks") or {}) <= {"backend", "ssrf", "app"}, cluster
        for name, svc in doc["services"].items():
            # (Compose folds env_file into environment: api, worker and beat get .env's variables.)
            if name in rs.services and not VIEWS[OLDEST][cluster]["services"][name].get("env_file"):
                assert not set(svc.get("environment") or {}) & later_vars, (name, set(svc["environment"]) & later_vars)
    nginx = render(OLDEST, "gateway", tmp_path)["services"]["nginx"]["environment"]
    assert nginx["NGINX_SOCKET_IO_UPSTREAM"] == "api:5001" and nginx["NGINX_OPENAPI_UPSTREAM"] == "web:3000"
    api = render(OLDEST, "api", tmp_path)["services"]["api"]
    assert api["image"] == "langgenius/dify-api:1.13.3" and "AGENT_BACKEND_BASE_URL" not in api["environment"]


@needs_compose
def test_the_newest_release_renders_its_new_services_as_upstream_has_them(tmp_path):
    doc = render(NEWEST.release, "support", tmp_path)
    agent = doc["services"]["agent_backend"]["environment"]
    secret = agent["DIFY_AGENT_SERVER_SECRET_KEY"]
    assert NEWEST.secrets["DIFY_AGENT_SERVER_SECRET_KEY"].problem(secret) is None
    assert _agent_secret_rule().settings_problem(agent) is None
    assert agent["DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN"] == doc["services"]["local_sandbox"]["environment"][
        "SHELLCTL_AUTH_TOKEN"]
    assert agent["DIFY_AGENT_INNER_API_KEY"] == doc["services"]["plugin_daemon"]["environment"]["DIFY_INNER_API_KEY"]
    assert agent["DIFY_AGENT_REDIS_URL"].endswith("@redis:6379/2")
    api = render(NEWEST.release, "api", tmp_path)["services"]
    assert api["api"]["environment"]["AGENT_BACKEND_API_TOKEN"] == agent["DIFY_AGENT_API_TOKEN"]
    assert api["api_websocket"]["environment"]["SERVER_WORKER_CLASS"] == \
        "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
    # Without its secrets the overlay refuses to render, with one line naming the variable.
    import subprocess
    from difyops import clusters
    from difyops.config import load_settings
    env_file = tmp_path / ".env-nosecret"
    env_file.write_text(envfile.generate(paths.ENV_EXAMPLE.read_text(), {
        "DIFYOPS_STACK": "u", **{name: "" for name in NEWEST.secrets if name.startswith("DIFY_AGENT_")}}))
    argv = ["docker", "compose", "-f", str(paths.COMPOSE_DIR / "support.yml"), "-f",
            str(paths.COMPOSE_DIR / "support.agent.yml"), "--env-file", str(env_file), "config", "-q"]
    result = subprocess.run(argv, capture_output=True, text=True, env={
        "PATH": "/usr/local/bin:/usr/bin:/bin", **clusters.compose_env(load_settings(None, env_file))})
    assert result.returncode != 0 and "is not set (run invoke env.init)" in result.stderr


# ----------------------------------------------------------------------------- queues and workflow runs
@pytest.mark.parametrize("release", ["1.13.3", "1.16.1"])
def test_the_stand_in_lists_the_release_queues(release):
    # v1 and v2 stand in for 1.13.3, v3 for 1.16.1: each lists its release's queues.
    rs = release_sets.load(release)
    entrypoint = (STANDIN / "api" / "docker" / "entrypoint.sh").read_text()
    assert 'DEFAULT_QUEUES="${CELERY_QUEUES:-${RELEASE_QUEUES}}"' in entrypoint
    assert "print(config.DEFAULT_QUEUES)" in entrypoint
    config = (STANDIN / "api" / "standin" / "config.py").read_text()
    block = config[config.index(f'    "{release}": ('):]
    listed = "".join(re.findall(r'"([a-z_,]+)"', block[:block.index("),")]))
    assert tuple(listed.split(",")) == rs.queues
    assert rs.workflow_runs.queue in rs.queues and "dataset_summary" in rs.queues


def test_the_stand_in_images_stand_in_for_the_releases_they_say():
    config = (STANDIN / "api" / "standin" / "config.py").read_text()
    assert 'UPSTREAM_VERSION = "1.13.3"' in config and 'UPSTREAM_VERSIONS = {"v3": "1.16.1"}' in config
    assert OLDEST == "1.13.3" and NEWEST.release == "1.16.1"


def test_upstream_defaults_are_the_bundles():
    rs = NEWEST
    assert rs.defaults["CELERY_WORKER_AMOUNT"] == _default(COMPOSE_TEXT, "CELERY_WORKER_AMOUNT")
    medium = (paths.COMPOSE_DIR / "sizes" / "medium.env").read_text()
    assert f"\nCELERY_WORKER_AMOUNT={rs.defaults['CELERY_WORKER_AMOUNT']}\n" in medium  # medium = the defaults
    example = paths.ENV_EXAMPLE.read_text()
    for variable in rs.workflow_runs.limit_variables:
        assert rs.defaults[variable] == str(rs.workflow_runs.default_seconds)
        assert f"\n{variable}={rs.defaults[variable]}\n" in example, variable
    drain = rs.workflow_runs.default_seconds + workers.DRAIN_MARGIN_SECONDS
    assert _default(COMPOSE_TEXT, "WORKER_STOP_GRACE_PERIOD") == f"{drain}s"


# ----------------------------------------------------------------------------- migrations, start commands
def test_the_stand_in_migrates_as_the_release_does():
    for release in RELEASES:
        rs = release_sets.load(release)
        standin = STANDIN / "api" / "standin"
        assert f'LOCK_NAME = "{rs.migrations.lock}"' in (standin / "migrations.py").read_text()
        assert f"LOCK_TTL_SECONDS = {rs.migrations.lock_ttl_seconds}" in (standin / "migrations.py").read_text()
        commands_py = (standin / "commands.py").read_text()
        assert f'click.echo("{rs.migrations.skipped_message}")' in commands_py
        assert f'" {rs.migrations.head_marker}"' in commands_py
    assert COMPOSE["api"]["services"]["migrate"]["environment"]["MODE"] == "migration"


def test_swarm_overlays_write_no_start_command_down_and_place_every_new_service():
    # The secrets shim runs the image's own ENTRYPOINT and CMD, read from the image (plugin daemon 0.6
    # changed both): an overlay that pins one would go stale at the next release.
    for path in sorted((paths.COMPOSE_DIR / "swarm").glob("*.yml")):
        hints = (load_compose(path).get("x-difyops-swarm") or {})
        assert not [name for name, hint in hints.items() if "entrypoint" in (hint or {})], path.name
    for release in RELEASES:
        for cluster in CLUSTERS:
            for overlay in release_sets.overlay_files(release, cluster):
                added = set(load_compose(overlay)["services"]) - set(COMPOSE[cluster]["services"])
                if not added:
                    continue
                swarm = release_sets.overlay_files(release, cluster, swarm=True)
                assert any(p.name == overlay.name for p in swarm), f"{overlay.name} has no Swarm overlay"
                placed = load_compose(paths.COMPOSE_DIR / "swarm" / overlay.name)["services"]
                for name in added:
                    assert placed[name]["deploy"]["placement"]["constraints"], name


def _dockerfile_stage(target: str) -> str:
    text = (STANDIN / "Dockerfile").read_text()
    start = re.search(rf"^FROM \S+ AS {re.escape(target)}$", text, re.M).end()
    end = re.search(r"^FROM ", text[start:], re.M)
    return text[start:start + end.start()] if end else text[start:]


def _json_list(stage: str, keyword: str) -> list[str] | None:
    import json

    match = re.search(rf"^{keyword} (\[.*\])$", stage, re.M)
    return json.loads(match.group(1)) if match else None


@pytest.mark.parametrize("target,key", [("plugin-daemon-0.6", "plugin_daemon"), ("agent-backend", "agent_backend"),
                                        ("local-sandbox", "local_sandbox")])
def test_the_v3_stand_ins_start_and_run_as_the_release_images_do(target, key):
    image = NEWEST.image(key)
    stage = _dockerfile_stage(target)
    assert (_json_list(stage, "ENTRYPOINT") or []) == list(image.entrypoint), target
    assert (_json_list(stage, "CMD") or []) == list(image.command), target
    user = re.findall(r"^USER (\S+)$", stage, re.M)
    assert (user[-1] if user else "") in ("", "root") if image.runs_as_root else user, target
    image_name = {"plugin_daemon": "dify-plugin-daemon", "agent_backend": "dify-agent-backend",
                  "local_sandbox": "dify-agent-local-sandbox"}[key]
    assert f"{target}:{image_name}" in (STANDIN / "build.sh").read_text(), target  # built as :v3


@pytest.mark.parametrize("release", RELEASES)
def test_every_image_of_a_release_starts_something_and_says_who_it_runs_as(release):
    for image in release_sets.load(release).images.values():
        assert image.start_command, image.key
        assert image.runs_as_root or re.fullmatch(r"\d+:\d+", image.user), image.key
        assert not image.writes or not image.runs_as_root, image.key
        assert image.tools, f"{image.key}: say which programs a healthcheck may use"


def test_a_malformed_release_set_is_refused_with_one_line():
    rs = NEWEST.raw
    broken = dict(rs, queues={"names": ["dataset", "dataset"], "source": "api_entrypoint"})
    with pytest.raises(release_sets.ReleaseSetError, match="lists a queue twice"):
        release_sets.parse(broken, "x.yaml")
    broken = dict(rs, sources=dict(rs["sources"], api_commands={"repo": "r", "path": "p", "commit": None}))
    with pytest.raises(release_sets.ReleaseSetError, match="inferred_from"):
        release_sets.parse(broken, "x.yaml")
    broken = dict(rs, secrets={"X_KEY": {"form": "hex", "consumers": {"api": "X"}, "source": "compose_template"}})
    with pytest.raises(release_sets.ReleaseSetError, match="form 'hex' is not one of"):
        release_sets.parse(broken, "x.yaml")
    broken = dict(rs, overlays={"api": ["websocket.yml"]})
    with pytest.raises(release_sets.ReleaseSetError, match=r"must be files named api\.<what>\.yml"):
        release_sets.parse(broken, "x.yaml")
    services = dict(rs["services"], local_sandbox=dict(rs["services"]["local_sandbox"], peers=["nobody"]))
    with pytest.raises(release_sets.ReleaseSetError, match="nobody are not `services`"):
        release_sets.parse(dict(rs, services=services), "x.yaml")
    with pytest.raises(release_sets.ReleaseSetError, match="Dify 0.1.0 has no release set"):
        release_sets.for_version("0.1.0")


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", duration))


def test_the_worker_healthcheck_is_no_heavier_than_dify_allows():
    # Dify ships `celery inspect ping` off (COMPOSE_WORKER_HEALTHCHECK_DISABLED=true): every check
    # starts a Celery client and spikes the CPU. Here: only this worker is pinged (-d), every few
    # seconds until it is first healthy, then every 5 minutes (not Dify's 30 s when it is on).
    hc = COMPOSE["worker"]["services"]["worker"]["healthcheck"]
    command = " ".join(hc["test"])
    assert "celery_healthcheck.celery inspect ping -d celery@$$HOSTNAME" in command
    assert _seconds(_default(hc["interval"], "WORKER_HEALTHCHECK_INTERVAL")) >= 300
    assert _seconds(hc["start_interval"]) <= 5 and _seconds(hc["start_period"]) >= 60
    assert "WORKER_HEALTHCHECK_INTERVAL=5m" in paths.ENV_EXAMPLE.read_text()
