"""Production hardening: what `prod.check` refuses, and the host firewall rules for the gateway.

prod.check builds on envfile.check (placeholders, public defaults, coupled secrets, body limits)
and adds what makes a configuration unsafe to expose: short secrets, debug modes, plain HTTP
served beyond this host, HTTPS switched on without a usable certificate, limits the host cannot give.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any
from urllib.parse import urlsplit

from . import clusters, envfile, tls
from .config import Settings

DEBUG_KEYS = ("DEBUG", "FLASK_DEBUG")
# Dify's public URL settings: http:// to a host other than this one is plain HTTP in production.
URL_KEYS = envfile.PUBLIC_URL_KEYS
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", ""}


def is_loopback(address: str) -> bool:
    """True for addresses only this host can reach (127.0.0.0/8, ::1, localhost)."""
    if address in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def debug_problems(env: dict[str, str]) -> list[str]:
    return [f"{key}={env[key]} turns on debug mode (reloader, tracebacks to clients): set it to false"
            for key in DEBUG_KEYS if tls.truthy(env.get(key, ""))]


def http_problems(settings: Settings) -> list[str]:
    """Plain HTTP reaching beyond this host, unless DIFYOPS_ALLOW_HTTP=true says a TLS proxy is in front."""
    if tls.truthy(settings.get("DIFYOPS_ALLOW_HTTP", "false")):
        return []
    problems = []
    bind = settings.get("NGINX_BIND_ADDRESS", "127.0.0.1")
    https = tls.https_enabled(settings.env)
    if not https and not is_loopback(bind):
        problems.append(
            f"the gateway binds {bind} with plain HTTP only: set NGINX_HTTPS_ENABLED=true with a certificate, "
            "or DIFYOPS_ALLOW_HTTP=true if a TLS proxy in front of it terminates HTTPS"
        )
    for key in URL_KEYS:
        url = settings.get(key)
        if url.startswith("http://") and (urlsplit(url).hostname or "") not in LOCAL_NAMES:
            problems.append(f"{key}={url} is plain HTTP: use https:// (or DIFYOPS_ALLOW_HTTP=true behind a TLS proxy)")
    return problems


def port_value_problems(settings: Settings) -> list[str]:
    problems = []
    for key, default in (("EXPOSE_NGINX_PORT", "80"), ("EXPOSE_NGINX_SSL_PORT", "443")):
        raw = settings.get(key, default)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            problems.append(f"{key}={raw!r} is not a port number")
    return problems


_CPU_LIMIT = re.compile(r"^([A-Z_]+)_CPU_LIMIT=([0-9.]+)\s*$", re.M)


def size_problems(settings: Settings, cpu_count: int | None = None) -> list[str]:
    """DIFYOPS_SIZE names a preset, and the preset's CPU limits fit this host (Docker refuses more)."""
    size = settings.get("DIFYOPS_SIZE")
    if size and size not in clusters.SIZES:
        return [f"DIFYOPS_SIZE={size!r} is not a preset: choose {', '.join(clusters.SIZES)} (or leave it empty)"]
    cpus = cpu_count or os.cpu_count() or 1
    # Empty: the compose files' defaults, which are the medium preset's values.
    text = (clusters.paths.COMPOSE_DIR / "sizes" / f"{size or 'medium'}.env").read_text()
    limits = {name: float(value) for name, value in _CPU_LIMIT.findall(text)}
    for key, value in settings.env.items():  # .env's own limits win over the preset
        if key.endswith("_CPU_LIMIT"):
            try:
                limits[key[: -len("_CPU_LIMIT")]] = float(value)
            except ValueError:
                return [f"{key}={value!r} is not a number of CPUs"]
    too_many = sorted(name for name, value in limits.items() if value > cpus)
    if too_many:
        return [f"CPU limits of {', '.join(n.lower() for n in too_many)} exceed this host's {cpus} CPU(s) "
                f"(Docker refuses them): choose a smaller DIFYOPS_SIZE or set their *_CPU_LIMIT"]
    return []


def check(c: Any, settings: Settings) -> list[str]:
    """Every reason not to run this configuration in production, one line each; empty when fine."""
    if not settings.env_file.exists():
        return [f"{settings.env_file} does not exist: run `invoke env.init`"]
    return envfile.check(settings.env) + settings.disagreements + beyond_envfile(c, settings, settings.env)


def beyond_envfile(c: Any, settings: Settings, env: dict[str, str]) -> list[str]:
    """prod.check's lines that envfile.check does not give (pre-flight adds these to its own)."""
    problems = debug_problems(env)
    problems += http_problems(settings)
    problems += port_value_problems(settings)
    problems += tls.certificate_problems(c, settings)
    problems += size_problems(settings)
    return problems


# ---------------------------------------------------------------------------------------------
# Firewall
# ---------------------------------------------------------------------------------------------
NFT_TABLE = "difyops"


def gateway_ports(settings: Settings) -> list[int]:
    """The host ports the gateway publishes: HTTP always (redirect and ACME challenges), HTTPS when on."""
    ports = [int(settings.get("EXPOSE_NGINX_PORT", "80"))]
    if tls.https_enabled(settings.env):
        ports.append(int(settings.get("EXPOSE_NGINX_SSL_PORT", "443")))
    return ports


def nft_rules(ports: list[int], ssh_port: int | None) -> str:
    """An nftables table that drops inbound traffic but replies, loopback, ICMP, SSH and the gateway."""
    allowed = ", ".join(str(p) for p in ([ssh_port] if ssh_port else []) + ports)
    return f"""# difyops: inbound traffic to this host, only the gateway's ports (and SSH) open.
# Load with `nft -f FILE`; it replaces its own table only. Ports Docker publishes are forwarded to
# containers and never reach this input chain: publish nothing but the gateway (the bundle does not).
table inet {NFT_TABLE}
delete table inet {NFT_TABLE}
table inet {NFT_TABLE} {{
    chain input {{
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iif "lo" accept
        meta l4proto {{ icmp, ipv6-icmp }} accept
        tcp dport {{ {allowed} }} accept
    }}
}}
"""


def ufw_commands(ports: list[int], ssh_port: int | None) -> list[list[str]]:
    cmds = [["ufw", "default", "deny", "incoming"], ["ufw", "default", "allow", "outgoing"]]
    if ssh_port:
        cmds.append(["ufw", "allow", f"{ssh_port}/tcp"])
    cmds += [["ufw", "allow", f"{p}/tcp"] for p in ports]
    cmds.append(["ufw", "--force", "enable"])
    return cmds
