"""Configuration: every ``IMPORTAPI_*`` variable is read and checked here, and nowhere else.

``Settings`` is what a server process runs with: read from the environment, overridden by
the command line, and handed whole to worker processes (``to_env``). ``ClientSettings`` is
what the client and ``importapi push`` take from the environment. This module imports
nothing of the package, so anything may depend on it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_DATABASE = "sqlite:///importapi-data"
DEFAULT_URL = "http://127.0.0.1:8080"
SERVERS = ("uvicorn", "granian")
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclass(frozen=True)
class Limits:
    max_points: int = 100
    max_body_bytes: int = 5 * 1024 * 1024
    max_depth: int = 32
    max_columns: int = 1000
    max_key_fields: int = 8


def _integer(minimum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{name} must be an integer, not {raw!r}") from None
        if value < minimum:
            raise ValueError(f"{name} must be {'positive' if minimum else 'zero or more'}, not {raw!r}")
        return value

    return parse


_positive_int, _count = _integer(1), _integer(0)


def _port(name: str, raw: str) -> int:
    value = _count(name, raw)
    if value > 65535:
        raise ValueError(f"{name} must be a port number (0 to 65535), not {raw!r}")
    return value


def _number(name: str, raw: str) -> float:
    """A number of zero or more (zero turns the feature off where the setting says so)."""
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be zero or positive, not {raw!r}")
    return value


def _seconds(name: str, raw: str) -> float:
    value = _number(name, raw)
    if value == 0:
        raise ValueError(f"{name} must be more than zero seconds, not {raw!r}")
    return value


def _flag(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1 or 0 (true or false), not {raw!r}")


def _choice(choices: tuple[str, ...], upper: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
        return value

    return parse


def _text(_name: str, raw: str) -> str:
    return raw


def _write(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(value)  # every digit: what a worker reads back


# field of Settings (dotted for Limits) -> its variable and how to read it
_VARIABLES: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "database": ("IMPORTAPI_DATABASE", _text),
    "host": ("IMPORTAPI_HOST", _text),
    "port": ("IMPORTAPI_PORT", _port),
    "server": ("IMPORTAPI_SERVER", _choice(SERVERS)),
    "limits.max_points": ("IMPORTAPI_MAX_POINTS", _positive_int),
    "limits.max_body_bytes": ("IMPORTAPI_MAX_BODY_BYTES", _positive_int),
    "limits.max_depth": ("IMPORTAPI_MAX_DEPTH", _positive_int),
    "limits.max_columns": ("IMPORTAPI_MAX_COLUMNS", _positive_int),
    "sqlite_synchronous": ("IMPORTAPI_SQLITE_SYNCHRONOUS", _choice(SYNCHRONOUS, upper=True)),
    "pool_size": ("IMPORTAPI_POOL_SIZE", _positive_int),
    "key_touch_seconds": ("IMPORTAPI_KEY_TOUCH_SECONDS", _positive_int),
    "access_log": ("IMPORTAPI_ACCESS_LOG", _flag),
    "rate_limit": ("IMPORTAPI_RATE_LIMIT", _number),
    "rate_burst": ("IMPORTAPI_RATE_BURST", _count),
    "max_concurrent": ("IMPORTAPI_MAX_CONCURRENT", _positive_int),
    "body_timeout": ("IMPORTAPI_BODY_TIMEOUT", _seconds),
    "max_body_bytes_in_progress": ("IMPORTAPI_MAX_BODY_BYTES_IN_PROGRESS", _positive_int),
    "header_timeout": ("IMPORTAPI_HEADER_TIMEOUT", _seconds),
}


@dataclass(frozen=True)
class Settings:
    """A server process's settings; the README's Configuration table says what each means.

    ``rate_limit`` 0 and ``rate_burst`` 0 mean no rate limit and one second's worth of
    requests; ``max_concurrent`` requests in progress per process, more are answered 503
    with Retry-After; ``body_timeout`` and ``header_timeout`` are the seconds a client has to
    send a whole body, and a request line with its headers (a slower one is answered 408);
    ``max_body_bytes_in_progress`` the bytes of Stitch request bodies a process holds at
    once (past it, a 503 with Retry-After).
    """

    database: str = DEFAULT_DATABASE
    host: str = "127.0.0.1"
    port: int = 8080
    server: str = "uvicorn"
    limits: Limits = field(default_factory=Limits)
    sqlite_synchronous: str = "FULL"
    pool_size: int = 8  # PostgreSQL: connections per server process
    key_touch_seconds: int = 60
    access_log: bool = True
    rate_limit: float = 0.0
    rate_burst: int = 0
    max_concurrent: int = 256
    body_timeout: float = 60.0
    header_timeout: float = 15.0
    max_body_bytes_in_progress: int = 64 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The settings the environment gives (a bad value is a ValueError naming its
        variable), with ``overrides`` that are not None on top (the command line's)."""
        env = os.environ if env is None else env
        top: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        for name, (variable, parse) in _VARIABLES.items():
            raw = env.get(variable)
            if raw is None or raw == "":
                continue
            value = parse(variable, raw)
            if name.startswith("limits."):
                limits[name.removeprefix("limits.")] = value
            else:
                top[name] = value
        if limits:
            top["limits"] = Limits(**limits)
        top.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**top)

    def to_env(self) -> dict[str, str]:
        """Every setting as the variables ``from_env`` reads back: how worker processes,
        which build their application from the environment, get all of them."""
        out = {}
        for name, (variable, _parse) in _VARIABLES.items():
            owner: Any = self.limits if name.startswith("limits.") else self
            value = getattr(owner, name.removeprefix("limits."))
            out[variable] = _write(value)
        return out

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def backend(self) -> str:
        return "postgresql" if self.database.startswith(("postgresql://", "postgres://")) else "sqlite"


@dataclass(frozen=True)
class ClientSettings:
    """What the client library and ``importapi push`` read from the environment."""

    url: str = DEFAULT_URL
    client_id: int = 1
    api_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        env = os.environ if env is None else env
        client_id = env.get("IMPORTAPI_CLIENT_ID")
        return cls(
            url=env.get("IMPORTAPI_URL") or DEFAULT_URL,
            client_id=_positive_int("IMPORTAPI_CLIENT_ID", client_id) if client_id else 1,
            api_key=env.get("IMPORTAPI_API_KEY") or None,
        )
