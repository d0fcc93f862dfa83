"""The failover bound without Docker (docs/ha.md, "Failover bound"): HAProxy's timeouts and
keepalives (db_postgres and redis-front), PostgreSQL's, Dify's pool settings in .env.example, the
sentinels' addresses and the alerts agree with the bounds in difyops/ha.py. `nox -s ha` measures
them for real (tests/ha)."""

from __future__ import annotations

import re

import yaml
from conftest import load_compose

from difyops import envfile, ha, paths

HAPROXY_CFG = paths.COMPOSE_DIR / "data" / "haproxy" / "haproxy.cfg"
REDIS_FRONT_CFG = paths.COMPOSE_DIR / "data" / "haproxy" / "redis-front.cfg"
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 0.001}  # HAProxy's default unit is ms


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|)", value).groups()
    return int(number) * UNITS[unit]


def section(name: str, cfg=HAPROXY_CFG) -> dict[str, list[str]]:
    """Keyword -> arguments of one section of an HAProxy configuration (comments dropped)."""
    lines, inside = {}, False
    for raw in cfg.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not raw.startswith((" ", "\t")):
            inside = line.strip() == name
            continue
        if inside:
            words = line.split()
            key = " ".join(words[:2]) if words[0] in ("timeout", "option", "hold") else words[0]
            lines[key] = words[2:] if words[0] in ("timeout", "option", "hold") else words[1:]
    return lines


DEFAULTS = section("defaults")


def server_options(defaults=None) -> dict[str, str]:
    words, options = list((defaults or DEFAULTS)["default-server"]), {}
    while words:
        key = words.pop(0)
        if key != "check":  # the one flag without a value
            options[key] = words.pop(0)
    return options


def test_a_session_caught_connecting_to_a_lost_node_is_closed_within_the_cut_bound():
    attempts = int(DEFAULTS["retries"][0]) + 1
    assert attempts * seconds(DEFAULTS["timeout connect"][0]) <= ha.SESSION_CUT_SECONDS


def test_no_forced_shutdown_of_a_nodes_sessions():
    # HAProxy 3.0's forced shutdown (on-marked-down shutdown-sessions) freezes a session that is
    # connecting at that moment: nothing ends it (issue 15). The kernel, keepalives and tcp-ut do.
    assert "on-marked-down" not in server_options()
    assert not [ln for ln in HAPROXY_CFG.read_text().splitlines() if "shutdown-sessions" in ln.split("#", 1)[0]]


def test_idle_sessions_outlive_difys_pool_recycle():
    recycle = int(envfile.read(paths.ENV_EXAMPLE)["SQLALCHEMY_POOL_RECYCLE"])
    for side in ("client", "server"):
        idle = seconds(DEFAULTS[f"timeout {side}"][0])
        assert idle >= 3600, "idle pools and Dify's longest silent queries need the hour"
        assert recycle < idle, "Dify's pool renews a connection before HAProxy closes it as idle"
    assert seconds(DEFAULTS["timeout client-fin"][0]) <= ha.SESSION_CUT_SECONDS


def test_dead_peers_are_found_within_the_cut_bound():
    for side in ("srv", "cli"):
        assert f"option {side}tcpka" in DEFAULTS
        found = seconds(DEFAULTS[f"{side}tcpka-idle"][0]) + seconds(DEFAULTS[f"{side}tcpka-intvl"][0]) * int(
            DEFAULTS[f"{side}tcpka-cnt"][0])
        assert found <= ha.SESSION_CUT_SECONDS, f"{side} side: {found}s"
    # Unacknowledged data: the front's retransmission limit. Linux gives up after
    # TCP_RTO_MIN (200 ms) x (2^(n+1) - 1) for tcp_retries2 = n.
    front = load_compose(paths.COMPOSE_DIR / "data-ha.yml")["services"]["db_postgres"]
    retries = int(front["sysctls"]["net.ipv4.tcp_retries2"])
    assert 0.2 * (2 ** (retries + 1) - 1) <= ha.SESSION_CUT_SECONDS
    assert retries >= 3, "a few lost packets must not cut a session"


def test_a_lost_node_leaves_the_balance_within_seconds():
    options = server_options()
    assert "libc" not in options["init-addr"], "HAProxy's manual: no libc with runtime resolvers"
    assert int(options["fall"]) * seconds(options["inter"]) + seconds(DEFAULTS["timeout check"][0]) <= ha.SESSION_CUT_SECONDS
    hold = section("resolvers docker")
    assert all(seconds(hold[f"hold {status}"][0]) <= ha.SESSION_CUT_SECONDS for status in ("nx", "other", "refused", "timeout"))


def test_postgresql_finds_gone_clients_and_cancels_their_queries():
    doc = load_compose(paths.COMPOSE_DIR / "data-ha.yml")
    text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", doc["x-patroni-configuration"])
    local = yaml.safe_load(text)["postgresql"]["parameters"]  # applied at every start
    found = local["tcp_keepalives_idle"] + local["tcp_keepalives_interval"] * local["tcp_keepalives_count"]
    assert found <= 2 * ha.SESSION_CUT_SECONDS
    assert local["tcp_user_timeout"] <= ha.SESSION_CUT_SECONDS * 1000
    assert 0 < local["client_connection_check_interval"] <= 5000


def test_difys_pool_settings():
    example = envfile.read(paths.ENV_EXAMPLE)
    assert example["SQLALCHEMY_POOL_PRE_PING"] == "true"
    # The api reads DB_EXTRAS as libpq parameters, the plugin daemon as PostgreSQL options.
    assert not example.get("DB_EXTRAS")


def test_the_alert_fires_past_the_failover_bound():
    rules = yaml.safe_load((paths.ROOT / "monitoring" / "prometheus" / "rules" / "postgres.yml").read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "PostgreSQLFailoverTooSlow")
    assert seconds(rule["for"]) == ha.FAILOVER_BOUND_SECONDS
    assert f"{ha.FAILOVER_BOUND_SECONDS} s" in rule["annotations"]["description"]
    assert f"{ha.FAILOVER_BOUND_SECONDS} s" in (paths.ROOT / "docs" / "ha.md").read_text()


# ---- Redis: the nodes' front (redis-front) and the sentinels

FRONT_DEFAULTS = section("defaults", REDIS_FRONT_CFG)
HA_DOC = load_compose(paths.COMPOSE_DIR / "data-ha.yml")


def _front_listeners() -> dict[int, str]:
    """Port of redis-front -> the node (service) its one server is."""
    found, port = {}, None
    for raw in REDIS_FRONT_CFG.read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if words[:1] == ["listen"]:
            port = None
        elif words[:1] == ["bind"] and words[1].startswith(":"):
            port = int(words[1][1:])
        elif words[:1] == ["server"] and port is not None:
            found[port] = words[2].rsplit(":", 1)[0]
    return found


def _down_after_seconds() -> float:
    env = HA_DOC["x-sentinel"]["environment"]["DOWN_AFTER_MS"]
    return int(re.fullmatch(r"\$\{REDIS_SENTINEL_DOWN_AFTER_MS:-(\d+)\}", env).group(1)) / 1000


def test_redis_front_has_one_port_per_node_and_every_address_given_out_is_one_of_them():
    assert _front_listeners() == {port: node for node, port in ha.REDIS_FRONT_PORTS.items()}
    services = HA_DOC["services"]
    for node, port in ha.REDIS_FRONT_PORTS.items():
        argv = services[node]["command"]
        announced = (argv[argv.index("--replica-announce-ip") + 1], int(argv[argv.index("--replica-announce-port") + 1]))
        assert announced == (ha.REDIS_FRONT, port), node
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1:replica.index("--replicaof") + 3] == [
        ha.REDIS_FRONT, str(ha.REDIS_FRONT_PORTS["redis"])]
    monitor = next(ln for ln in HA_DOC["x-sentinel"]["command"][2].splitlines() if "sentinel monitor" in ln).split()
    assert monitor[3:5] == [ha.REDIS_FRONT, str(ha.REDIS_FRONT_PORTS["redis"])]
    assert ha.REDIS_FRONT in ha.extra_services({"DIFYOPS_DATA_HA": "true"}, "data")


def test_redis_front_cuts_a_lost_nodes_sessions_within_the_cut_bound():
    attempts = int(FRONT_DEFAULTS["retries"][0]) + 1
    assert attempts * seconds(FRONT_DEFAULTS["timeout connect"][0]) <= ha.SESSION_CUT_SECONDS
    for side in ("srv", "cli"):
        assert f"option {side}tcpka" in FRONT_DEFAULTS
        found = seconds(FRONT_DEFAULTS[f"{side}tcpka-idle"][0]) + seconds(
            FRONT_DEFAULTS[f"{side}tcpka-intvl"][0]) * int(FRONT_DEFAULTS[f"{side}tcpka-cnt"][0])
        assert found <= ha.SESSION_CUT_SECONDS, f"{side} side: {found}s"
    retries = int(HA_DOC["services"][ha.REDIS_FRONT]["sysctls"]["net.ipv4.tcp_retries2"])
    assert 3 <= retries and 0.2 * (2 ** (retries + 1) - 1) <= ha.SESSION_CUT_SECONDS
    options = server_options(FRONT_DEFAULTS)
    assert "on-marked-down" not in options and "libc" not in options["init-addr"]
    assert int(options["fall"]) * seconds(options["inter"]) + seconds(FRONT_DEFAULTS["timeout check"][0]) <= ha.SESSION_CUT_SECONDS
    assert not [ln for ln in REDIS_FRONT_CFG.read_text().splitlines() if "shutdown-sessions" in ln.split("#", 1)[0]]


def test_a_session_begun_as_the_node_goes_ends_within_the_cut_bound():
    # Until two checks have failed (each given up to `timeout check`), new sessions still go to the
    # lost node and give up only after every connect attempt; 2 s are left for the resolver's
    # hold, the kernel's close and the ha test's 0.5 s sampling (2 s connects: measured 14.3 s).
    options = server_options(FRONT_DEFAULTS)
    noticed = int(options["fall"]) * (seconds(options["inter"]) + seconds(FRONT_DEFAULTS["timeout check"][0]))
    attempts = (int(FRONT_DEFAULTS["retries"][0]) + 1) * seconds(FRONT_DEFAULTS["timeout connect"][0])
    assert noticed + attempts <= ha.SESSION_CUT_SECONDS - 2


def test_redis_front_leaves_idle_connections_alone():
    # Pub/sub subscribers and Celery's control channel sit idle for as long as they like, and
    # Celery does not reopen a control channel closed under it: dead peers are found by keepalive.
    for side in ("client", "server"):
        value = FRONT_DEFAULTS[f"timeout {side}"][0]
        assert value.endswith("d") and int(value[:-1]) >= 1, f"timeout {side} {value}"


def test_the_redis_failover_fits_the_bound():
    # The sentinels call the primary down after down-after and promote within a second or two; a
    # client's session to the lost node is closed within the cut bound, and it asks them again.
    assert _down_after_seconds() + ha.SESSION_CUT_SECONDS <= ha.FAILOVER_BOUND_SECONDS


def test_the_redis_alert_fires_past_the_failover_bound():
    rules = yaml.safe_load((paths.ROOT / "monitoring" / "prometheus" / "rules" / "redis.yml").read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "RedisFailoverTooSlow")
    # The sentinels' status turns from ok after down-after: the rule waits for the rest of the bound.
    assert seconds(rule["for"]) + _down_after_seconds() == ha.FAILOVER_BOUND_SECONDS
    assert 'job="redis_sentinel"' in rule["expr"]
    assert f"{ha.FAILOVER_BOUND_SECONDS} s after" in rule["annotations"]["description"]
    assert "RedisFailoverTooSlow" in (paths.ROOT / "docs" / "ha.md").read_text()


def test_prometheus_asks_each_sentinel_through_the_sentinel_exporter():
    config = yaml.safe_load((paths.ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "redis_sentinel")
    sd = job["dns_sd_configs"][0]
    assert sorted(sd["names"]) == sorted(ha.SENTINELS) and sd["port"] == ha.SENTINEL_PORT
    assert job["metrics_path"] == "/scrape"
    relabel = {r["target_label"]: r["replacement"] for r in job["relabel_configs"]}
    assert relabel["__param_target"] == f"redis://${{1}}:{ha.SENTINEL_PORT}"
    exporter = HA_DOC["services"][ha.SENTINEL_EXPORTER]
    port = exporter["command"][0].rsplit(":", 1)[1]
    assert relabel["__address__"] == f"{ha.SENTINEL_EXPORTER}:{port}"
    # The sentinels' password, and no other secret.
    assert exporter["environment"]["REDIS_PASSWORD"].startswith("${REDIS_SENTINEL_PASSWORD:?")
    assert [k for k in exporter["environment"] if "PASSWORD" in k] == ["REDIS_PASSWORD"]
    assert ha.SENTINEL_EXPORTER in ha.extra_services({"DIFYOPS_DATA_HA": "true"}, "data")
