"""API keys: how they are made, written, stored and checked.

A key reads ``imp_<key id>_<secret>``: a 12-hex-digit key id that names it in listings and
revocations, and 192 random bits written in URL-safe base64, so no client needs to encode
it. Only the SHA-256 of the whole key is stored; with that much randomness a slow hash
adds nothing. Checks compare digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "imp_"
_ID_LEN = 12


@dataclass(frozen=True)
class NewKey:
    key_id: str
    api_key: str
    digest: bytes


def new_key() -> NewKey:
    key_id = secrets.token_hex(_ID_LEN // 2)
    api_key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
    return NewKey(key_id, api_key, digest(api_key))


def digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).digest()


def key_id_of(api_key: str) -> str | None:
    """The key id a presented key claims, or None if it is not shaped like one of ours."""
    if len(api_key) < len(PREFIX) + _ID_LEN + 2 or not api_key.startswith(PREFIX):
        return None
    key_id = api_key[len(PREFIX) : len(PREFIX) + _ID_LEN]
    if api_key[len(PREFIX) + _ID_LEN] != "_":
        return None
    return key_id


def matches(api_key: str, stored_digest: bytes) -> bool:
    return hmac.compare_digest(digest(api_key), stored_digest)


def redact(api_key: str) -> str:
    """What may be shown of a key in logs and listings: its id, never the secret."""
    key_id = key_id_of(api_key)
    return f"{PREFIX}{key_id}_..." if key_id else "(not a key)"
