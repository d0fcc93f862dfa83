# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# A workspace's (tenant's) key pair, where and how Dify 1.13.3 keeps it: Dify's api makes an RSA
# 2048 key pair when a tenant is created (services/account_service.py TenantService.create_tenant ->
# libs/rsa.py generate_key_pair), writes the private key, PEM, to its storage at
# privkeys/<tenant_id>/private.pem, and keeps the public key in tenants.encrypt_public_key. Stored
# provider credentials are encrypted with the public key (core/helper/encrypter.py encrypt_token) and
# need the private key in storage to be read again (decrypt_token): lose the file and every stored
# credential of the workspace is lost (Dify's `flask reset-encrypt-key-pair` then deletes them).
# Upstream read: tests/standin/CONTRACT.md. The stand-in uses openssl (private key PKCS#1 PEM, public
# key SubjectPublicKeyInfo PEM, RSA-OAEP with SHA-1, as pycryptodome's export_key() and PKCS1_OAEP do) and the legacy, non-hybrid form of the
# token (Dify decrypts both), so it needs no extra Python package.
#   POST /console/api/standin/tenants/<tenant_id>/key-pair   -> 201 {"public_key", "key"}; 409 if present
#   POST /console/api/standin/tenants/<tenant_id>/encrypt    {"public_key", "text"} -> {"token"} (base64)
#   POST /console/api/standin/tenants/<tenant_id>/decrypt    {"token"} -> {"text"}; 404 without the key
import base64
import os
import re
import subprocess
import tempfile

from flask import Blueprint, request

from standin import config
from standin.views import error, reply

bp = Blueprint("standin_privkeys", __name__)

_TENANT = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def _key_path(tenant_id):
    root, problem = config.storage_root()
    if problem:
        return None, problem
    return os.path.join(root, "privkeys", tenant_id, "private.pem"), None


def _openssl(*args, data=b""):
    result = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode(errors="replace").strip()[-300:])
    return result.stdout


@bp.post("/standin/tenants/<tenant_id>/key-pair")
def create_key_pair(tenant_id):
    if not _TENANT.match(tenant_id):
        return error(400, "invalid_param", "tenant id: letters, digits and - only")
    path, problem = _key_path(tenant_id)
    if problem:
        return error(501, "storage_not_supported", problem)
    if os.path.exists(path):
        return error(409, "key_pair_exists", f"privkeys/{tenant_id}/private.pem already exists")
    private_pem = _openssl("genrsa", "-traditional", "2048")
    public_pem = _openssl("rsa", "-pubout", data=private_pem)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    with open(tmp, "wb") as out:
        out.write(private_pem)
    os.replace(tmp, path)
    return reply({"tenant_id": tenant_id, "public_key": public_pem.decode(),
                  "key": f"privkeys/{tenant_id}/private.pem"}, 201)


@bp.post("/standin/tenants/<tenant_id>/encrypt")
def encrypt(tenant_id):
    doc = request.get_json(silent=True) or {}
    if not isinstance(doc.get("public_key"), str) or not isinstance(doc.get("text"), str):
        return error(400, "invalid_param", 'JSON {"public_key": "<PEM>", "text": "..."} is required')
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as pub:
        pub.write(doc["public_key"])
        pub.flush()
        token = _openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", pub.name, "-keyform", "PEM",
                         "-pkeyopt", "rsa_padding_mode:oaep", data=doc["text"].encode())
    return reply({"tenant_id": tenant_id, "token": base64.b64encode(token).decode()})


@bp.post("/standin/tenants/<tenant_id>/decrypt")
def decrypt(tenant_id):
    doc = request.get_json(silent=True) or {}
    if not _TENANT.match(tenant_id) or not isinstance(doc.get("token"), str):
        return error(400, "invalid_param", 'JSON {"token": "<base64>"} is required')
    path, problem = _key_path(tenant_id)
    if problem:
        return error(501, "storage_not_supported", problem)
    if not os.path.isfile(path):  # Dify: PrivkeyNotFoundError
        return error(404, "privkey_not_found", f"Private key not found, tenant_id: {tenant_id}")
    try:
        text = _openssl("pkeyutl", "-decrypt", "-inkey", path, "-pkeyopt", "rsa_padding_mode:oaep",
                        data=base64.b64decode(doc["token"]))
    except RuntimeError as exc:
        return error(400, "decrypt_failed", str(exc))
    return reply({"tenant_id": tenant_id, "text": text.decode()})
