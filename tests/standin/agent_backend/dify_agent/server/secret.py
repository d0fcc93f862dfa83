# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# The rule Dify's agent backend applies to DIFY_AGENT_SERVER_SECRET_KEY, written for the stand-in
# from reading langgenius/dify dify-agent/src/dify_agent/agent_stub/server/tokens/agent_stub.py at
# 2a3d0564b6f909b5136afa59977b0c425d5df116 (`decode_server_secret_key`: "The secret must be strict
# unpadded base64url text and must decode to exactly 32 bytes"), and its settings at 07e7c7fd
# (validated at start; required when DIFY_AGENT_STUB_API_BASE_URL is set; empty is unset).
# Standard library only: tests/unit imports it directly.
from __future__ import annotations

import base64
import binascii
import re

NAME = "DIFY_AGENT_SERVER_SECRET_KEY"
REQUIRED_BYTES = 32
_BASE64URL_TEXT = re.compile(r"^[A-Za-z0-9_-]+$")


def decode(value: str) -> bytes:
    """The secret's 32 bytes, or ValueError with the message the real backend gives."""
    normalized = value.strip()
    if not normalized or not _BASE64URL_TEXT.fullmatch(normalized):
        raise ValueError(f"{NAME} must be valid unpadded base64url text")
    try:
        decoded = base64.b64decode(normalized + "=" * (-len(normalized) % 4), altchars=b"-_", validate=True)
    except binascii.Error:
        raise ValueError(f"{NAME} must be valid unpadded base64url text") from None
    if len(decoded) != REQUIRED_BYTES:
        raise ValueError(f"{NAME} must decode to exactly {REQUIRED_BYTES} decoded bytes")
    return decoded


def settings_problem(environ) -> str | None:
    """Why the backend would refuse to start on this environment's secret (None: it starts)."""
    secret = (environ.get(NAME) or "").strip()
    stub = (environ.get("DIFY_AGENT_STUB_API_BASE_URL") or "").strip()
    if not secret:
        return f"{NAME} is required when DIFY_AGENT_STUB_API_BASE_URL is set." if stub else None
    try:
        decode(secret)
    except ValueError as exc:
        return str(exc)
    return None
