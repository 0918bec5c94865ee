"""The owner's account: the console password, how it is stored, and the login throttle.

The password is stored only as a scrypt hash (a slow, memory-hard hash from the standard
library) with its parameters, so they can be raised later without breaking old hashes.
Sessions carry a fingerprint of the stored hash and of the session epoch: setting a new
password, or signing out (which starts a new epoch), ends every open session, so a copied
cookie is worthless after the owner signs out. Failed logins are counted per address; after a few, each further attempt
must wait twice as long as the last, up to five minutes. This module imports no web code,
so the command line uses it too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from importapi.storage import Storage

PASSWORD_SETTING = "console.password"
SECRET_SETTING = "console.session_secret"
EPOCH_SETTING = "console.session_epoch"
MIN_PASSWORD_LENGTH = 8
# scrypt at N=2**15, r=8: 32 MiB and about a tenth of a second per check.
_N, _R, _P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        given = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(given, expected)


def validate_password(password: str) -> str:
    """The password if it may be used; a ValueError saying why not otherwise."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if password != password.strip():
        raise ValueError("the password must not start or end with a space")
    return password


def set_password(storage: Storage, password: str) -> None:
    storage.catalog.set_setting(PASSWORD_SETTING, hash_password(validate_password(password)))


def set_first_password(storage: Storage) -> str | None:
    """On a warehouse without an owner password, make one and return it (to show once);
    None if there already is one."""
    if storage.catalog.get_setting(PASSWORD_SETTING) is not None:
        return None
    password = secrets.token_urlsafe(12)
    stored = hash_password(password)
    if storage.catalog.set_setting(PASSWORD_SETTING, stored, replace=False) != stored:
        return None  # another process set one first
    return password


def session_secret(storage: Storage) -> str:
    """The key that signs session cookies, the same in every server process."""
    return storage.catalog.set_setting(SECRET_SETTING, secrets.token_urlsafe(32), replace=False)


def fingerprint(secret: str, stored_hash: str | None, epoch: str | None) -> str:
    """What a session remembers of the password and the epoch it was opened in."""
    if stored_hash is None:
        return ""
    message = f"{stored_hash}\n{epoch or ''}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:32]


def owner_fingerprint(storage: Storage, secret: str) -> str:
    """The fingerprint a session must carry now to be the owner's."""
    return fingerprint(
        secret, storage.catalog.get_setting(PASSWORD_SETTING), storage.catalog.get_setting(EPOCH_SETTING)
    )


def end_sessions(storage: Storage) -> None:
    """Sign every session out (a new epoch)."""
    storage.catalog.set_setting(EPOCH_SETTING, secrets.token_urlsafe(12))


class LoginThrottle:
    """Failed logins per address: after ``free`` failures, a doubling wait before the next try."""

    def __init__(
        self,
        free: int = 3,
        max_wait: float = 300.0,
        max_tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.max_wait = max_wait
        self.max_tracked = max_tracked
        self.clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait_for(self, who: str) -> float:
        """Seconds before ``who`` may try again; 0 when now."""
        with self._lock:
            count, last = self._failures.get(who, (0, 0.0))
        if count < self.free:
            return 0.0
        wait = min(2.0 ** (count - self.free), self.max_wait)
        return max(0.0, last + wait - self.clock())

    def failed(self, who: str) -> None:
        with self._lock:
            count, _ = self._failures.pop(who, (0, 0.0))
            self._failures[who] = (count + 1, self.clock())
            while len(self._failures) > self.max_tracked:
                self._failures.popitem(last=False)

    def succeeded(self, who: str) -> None:
        with self._lock:
            self._failures.pop(who, None)
