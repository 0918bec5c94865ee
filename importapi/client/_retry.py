"""When to try a request again, and how long to wait first.

No answer at all (a refused or dropped connection, a timeout), 408, 429 and every 5xx are
worth another try: an upsert applied twice leaves the same rows, so a retry is safe even
when the first attempt did land. Waits grow exponentially with jitter, and a
``Retry-After`` from the server (seconds or an HTTP date) is honoured instead.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


def is_transient(status: int) -> bool:
    """0 stands for no answer."""
    return status == 0 or status in (408, 429) or status >= 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when it says nothing usable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class Retry:
    """How a client retries: ``attempts`` more tries after the first, waits starting at
    ``backoff`` seconds and doubling up to ``max_backoff``, each between half and all of
    that (the jitter); a server's ``Retry-After`` is followed up to ``max_retry_after``."""

    attempts: int = 8
    backoff: float = 0.25
    max_backoff: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("retry settings cannot be negative")

    def delay(self, retry: int, retry_after: str | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (counted from 0)."""
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return min(asked, self.max_retry_after)
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** min(retry, 60))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


NO_RETRY = Retry(attempts=0)
