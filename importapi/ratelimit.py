"""Backpressure: per-key rate limits and a bound on the requests in progress.

Both count per server process (each worker of ``serve --workers N`` has its own), and both
run on the event loop's thread, so they need no lock. A key over its rate is answered 429,
a process with too many requests in progress 503, both with ``Retry-After`` in whole
seconds; neither reads the body first.

    IMPORTAPI_RATE_LIMIT       requests per second per key (0, the default: no limit)
    IMPORTAPI_RATE_BURST       requests a key may send at once (default: one second's worth)
    IMPORTAPI_MAX_CONCURRENT   requests in progress per process (default 256)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from importapi.errors import Overloaded, TooManyRequests
from importapi.observe import RequestRecord

MAX_BUCKETS = 100_000


class RateLimiter:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0:
            raise ValueError(f"the rate limit must be 0 (off) or positive, not {rate}")
        self.rate = rate
        self.burst = float(burst or max(1, math.ceil(rate)))
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def wait_needed(self, key_id: str) -> float:
        """Take a token for this key: 0 if there was one, else the seconds until there is."""
        now = self.clock()
        tokens, then = self._buckets.get(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1:
            if len(self._buckets) >= MAX_BUCKETS and key_id not in self._buckets:
                self._forget_full(now)
            self._buckets[key_id] = (tokens - 1, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: forgetting them changes no answer."""
        full = [k for k, (t, when) in self._buckets.items() if t + (now - when) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]

    def check(self, key_id: str) -> None:
        """Raise a 429 unless this key may make a request now."""
        if not self.enabled:
            return
        wait = self.wait_needed(key_id)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise TooManyRequests(
                f"this key may make {self.rate:g} requests a second (bursts of {self.burst:g}); "
                f"retry after {seconds} s",
                retry_after=seconds,
            )


class ConcurrencyLimit:
    """At most ``limit`` requests in progress; the next one is refused, not queued."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"the concurrency limit must be positive, not {limit}")
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        if self.active >= self.limit:
            raise Overloaded(
                f"the server has {self.limit} requests in progress, its limit; retry in a moment",
                retry_after=1,
            )
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


class BodyBudget:
    """At most ``limit`` bytes of request bodies held at once (read, being read, or being
    processed) by the routes that take large bodies; a request that would go past it is
    refused with 503 and Retry-After before its body is read, so memory stays bounded
    however many large bodies arrive together. One request is always let through, whatever
    its size. Runs on the event loop only: no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0

    def take(self, req: RequestRecord, size: int) -> None:
        if self.held and self.held + size > self.limit:
            raise Overloaded(
                f"the server holds {self.held:,} bytes of request bodies, its limit is {self.limit:,}; "
                "retry in a moment",
                retry_after=1,
            )
        self.held += size
        req.held += size
        self.peak = max(self.peak, self.held)

    def resize(self, req: RequestRecord, size: int) -> None:
        """The request holds ``size`` bytes now (its body inflated, or smaller than announced)."""
        self.held += size - req.held
        req.held = size
        self.peak = max(self.peak, self.held)

    def release(self, req: RequestRecord) -> None:
        self.held -= req.held
        req.held = 0
