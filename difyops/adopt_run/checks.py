"""adopt.run's pre-flight: the stack's own on the .env it would write, the certificate, Redis."""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path
from typing import Any

from .. import adopt as ad
from .. import backup as bk
from .. import clusters as cl
from .. import dotenv, envfile, images, probes, tls
from .. import stack as st
from ..config import Settings, settings_for
from .commands import _redis_version, redis_source, redis_version_of_image, tool_argv


def target_problems(c: Any, settings: Settings, plan: ad.Plan, mapped_text: str) -> list[str]:
    """The stack's own pre-flight on the .env adopt would write (Docker, the .env, prod.check's
    lines, images present or pullable), the gateway's port left out: the official gateway holds it
    until it stops. Writes the mapped .env to a temporary file only."""
    https = tls.https_enabled(envfile.values_of(mapped_text))
    problems: list[str] = []
    if https:
        # The certificate is not in this stack's folders yet (it moves with the install): check the
        # official install's pair instead, and the rest of the .env without HTTPS.
        problems += source_certificate_problems(plan)
        mapped_text = envfile.with_values(mapped_text, {"NGINX_HTTPS_ENABLED": "false"}, "pre-flight only")
    with tempfile.TemporaryDirectory(prefix="difyops-adopt-") as tmp:
        path = Path(tmp) / ".env"
        dotenv.write_private(path, mapped_text)
        mapped = settings_for(path, settings.stack, settings.wait_timeout)
        selected = [x for x in cl.CLUSTERS.values() if x.name != "gateway"]
        problems += st.preflight(c, mapped, selected)
        if not problems:
            refs = st.cluster_images(c, mapped, cl.CLUSTERS["gateway"])
            problems += [f"image {ref} is not present: run `invoke images.pull` (or load an offline bundle)"
                         for ref in probes.missing_images(c, refs)]
    if (mapped.get("DIFYOPS_DATA_HA") or "").strip().lower() in ("1", "true", "yes", "on"):
        problems.append("DIFYOPS_DATA_HA=true: adopt moves an install into a single-node data cluster; "
                        "adopt with it off, then turn the HA data layer on (docs/ha.md)")
    return problems


def source_certificate_problems(plan: ad.Plan) -> list[str]:
    """The official install's certificate pair, where its gateway reads it."""
    env = plan.install.env
    names: list[Path] = []
    for key, default in (("NGINX_SSL_CERT_FILENAME", "dify.crt"), ("NGINX_SSL_CERT_KEY_FILENAME", "dify.key")):
        path = ad.certbot_cert_path(env, key, default)
        if path:  # /etc/letsencrypt/live/<domain>/<file>: in the install's certbot folder
            part = next((p for p in plan.parts if p.volume == "letsencrypt"), None)
            names.append(part.source / path.removeprefix("/etc/letsencrypt/") if part and part.source else Path(path))
        else:
            part = next((p for p in plan.parts if p.kind == "certs"), None)
            names.append((part.source if part and part.source else plan.install.dir / "nginx" / "ssl")
                         / (env.get(key) or default))
    cert_file, key_file = names
    if not cert_file.exists() or not key_file.exists():
        return [f"NGINX_HTTPS_ENABLED=true but the official install's certificate {cert_file} or key {key_file} "
                "is missing"]
    problem = tls.pair_problem(cert_file.resolve(), key_file.resolve())
    return [f"NGINX_HTTPS_ENABLED=true but the official install's certificate: {problem}"] if problem else []


def redis_problems(c: Any, mapped: dict[str, str], plan: ad.Plan, image: str) -> list[str]:
    """The new Redis must be able to load the old one's snapshot (RDB files load forward only)."""
    target_ref = images.resolve_ref(images.find("redis"), mapped).ref
    target = redis_version_of_image(c, target_ref)
    if target is None:
        return [f"cannot tell the Redis version of {target_ref} (`redis-server --version`): is the image present?"]
    if "redis" not in plan.install.running:
        return []
    source = redis_source(plan.install)
    argv = tool_argv(image, source.network, [], {}, ("REDISCLI_AUTH",), "redis-cli", "-h", source.host, "-p",
                     source.port, "--no-auth-warning", "info", "server")
    result = c.run(shlex.join(argv), env={"REDISCLI_AUTH": source.password}, hide=True, warn=True)
    version = None
    for line in (result.stdout or "").splitlines():
        if line.startswith("redis_version:"):
            version = _redis_version(line.split(":", 1)[1].strip())
    if version and version[:1] > target[:1]:
        return [f"the official Redis is {'.'.join(map(str, version))} and this stack's {target_ref} is "
                f"{'.'.join(map(str, target))}: an older Redis cannot load a newer one's data; set REDIS_IMAGE to "
                f"Redis {version[0]} or newer"]
    return []


def preflight(c: Any, settings: Settings, plan: ad.Plan, mapped_text: str, image: str, stop: bool,
              force: bool) -> list[str]:
    """Every refusal of adopt.run, one line each; empty when it may go ahead."""
    problems = list(plan.problems)
    inst = plan.install
    if inst.running and not stop:
        problems.append(f"the official stack {inst.project} is running ({', '.join(inst.running)}): pass --stop "
                        "to let adopt.run stop it (it asks first), or stop it yourself (docker compose stop in "
                        f"{inst.dir})")
    if plan.target_holds and not force:
        problems.append(f"stack {settings.stack} already holds data ({', '.join(plan.target_holds)}): adopting would "
                        "replace it; pass --force to do so (backup.create runs first, the current data is kept aside)")
    if problems:
        return problems
    docker = probes.docker_problems(c)
    if docker:
        return docker
    cfg = bk.config_from(settings)
    if image == cfg.image and not bk.image_present(c, cfg) and not bk.build_default_image(c, cfg):
        return [f"the backup image {image} is missing: run `invoke images.build-local --only backup`"]
    problems += target_problems(c, settings, plan, mapped_text)
    if not problems:
        problems += redis_problems(c, envfile.values_of(mapped_text), plan, image)
    if force and plan.target_holds:
        problems += [f"--force takes a backup first: {p}" for p in bk.create_problems(cfg)]
    return problems


def mapped_env_text(settings: Settings, plan: ad.Plan, stamp: str) -> str:
    values = ad.written_values(plan.settings)
    values.setdefault("DIFYOPS_STACK", settings.stack)
    return envfile.with_values(ad.target_base_text(settings), values,
                         f"Carried over from the official install {plan.install.dir} by adopt.run ({stamp})")


def confirm_text(plan: ad.Plan, settings: Settings) -> str:
    inst = plan.install
    stops = ", ".join(plan.stops) or "none"
    return (f"adopt {inst.dir} (Dify {inst.version}, project {inst.project}) into stack {settings.stack}: this stops "
            f"the official services {stops} for about {max(1, round(plan.downtime / 60))} min (their files stay as they are; "
            "`invoke adopt.rollback` starts them again). Continue? [y/N] ")
