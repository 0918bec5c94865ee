"""What the routes of every wire protocol share: the answer they give, and the services they
call (keys, rate limits, bodies, the warehouse).

A protocol's routes (``importapi.rjmetrics``, ``importapi.stitch``) parse and check their
request into the push model (``importapi.push``), hand it to the warehouse and shape the
answer; ``importapi.app`` routes requests to them and sends what they answer.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from importapi.auth import Authenticator, presented_key
from importapi.body import encoding_of, read_body
from importapi.errors import MethodNotAllowed, RequestTimeout
from importapi.observe import RequestRecord
from importapi.ratelimit import BodyBudget, RateLimiter
from importapi.settings import Settings
from importapi.storage import Storage
from importapi.storage.base import StoredKey

JSON = b"application/json"


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | list[Any]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    raw: bytes | None = None
    """A body sent as it is (metrics, the OpenAPI description) instead of ``body``."""
    content_type: bytes = JSON


@dataclass
class Services:
    """What routes use besides their request: one set per application."""

    storage: Storage
    settings: Settings
    keys: Authenticator
    rate_limiter: RateLimiter
    bodies: BodyBudget
    reader: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="body-reader")
    )
    """The thread big bodies are read in, one at a time: reading is Python's work, under its
    one lock, so two bodies read at once take no less time than one after the other, and
    each thread more at it makes the writer wait longer for the lock between statements."""

    async def key(self, req: RequestRecord, scope: dict[str, Any], client_id: int | None) -> StoredKey:
        """The request's live key (of ``client_id`` when one is named), within its rate limit."""
        key = presented_key(scope["query_string"], req.headers.get(b"authorization"))
        stored = await self.keys.check(key, client_id, sandbox=req.sandbox)
        req.key_id = stored.key_id
        req.client_id = stored.client_id
        self.rate_limiter.check(stored.key_id)
        return stored

    async def body(self, req: RequestRecord, receive: Any, limit: int, *, budget: bool = False) -> bytes:
        """The whole body, inflated, at most ``limit`` bytes, within the body deadline.
        ``budget``: the body counts against the bytes the process may hold at once."""
        encoding = encoding_of(req.headers.get(b"content-encoding"))
        length = req.headers.get(b"content-length")
        if budget:
            announced = int(length) if length and length.isdigit() and not encoding else limit
            self.bodies.take(req, min(announced, limit))
        timeout = self.settings.body_timeout
        try:
            async with asyncio.timeout(timeout):
                raw = await read_body(receive, encoding, length, limit)
        except TimeoutError:
            raise RequestTimeout(
                f"the body did not arrive within {timeout:g} seconds; send it whole, promptly"
            ) from None
        if budget:
            self.bodies.resize(req, len(raw))
        return raw

    async def in_thread(self, fn: Any, *args: Any) -> Any:
        """A blocking call (storage) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def read_in_thread(self, fn: Any) -> Any:
        """A big body's reading (decoding, checking, making rows) off the event loop, after
        the bodies before it."""
        return await asyncio.get_running_loop().run_in_executor(self.reader, fn)


def allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise MethodNotAllowed(f"{method} is not allowed here; use {' or '.join(allowed)}", allow=allowed)
