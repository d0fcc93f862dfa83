"""TLS and hardening: prod.check's logic, the certificate helpers, and the tls / prod.check /
prod.firewall tasks through MockContext (the exact commands; no Docker, nothing applied)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from conftest import OK, commands, fail_result, mock_context, write_env
from invoke import Config, Context, Result
from invoke.exceptions import Exit

from difyops import clusters, hardening, tls
from difyops.config import load_settings
from difyops.tasks import prod
from difyops.tasks import tls as tls_tasks



def real_context() -> Context:
    """A real invoke Context (runs openssl) that never reads pytest's captured stdin."""
    return Context(Config(overrides={"run": {"in_stream": False}}))


def settings_for(path: Path):
    return load_settings(None, path)


def make_pair(folder: Path, name: str = "dify", days: int = 30, now: float | None = None) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    tls.self_signed(cert, key, "localhost", days, now=now)
    return cert, key


# --- prod.check's logic -------------------------------------------------------------------------
def test_generated_env_passes(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit")
    assert hardening.check(real_context(), settings_for(env)) == []


@pytest.mark.parametrize("values, needle", [
    ({"SECRET_KEY": "short"}, "SECRET_KEY is only 5 characters"),
    ({"SECRET_KEY": "abcd" * 16}, "SECRET_KEY is a piece of 4 characters repeated"),
    ({"DEBUG": "true"}, "DEBUG=true turns on debug mode"),
    ({"FLASK_DEBUG": "1"}, "FLASK_DEBUG=1 turns on debug mode"),
    ({"NGINX_BIND_ADDRESS": "0.0.0.0"}, "binds 0.0.0.0 with plain HTTP only"),
    ({"NGINX_BIND_ADDRESS": "192.0.2.10"}, "binds 192.0.2.10 with plain HTTP only"),
    ({"APP_WEB_URL": "http://dify.example.com"}, "APP_WEB_URL=http://dify.example.com is plain HTTP"),
    ({"NGINX_HTTPS_ENABLED": "true"}, "NGINX_HTTPS_ENABLED=true but the certificate"),
    ({"DIFYOPS_SIZE": "xl"}, "DIFYOPS_SIZE='xl' is not a preset"),
    ({"EXPOSE_NGINX_SSL_PORT": "99999"}, "EXPOSE_NGINX_SSL_PORT='99999' is not a port number"),
])
def test_each_problem_gives_exactly_one_line(tmp_path, values, needle):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", NGINX_SSL_DIR=str(tmp_path / "ssl"), **values)
    problems = hardening.check(real_context(), settings_for(env))
    assert [p for p in problems if needle in p] == problems and len(problems) == 1, problems


def test_allow_http_and_loopback_are_private(tmp_path):
    for values in ({"NGINX_BIND_ADDRESS": "0.0.0.0", "DIFYOPS_ALLOW_HTTP": "true"},
                   {"NGINX_BIND_ADDRESS": "127.0.0.1"},
                   {"NGINX_BIND_ADDRESS": "::1", "CONSOLE_WEB_URL": "http://localhost:8080"}):
        env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", **values)
        assert hardening.http_problems(settings_for(env)) == []


def test_size_presets_against_host_cpus(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", DIFYOPS_SIZE="large")
    problems = hardening.size_problems(settings_for(env), cpu_count=2)
    assert len(problems) == 1 and "api" in problems[0] and "exceed this host's 2 CPU(s)" in problems[0]
    assert hardening.size_problems(settings_for(env), cpu_count=8) == []
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", DIFYOPS_SIZE="large", API_CPU_LIMIT="1",
                    WORKER_CPU_LIMIT="1", POSTGRES_CPU_LIMIT="1", PLUGIN_DAEMON_CPU_LIMIT="1")
    assert hardening.size_problems(settings_for(env), cpu_count=2) == []  # .env wins over the preset
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit")  # empty: the compose defaults (medium)
    assert "exceed this host's 1 CPU(s)" in hardening.size_problems(settings_for(env), cpu_count=1)[0]
    assert hardening.size_problems(settings_for(env), cpu_count=2) == []


def test_every_preset_names_every_service_limit():
    names = {f"{svc}_{kind}_LIMIT" for svc in ("API", "WORKER", "WORKER_BEAT", "WEB", "NGINX", "POSTGRES", "REDIS",
                                             "SANDBOX", "SSRF_PROXY", "PLUGIN_DAEMON",
                                             # the services later Dify releases add (compose/*.<what>.yml)
                                             "API_WEBSOCKET", "AGENT_BACKEND", "LOCAL_SANDBOX", "AGENT_SSRF_PROXY")
             for kind in ("CPU", "MEM")}
    for size in clusters.SIZES:
        text = (clusters.paths.COMPOSE_DIR / "sizes" / f"{size}.env").read_text()
        keys = {line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
        # besides the limits, each preset sizes a worker's concurrency with its memory
        assert keys == names | {"CELERY_WORKER_AMOUNT"}, size
    # and every limit variable is used by a compose file
    used = "".join(p.read_text() for p in clusters.paths.COMPOSE_DIR.glob("*.yml"))
    assert all("${" + n + ":-" in used for n in names)


def test_size_preset_goes_before_env_file(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", DIFYOPS_SIZE="small")
    argv = clusters.compose_argv(settings_for(env), clusters.CLUSTERS["api"], "config")
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "--env-file"]
    assert files == [str(clusters.paths.COMPOSE_DIR / "sizes" / "small.env"), str(env)]
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit")
    assert clusters.compose_argv(settings_for(env), clusters.CLUSTERS["api"]).count("--env-file") == 1


# --- certificates -------------------------------------------------------------------------------
def test_pair_checks(tmp_path):
    cert, key = make_pair(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert tls.pair_problem(cert, key) is None
    _, other_key = make_pair(tmp_path, "other")
    assert "does not belong to the certificate" in tls.pair_problem(cert, other_key)
    assert "does not exist" in tls.pair_problem(tmp_path / "absent.crt", key)
    (tmp_path / "junk.crt").write_text("not a certificate\n")
    assert "not a usable PEM" in tls.pair_problem(tmp_path / "junk.crt", key)
    left = tls.days_left(tls.not_after(cert))
    assert left in (29, 30)


def test_https_with_a_good_pair_passes_and_an_expired_one_does_not(tmp_path):
    ssl_dir = tmp_path / "ssl"
    ssl_dir.mkdir()
    make_pair(ssl_dir)
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", NGINX_HTTPS_ENABLED="true", NGINX_SSL_DIR=str(ssl_dir),
                    NGINX_BIND_ADDRESS="0.0.0.0")
    assert hardening.check(real_context(), settings_for(env)) == []
    make_pair(ssl_dir, days=30, now=time.time() - 86400 * 33 - 60)  # expired 3 days ago
    problems = tls.certificate_problems(real_context(), settings_for(env))
    assert len(problems) == 1 and "expired 3 day(s) ago" in problems[0]


def test_letsencrypt_paths_are_read_through_the_volume(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", NGINX_HTTPS_ENABLED="true",
                    NGINX_SSL_CERT_FILENAME="/etc/letsencrypt/live/dify.example.com/fullchain.pem",
                    NGINX_SSL_CERT_KEY_FILENAME="/etc/letsencrypt/live/dify.example.com/privkey.pem")
    c = mock_context(env, {r"docker volume inspect --format '\{\{.Mountpoint\}\}' unit-letsencrypt":
                           Result(str(tmp_path / "le"))})
    pair = tls.configured_pair(c, settings_for(env))
    assert pair.cert == tmp_path / "le" / "live/dify.example.com/fullchain.pem"
    problems = tls.certificate_problems(c, settings_for(env))
    assert len(problems) == 1 and "fullchain.pem does not exist" in problems[0]


# --- tasks through MockContext ------------------------------------------------------------------
def test_self_signed_writes_a_private_key_and_a_certificate_for_the_server_name(tmp_path, capsys):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", NGINX_SSL_DIR=str(tmp_path / "ssl"),
                    NGINX_SERVER_NAME="dify.example.com")
    c = mock_context(env, {})
    tls_tasks.self_signed(c, days=10)
    assert commands(c) == []  # made in-process, no openssl needed on the host
    cert = x509.load_pem_x509_certificate((tmp_path / "ssl" / "dify.crt").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=dify.example.com"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in sans] == ["dify.example.com", "localhost", "127.0.0.1"]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 10
    assert tls.pair_problem(tmp_path / "ssl" / "dify.crt", tmp_path / "ssl" / "dify.key") is None
    assert stat.S_IMODE((tmp_path / "ssl" / "dify.key").stat().st_mode) == 0o600
    assert "BEGIN" not in capsys.readouterr().out  # nothing secret printed
    with pytest.raises(Exit) as exc:  # never overwrites without --force
        tls_tasks.self_signed(c)
    assert "--force" in exc.value.message


def test_self_signed_refuses_bad_days(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", NGINX_SSL_DIR=str(tmp_path / "ssl"))
    c = mock_context(env, {})
    with pytest.raises(Exit):
        tls_tasks.self_signed(c, days="0")
    assert commands(c) == [] and not (tmp_path / "ssl" / "dify.key").exists()


def test_expiry_thresholds(tmp_path, capsys):
    ssl_dir = tmp_path / "ssl"
    ssl_dir.mkdir()
    make_pair(ssl_dir, days=20, now=time.time() + 3600)
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", NGINX_SSL_DIR=str(ssl_dir))
    c = mock_context(env, {})
    tls_tasks.expiry(c)
    assert "20 day(s) left" in capsys.readouterr().out
    with pytest.raises(Exit) as exc:
        tls_tasks.expiry(c, warn_days=30)
    assert "20 day(s), under 30" in exc.value.message


def test_reload_tests_first_and_keeps_the_config_when_it_fails(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit")
    c = mock_context(env, {r"exec -T nginx nginx -t": OK, r"exec -T nginx nginx -s reload": OK})
    tls_tasks.reload(c)
    ran = [cmd.split(" exec ", 1)[1] for cmd in commands(c) if " exec " in cmd]
    assert ran == ["-T nginx nginx -t", "-T nginx nginx -s reload"]
    c = mock_context(env, {r"exec -T nginx nginx -t": fail_result("emerg: cannot load certificate")})
    with pytest.raises(Exit):
        tls_tasks.reload(c)
    assert not [cmd for cmd in commands(c) if "-s reload" in cmd]


def test_prod_check_task(tmp_path, capsys):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit")
    prod.check(mock_context(env, {}))
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", DEBUG="true", SECRET_KEY="abc")
    with pytest.raises(Exit) as exc:
        prod.check(mock_context(env, {}))
    assert "2 problem(s)" in exc.value.message
    err = capsys.readouterr().err.splitlines()
    assert len([ln for ln in err if ln.startswith("problem: ")]) == 2


def test_deploy_preflight_refuses_debug(tmp_path, monkeypatch):
    monkeypatch.setattr("difyops.probes.shutil.which", lambda name: f"/usr/bin/{name}")
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", DEBUG="true", EXPOSE_NGINX_PORT="1")
    c = mock_context(env, {r"docker info": Result("26.1.5"), r"docker compose version": Result("2.26.1")})
    with pytest.raises(Exit, match="DEBUG=true"):
        prod.deploy(c)
    assert not [cmd for cmd in commands(c) if " up " in cmd or " create " in cmd]


def test_firewall_prints_only_the_gateway_ports(tmp_path, capsys):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="8080", NGINX_HTTPS_ENABLED="true",
                    EXPOSE_NGINX_SSL_PORT="8443")
    c = mock_context(env, {})
    prod.firewall(c)
    out = capsys.readouterr().out
    assert "policy drop;" in out and "tcp dport { 22, 8080, 8443 } accept" in out
    assert commands(c) == []  # printing changes nothing
    prod.firewall(c, tool="ufw", ssh_port=0)
    out = capsys.readouterr().out.splitlines()
    assert out == ["ufw default deny incoming", "ufw default allow outgoing", "ufw allow 8080/tcp",
                   "ufw allow 8443/tcp", "ufw --force enable"]


def test_firewall_apply(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit")
    c = mock_context(env, {r"nft -f -": OK})
    prod.firewall(c, apply=True)
    [call] = c.run.call_args_list
    assert call.args[0] == "nft -f -" and "tcp dport { 22, 80 } accept" in call.kwargs["in_stream"].getvalue()
    c = mock_context(env, {r"ufw": fail_result("ERROR: You need to be root")})
    with pytest.raises(Exit) as exc:
        prod.firewall(c, tool="ufw", apply=True)
    assert "ufw refused the rules" in exc.value.message and len(commands(c)) == 1
    with pytest.raises(Exit):
        prod.firewall(mock_context(env, {}), tool="iptables")


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (nftables); runs where it is installed, as in CI")
def test_nft_rules_parse(tmp_path):
    rules = tmp_path / "rules.nft"
    rules.write_text(hardening.nft_rules([80, 443], 22))
    # --check parses and validates without touching the host's ruleset; it needs CAP_NET_ADMIN.
    result = subprocess.run(["nft", "--check", "-f", str(rules)], capture_output=True, text=True)
    if "Operation not permitted" in result.stderr:
        pytest.skip("nft --check needs root (CAP_NET_ADMIN); runs as root in CI")
    assert result.returncode == 0, result.stderr


# --- certbot (no ACME server is reachable here: the service is checked statically, and its loop
# --- runs against a stand-in `certbot` that only records its arguments) -------------------------
def test_certbot_service_shares_the_webroot_and_certificates_with_nginx():
    import yaml

    doc = yaml.safe_load((clusters.paths.COMPOSE_DIR / "gateway.yml").read_text())
    nginx, certbot = doc["services"]["nginx"], doc["services"]["certbot"]
    assert certbot["profiles"] == ["certbot"]
    assert certbot["image"] == "${CERTBOT_IMAGE:-certbot/certbot:v4.0.0}"
    assert "certbot_www:/var/www/certbot:ro" in nginx["volumes"] and "letsencrypt:/etc/letsencrypt:ro" in nginx["volumes"]
    assert "certbot_www:/var/www/certbot" in certbot["volumes"] and "letsencrypt:/etc/letsencrypt" in certbot["volumes"]
    assert nginx["security_opt"] == ["no-new-privileges:true"] and nginx["cap_drop"] == ["ALL"]
    assert nginx["ports"] == ["${NGINX_BIND_ADDRESS:-127.0.0.1}:${EXPOSE_NGINX_PORT:-80}:${NGINX_PORT:-80}"]
    overlay = yaml.safe_load((clusters.paths.COMPOSE_DIR / "gateway.https.yml").read_text())
    assert overlay["services"]["nginx"]["ports"] == [
        "${NGINX_BIND_ADDRESS:-127.0.0.1}:${EXPOSE_NGINX_SSL_PORT:-443}:${NGINX_SSL_PORT:-443}"]


def test_https_port_is_published_only_with_https_on(tmp_path):
    for https, expected in (("false", 0), ("true", 1)):
        env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", NGINX_HTTPS_ENABLED=https)
        for name, cluster in clusters.CLUSTERS.items():
            argv = clusters.compose_argv(settings_for(env), cluster, "up")
            assert argv.count(str(clusters.paths.COMPOSE_DIR / "gateway.https.yml")) == (
                expected if name == "gateway" else 0)


@pytest.mark.skipif(os.environ.get("CI") != "true" and (shutil.which("docker") is None or subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode != 0),
    reason="needs the docker compose CLI (no daemon); runs in CI, where .ci/run installs it")
def test_gateway_with_https_overlay_and_certbot_profile_resolves(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", NGINX_HTTPS_ENABLED="true", EXPOSE_NGINX_SSL_PORT="8443")
    argv = clusters.compose_argv(settings_for(env), clusters.CLUSTERS["gateway"], "config", "--format", "json",
                                 profiles=("certbot",))
    result = subprocess.run(argv, capture_output=True, text=True, env={"PATH": "/usr/local/bin:/usr/bin:/bin",
                                                                       "DIFYOPS_ENV_FILE": str(env)})
    assert result.returncode == 0, result.stderr
    import json

    doc = json.loads(result.stdout)
    published = sorted(p["published"] for p in doc["services"]["nginx"]["ports"])
    assert published == ["80", "8443"] and "certbot" in doc["services"]


@pytest.mark.skipif(shutil.which("sh") is None or shutil.which("timeout") is None, reason="needs sh and timeout (coreutils); runs in CI, where both are present")
def test_certbot_loop_requests_then_renews(tmp_path):
    log = tmp_path / "calls"
    stub = tmp_path / "bin" / "certbot"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    stub.chmod(0o755)
    script = clusters.paths.NGINX_DIR / "certbot" / "certbot-loop.sh"
    env = {"PATH": f"{stub.parent}:/usr/bin:/bin", "CERTBOT_DOMAIN": "dify.invalid", "CERTBOT_EMAIL": "ops@dify.invalid",
           "CERTBOT_RENEW_INTERVAL": "1"}
    subprocess.run(["timeout", "3.5", "sh", str(script)], env=env, capture_output=True, text=True)  # bounded: 3.5 s
    calls = log.read_text().splitlines()
    assert calls[0].startswith("certonly --webroot --webroot-path /var/www/certbot --domain dify.invalid")
    assert "--email ops@dify.invalid --agree-tos" in calls[0]
    renewals = [c for c in calls[1:] if c.startswith("renew --webroot --webroot-path /var/www/certbot")]
    assert 2 <= len(renewals) == len(calls) - 1
    missing = subprocess.run(["sh", str(script)], env={"PATH": env["PATH"]}, capture_output=True, text=True, timeout=10)
    assert missing.returncode != 0 and "set CERTBOT_DOMAIN" in missing.stderr
