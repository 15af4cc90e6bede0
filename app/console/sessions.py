"""Console sessions: an API key, presented once in the sign-in form, becomes a signed cookie.

The cookie holds no secret of the key, only its public ID, a random session ID and an expiry,
under an HMAC of the service's secret key. Every request re-reads the key, so a revoked key or a
changed role takes effect at once; a signed-out session ID is recorded in the audit chain and
refused from then on, by every API process, so a copied cookie dies with the sign-out too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "lethe_console"
# The pre-session cookie of the sign-in form (double submit): a forged cross-site sign-in
# cannot read it, so it cannot send the matching form field.
SIGN_IN_COOKIE = "lethe_console_signin"
PATH = "/console"
_PURPOSE = b"lethe-console-session-v1:"
# A working day. A constant rather than a LETHE_ setting for now: every setting must also be
# listed in .env.example and docker-compose.yml, which this change does not own.
LIFETIME_SECONDS = 8 * 3600
_MAX_TOKEN = 400  # a real token is about 130 characters; anything longer is not ours


@dataclass(frozen=True)
class SessionToken:
    session_id: str
    key_id: str
    expires_at: int  # Unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), _PURPOSE + body.encode(), hashlib.sha256).digest())


def issue(secret: str, key_id: str, lifetime_seconds: int) -> tuple[str, SessionToken]:
    token = SessionToken(secrets.token_hex(16), key_id, int(time.time()) + lifetime_seconds)
    body = _b64(
        json.dumps(
            {"sid": token.session_id, "kid": token.key_id, "exp": token.expires_at},
            separators=(",", ":"),
        ).encode()
    )
    return f"{body}.{_mac(secret, body)}", token


def read(secret: str, raw: str | None) -> SessionToken | None:
    """The session a cookie names, or None when it is absent, forged, malformed or expired."""
    if not raw or len(raw) > _MAX_TOKEN or raw.count(".") != 1:
        return None
    body, mac = raw.split(".")
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    try:
        data = json.loads(_unb64(body))
        token = SessionToken(str(data["sid"]), str(data["kid"]), int(data["exp"]))
    except (ValueError, KeyError, TypeError):
        return None
    return token if token.expires_at > time.time() else None


def csrf_token(secret: str, session_id: str) -> str:
    """The form token of a signed-in session: bound to it, so it cannot be guessed or reused."""
    return _mac(secret, "csrf:" + session_id)
