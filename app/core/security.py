"""API keys: ``lethe_<key id>_<secret>``. The key ID is public (logs, audit); only the SHA-256
of the secret is stored. Keys are 256-bit random, so a fast hash is enough (no password KDF)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "lethe"
_KEY_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret_hash: str
    plaintext: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> NewKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, hash_secret(secret), f"{PREFIX}_{key_id}_{secret}")


def split_key(presented: str) -> tuple[str, str] | None:
    """Return (key id, secret) or None when the string is not shaped like a Lethe key."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not _KEY_ID.fullmatch(parts[1]) or not parts[2]:
        return None  # a key ID is 16 hex digits: anything else cannot exist, so no lookup
    return parts[1], parts[2]


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
