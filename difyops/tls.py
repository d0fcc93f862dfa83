"""The gateway's certificate: where its files are, whether they make a usable pair, when they
expire, and a self-signed pair for staging. Keys are written mode 0600 and never printed.

Files named by NGINX_SSL_CERT_FILENAME / NGINX_SSL_CERT_KEY_FILENAME live in NGINX_SSL_DIR
(default nginx/ssl, mounted read-only at /etc/nginx/ssl). An absolute name under /etc/letsencrypt
is certbot's, in the stack's letsencrypt volume; it is read through the volume's mount point.
"""

from __future__ import annotations

import calendar
import os
import shlex
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import paths
from .config import Settings

LETSENCRYPT = "/etc/letsencrypt"
TRUE = {"1", "true", "yes", "on"}


def truthy(value: str) -> bool:
    return (value or "").strip().lower() in TRUE


def https_enabled(settings: Settings) -> bool:
    return truthy(settings.get("NGINX_HTTPS_ENABLED", "false"))


def ssl_dir(settings: Settings) -> Path:
    """The host folder mounted at /etc/nginx/ssl; relative paths are from compose/, as Compose reads them."""
    raw = settings.get("NGINX_SSL_DIR", "../nginx/ssl")
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (paths.COMPOSE_DIR / path).resolve()


@dataclass(frozen=True)
class Pair:
    cert: Path | None
    key: Path | None
    where: str  # how the user names it, for messages


def _resolve(c: Any, settings: Settings, name: str) -> Path | None:
    if not name.startswith("/"):
        return ssl_dir(settings) / name
    if name.startswith(LETSENCRYPT + "/"):
        volume = f"{settings.stack}-letsencrypt"
        result = c.run(shlex.join(["docker", "volume", "inspect", "--format", "{{.Mountpoint}}", volume]),
                       hide=True, warn=True)
        if not result.ok or not result.stdout.strip():
            return None
        return Path(result.stdout.strip()) / name[len(LETSENCRYPT) + 1:]
    return None


def configured_pair(c: Any, settings: Settings) -> Pair:
    cert = settings.get("NGINX_SSL_CERT_FILENAME", "dify.crt")
    key = settings.get("NGINX_SSL_CERT_KEY_FILENAME", "dify.key")
    return Pair(_resolve(c, settings, cert), _resolve(c, settings, key), f"{cert} / {key}")


def not_after(c: Any, cert: Path) -> float | None:
    """The certificate's expiry as a UNIX time (openssl reads it), or None when unreadable."""
    result = c.run(shlex.join(["openssl", "x509", "-noout", "-enddate", "-in", str(cert)]), hide=True, warn=True)
    if not result.ok or "notAfter=" not in result.stdout:
        return None
    text = " ".join(result.stdout.strip().split("=", 1)[1].split())
    try:
        return calendar.timegm(time.strptime(text, "%b %d %H:%M:%S %Y %Z"))
    except ValueError:
        return None


def days_left(expiry: float, now: float | None = None) -> int:
    """Whole days until expiry (negative once expired)."""
    return int((expiry - (time.time() if now is None else now)) // 86400)


def pair_problem(cert: Path, key: Path) -> str | None:
    """Why nginx could not serve this pair (missing, unreadable, not PEM, key not the cert's), or None."""
    for label, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            return f"the {label} {path} does not exist"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason or "key values mismatch" in str(exc):
            return f"the key {key} does not belong to the certificate {cert}"
        return f"{cert} and {key} are not a usable PEM certificate and key ({reason})"
    except OSError as exc:
        return f"cannot read {cert} or {key}: {exc.strerror or exc}"
    return None


def certificate_problems(c: Any, settings: Settings) -> list[str]:
    """With HTTPS on: one line if the configured pair is missing, mismatched or expired."""
    if not https_enabled(settings):
        return []
    pair = configured_pair(c, settings)
    if pair.cert is None or pair.key is None:
        return [f"NGINX_HTTPS_ENABLED=true but the certificate {pair.where} cannot be found: name files in "
                f"{ssl_dir(settings)} or certbot's {LETSENCRYPT}/live/<domain>/ (run certbot first)"]
    problem = pair_problem(pair.cert, pair.key)
    if problem:
        return [f"NGINX_HTTPS_ENABLED=true but {problem}: HTTPS would not start; fix the files or run "
                "`invoke tls.self-signed` for staging"]
    expiry = not_after(c, pair.cert)
    if expiry is not None and expiry < time.time():
        ago = int((time.time() - expiry) // 86400)
        return [f"the certificate {pair.cert} expired {ago} day(s) ago: renew or replace it"]
    return []


def self_signed(c: Any, cert: Path, key: Path, common_name: str, days: int) -> None:
    """A self-signed pair with openssl on the host (key 0600: created private, never world-readable)."""
    cert.parent.mkdir(parents=True, exist_ok=True)
    for path in (cert, key):
        path.unlink(missing_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    san = f"subjectAltName=DNS:{common_name},DNS:localhost,IP:127.0.0.1"
    result = c.run(shlex.join([
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes", "-days", str(days),
        "-subj", f"/CN={common_name}", "-addext", san, "-keyout", str(key), "-out", str(cert),
    ]), hide=True, warn=True)
    if not result.ok:
        key.unlink(missing_ok=True)
        cert.unlink(missing_ok=True)
        raise RuntimeError((result.stderr or "openssl failed").strip().splitlines()[-1])
    os.chmod(key, 0o600)
    if cert.exists():
        os.chmod(cert, 0o644)  # public by nature
