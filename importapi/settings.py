"""Configuration: one dataclass, read from the environment, overridable by the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from importapi.records import Limits
from importapi.storage.base import DEFAULT_DATABASE


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {raw!r}")
    return value


def _number(name: str, default: float) -> float:
    """A number of zero or more (zero turns the feature off where the setting says so)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be zero or positive, not {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    database: str = DEFAULT_DATABASE
    limits: Limits = field(default_factory=Limits)
    sqlite_synchronous: str = "FULL"
    key_touch_seconds: int = 60
    access_log: bool = True
    rate_limit: float = 0.0
    """Requests per second per key; 0 turns rate limiting off (the default)."""
    rate_burst: int = 0
    """Requests a key may send at once; 0 means one second's worth."""
    max_concurrent: int = 256
    """Requests in progress per server process; more are answered 503 with Retry-After."""
    body_timeout: float = 60.0
    """Seconds a client has to send a whole request body; a slower one is answered 408."""
    pool_size: int = 8
    """PostgreSQL: connections per server process (pushes in progress at once)."""

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        limits = Limits(
            max_points=_int("IMPORTAPI_MAX_POINTS", 100),
            max_body_bytes=_int("IMPORTAPI_MAX_BODY_BYTES", 5 * 1024 * 1024),
            max_depth=_int("IMPORTAPI_MAX_DEPTH", 32),
            max_columns=_int("IMPORTAPI_MAX_COLUMNS", 1000),
        )
        settings = cls(
            database=os.environ.get("IMPORTAPI_DATABASE") or DEFAULT_DATABASE,
            limits=limits,
            sqlite_synchronous=os.environ.get("IMPORTAPI_SQLITE_SYNCHRONOUS") or "FULL",
            key_touch_seconds=_int("IMPORTAPI_KEY_TOUCH_SECONDS", 60),
            access_log=os.environ.get("IMPORTAPI_ACCESS_LOG", "1") not in ("0", "false", "no"),
            rate_limit=_number("IMPORTAPI_RATE_LIMIT", 0.0),
            rate_burst=int(_number("IMPORTAPI_RATE_BURST", 0)),
            max_concurrent=_int("IMPORTAPI_MAX_CONCURRENT", 256),
            body_timeout=_number("IMPORTAPI_BODY_TIMEOUT", 60.0) or 60.0,
            pool_size=_int("IMPORTAPI_POOL_SIZE", 8),
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **given) if given else settings  # type: ignore[arg-type]

    def storage_options(self) -> dict[str, object]:
        options: dict[str, object] = {"limits": self.limits}
        if self.database.startswith(("postgresql://", "postgres://")):
            options["pool_size"] = self.pool_size
            return options
        options["synchronous"] = self.sqlite_synchronous
        return options
