"""The record of a finished request, and the observers that are told about each one.

The HTTP layer fills a ``RequestRecord`` as a request goes through it and, once the answer
is sent, hands it to every ``Observer``: the access log, the metrics and the console's
activity window. Observers run on the event loop, so they must be cheap and never block.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from typing import Any, Protocol

from importapi.errors import Detail

# Request ids: unique per process start (random prefix) without a system call per request.
_RID_PREFIX = secrets.token_hex(5)
_rid_counter = itertools.count(1)


class RequestRecord:
    """One request as the answer, the access log and other observers see it."""

    __slots__ = (
        "client_id",
        "details",
        "duration_ms",
        "error",
        "headers",
        "held",
        "inserted",
        "key_id",
        "method",
        "path",
        "points",
        "replaced",
        "rid",
        "route",
        "sandbox",
        "stale",
        "status",
        "table",
        "version",
    )

    def __init__(self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.rid = f"{_RID_PREFIX}{next(_rid_counter):06x}"
        self.method = method
        self.path = path
        self.route = "other"  # "status", "authenticate", "data", "batch", ... once routed
        self.headers = dict(headers)
        host = self.headers.get(b"host", b"").lower()  # host names are case-insensitive
        self.sandbox = host.startswith((b"sandbox-", b"sandbox."))
        self.version = 0
        self.client_id: int | None = None
        self.key_id: str | None = None
        self.table: str | None = None
        self.points = 0
        self.inserted = 0
        self.replaced = 0
        self.stale = 0
        self.held = 0  # bytes of body this request holds against the server's budget
        self.status = 0
        self.details: list[Detail] = []
        self.duration_ms = 0.0
        self.error: str | None = None  # the class name of the exception that ended the request

    @property
    def reasons(self) -> list[str]:
        return [d.reason for d in self.details]

    @property
    def code(self) -> str | None:
        """The code of the first problem of a refused request."""
        return self.details[0].code if self.details else None

    def log_fields(self) -> dict[str, Any]:
        """The access log's fields: never a key, only the key's id."""
        return {
            "request_id": self.rid,
            "method": self.method,
            "route": self.route,
            "version": self.version or None,
            "sandbox": self.sandbox,
            "client_id": self.client_id,
            "key_id": self.key_id,
            "table": self.table,
            "data_points": self.points,
            "inserted": self.inserted,
            "replaced": self.replaced,
            "stale": self.stale,
            "status": self.status,
            "code": self.code,
            "duration_ms": self.duration_ms,
        }


class Observer(Protocol):
    """Told about every finished request, after its answer is sent."""

    def __call__(self, req: RequestRecord) -> None: ...
