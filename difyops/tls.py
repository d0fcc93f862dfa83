"""The gateway's certificate: where its files are, whether they make a usable pair, when they
expire, and a self-signed pair for staging. Keys are written mode 0600 and never printed.

Files named by NGINX_SSL_CERT_FILENAME / NGINX_SSL_CERT_KEY_FILENAME live in NGINX_SSL_DIR
(default nginx/ssl, mounted read-only at /etc/nginx/ssl). An absolute name under /etc/letsencrypt
is certbot's, in the stack's letsencrypt volume; it is read through the volume's mount point.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from . import paths
from .config import Settings

LETSENCRYPT = "/etc/letsencrypt"
TRUE = {"1", "true", "yes", "on"}


def truthy(value: str) -> bool:
    return (value or "").strip().lower() in TRUE


# What the gateway's entrypoint takes as on (nginx/entrypoint.d/15-difyops-defaults.envsh).
HTTPS_ON = frozenset({"true", "TRUE", "True", "1"})


def https_enabled(env: Mapping[str, str]) -> bool:
    """Whether the gateway serves HTTPS: the one decision (the HTTPS port published, checked,
    firewalled) for every caller, as the gateway itself decides."""
    return (env.get("NGINX_HTTPS_ENABLED") or "false") in HTTPS_ON


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


def not_after(cert: Path) -> float | None:
    """The certificate's expiry as a UNIX time, or None when the file is not a PEM certificate."""
    try:
        parsed = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    except (OSError, ValueError):
        return None
    return parsed.not_valid_after_utc.timestamp()


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
    if not https_enabled(settings.env):
        return []
    pair = configured_pair(c, settings)
    if pair.cert is None or pair.key is None:
        return [f"NGINX_HTTPS_ENABLED=true but the certificate {pair.where} cannot be found: name files in "
                f"{ssl_dir(settings)} or certbot's {LETSENCRYPT}/live/<domain>/ (run certbot first)"]
    problem = pair_problem(pair.cert, pair.key)
    if problem:
        return [f"NGINX_HTTPS_ENABLED=true but {problem}: HTTPS would not start; fix the files or run "
                "`invoke tls.self-signed` for staging"]
    expiry = not_after(pair.cert)
    if expiry is not None and expiry < time.time():
        ago = int((time.time() - expiry) // 86400)
        return [f"the certificate {pair.cert} expired {ago} day(s) ago: renew or replace it"]
    return []


def self_signed(cert: Path, key: Path, common_name: str, days: int, now: float | None = None) -> None:
    """A self-signed pair (RSA 2048, SHA-256, for ``common_name``, localhost and 127.0.0.1), valid
    ``days`` from ``now``. The key file is created mode 0600 before a byte is written."""
    cert.parent.mkdir(parents=True, exist_ok=True)
    for path in (cert, key):
        path.unlink(missing_ok=True)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    names: list[x509.GeneralName] = [x509.DNSName(common_name), x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    made = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(private, hashes.SHA256()))
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    cert.write_bytes(made.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert, 0o644)  # public by nature
