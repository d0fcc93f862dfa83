"""tls: the gateway's certificate: a self-signed pair for staging, its expiry, a reload."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from invoke import Collection

from .base import task

from .. import clusters as cl
from .. import tls, units
from ..config import load_settings
from ..errors import fail


@task(
    help={
        "name": "the name the certificate is for (CN and subjectAltName; default NGINX_SERVER_NAME or localhost)",
        "days": "days the certificate is valid",
        "force": "replace an existing certificate and key",
    }
)
def self_signed(c, name=None, days=30, force=False):
    """Write a self-signed certificate and key (0600) for staging where the gateway reads them."""
    settings = load_settings(c)
    cert_name = settings.get("NGINX_SSL_CERT_FILENAME", "dify.crt")
    key_name = settings.get("NGINX_SSL_CERT_KEY_FILENAME", "dify.key")
    if cert_name.startswith("/") or key_name.startswith("/"):
        raise fail("NGINX_SSL_CERT_FILENAME / NGINX_SSL_CERT_KEY_FILENAME are absolute (certbot's): "
                   "set plain file names to use a self-signed pair")
    folder = tls.ssl_dir(settings)
    cert, key = folder / cert_name, folder / key_name
    if (cert.exists() or key.exists()) and not force:
        raise fail(f"{cert} or {key} already exists and is kept: use --force to replace them")
    common = name or (settings.get("NGINX_SERVER_NAME", "_").split() + ["_"])[0]
    common = "localhost" if common in ("_", "") else common
    try:
        days = int(days)
    except ValueError:
        raise fail(f"--days {days!r} is not a whole number")
    if not 0 < days <= 825:
        raise fail(f"--days {days} is out of range: choose 1 to 825")
    try:
        tls.self_signed(cert, key, common, days)
    except OSError as exc:
        raise fail(f"could not write {cert} or {key}: {exc.strerror or exc}")
    print(f"wrote {cert} and {key} (mode 0600) for {common}, valid {days} days; "
          "set NGINX_HTTPS_ENABLED=true and redeploy the gateway")


@task(
    help={
        "warn_days": "exit non-zero when fewer days than this are left",
        "cert": "certificate file to read (default: the gateway's configured certificate)",
    }
)
def expiry(c, warn_days=14, cert=None):
    """Say when the gateway's certificate expires (days left); non-zero exit under --warn-days."""
    settings = load_settings(c)
    path = tls.configured_pair(c, settings).cert if not cert else Path(cert)
    if path is None or not path.is_file():
        raise fail(f"no certificate at {path or settings.get('NGINX_SSL_CERT_FILENAME', 'dify.crt')}: "
                   "check NGINX_SSL_CERT_FILENAME and NGINX_SSL_DIR")
    when = tls.not_after(path)
    if when is None:
        raise fail(f"{path} is not a PEM certificate")
    left = tls.days_left(when)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
    print(f"{path}: expires {stamp}, {left} day(s) left")
    if left < int(warn_days):
        raise fail(f"the certificate expires in {left} day(s), under {warn_days}: renew or replace it")


@task
def reload(c):
    """Test the gateway's config and reload nginx gracefully (after replacing certificate files)."""
    settings = load_settings(c)
    gateway = cl.CLUSTERS["gateway"]
    tested = units.run_compose(c, settings, gateway, "exec", "-T", "nginx", "nginx", "-t", hide=True, warn=True)
    if not tested.ok:
        last = (tested.stderr.strip().splitlines() or ["gateway not running"])[-1]
        raise fail(f"nginx -t fails in the gateway ({last}); the running config is kept")
    units.run_compose(c, settings, gateway, "exec", "-T", "nginx", "nginx", "-s", "reload", hide=True)
    print(f"gateway of stack {shlex.quote(settings.stack)} reloaded")


ns = Collection("tls")
for t in (self_signed, expiry, reload):
    ns.add_task(t)
