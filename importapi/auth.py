"""Who is calling: the API key from the query string or a Bearer header, checked against
the catalog through a cache that empties itself whenever the catalog changes.

Last-used times are written off the request path, at most once a minute per key, and
never for the sandbox (which leaves no trace, key use included).
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qsl

from importapi import apikeys
from importapi.errors import Code, Unauthorized
from importapi.storage.base import StoredKey, utcnow
from importapi.storage.catalog import Catalog

log = logging.getLogger("importapi.auth")
MAX_CACHED = 10_000


def presented_key(query_string: bytes, authorization: bytes | None) -> str:
    """The one key a request presents, or a 401 saying why there is none."""
    given = [v for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if k == "apikey"]
    if authorization:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            given.append(token.strip())
    if not given or not all(given):
        raise Unauthorized(
            "no API key: pass ?apikey=KEY or the header Authorization: Bearer KEY", code=Code.API_KEY_MISSING
        )
    if len(set(given)) > 1:
        raise Unauthorized("more than one API key was given; send exactly one", code=Code.API_KEY_AMBIGUOUS)
    return given[0]


class Authenticator:
    """Checks keys against the catalog through a cache that empties whenever the catalog's
    version changes (any process's change to clients or keys). A hit costs no I/O; a miss
    reads the catalog in a thread, off the event loop."""

    def __init__(self, catalog: Catalog, touch_seconds: int) -> None:
        self.catalog = catalog
        self.touch_seconds = touch_seconds
        self._cache: dict[str, StoredKey | None] = {}
        self._version = catalog.version()
        self._touched: dict[str, float] = {}

    async def _lookup(self, key_id: str) -> StoredKey | None:
        version = self.catalog.version()
        if version != self._version or len(self._cache) > MAX_CACHED:
            self._cache.clear()
            self._version = version
        try:
            return self._cache[key_id]
        except KeyError:
            pass
        stored = await asyncio.get_running_loop().run_in_executor(None, self.catalog.find_key, key_id)
        if self.catalog.version() == version:  # not a stale answer read across a change
            self._cache[key_id] = stored
        return stored

    async def check(self, api_key: str, client_id: int | None, *, sandbox: bool) -> StoredKey:
        """The key's record if it is a live key (of this client, when one is named); otherwise a 401."""
        key_id = apikeys.key_id_of(api_key)
        stored = await self._lookup(key_id) if key_id else None
        if stored is None or not apikeys.matches(api_key, stored.digest):
            whose = f" for client {client_id}" if client_id is not None else ""
            raise Unauthorized(f"the API key is not valid{whose}")
        if stored.revoked:
            raise Unauthorized(f"the API key {key_id} has been revoked", code=Code.API_KEY_REVOKED)
        if client_id is not None and stored.client_id != client_id:
            raise Unauthorized(
                f"the API key {key_id} does not belong to client {client_id}", code=Code.API_KEY_MISMATCH
            )
        if not sandbox:
            self._touch(stored.key_id)
        return stored

    def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        last = self._touched.get(key_id)
        if last is not None and now - last < self.touch_seconds:
            return
        self._touched[key_id] = now
        stamps = {key_id: utcnow()}
        asyncio.get_running_loop().run_in_executor(None, self._write_touch, stamps)

    def _write_touch(self, stamps: dict[str, str]) -> None:
        try:
            self.catalog.touch_keys(stamps)
        except Exception:
            log.warning("could not record key use", exc_info=True)
