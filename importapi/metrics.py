"""``/metrics``: what the server did, in the Prometheus text format.

    importapi_requests_total{route, status}          answers sent
    importapi_data_points_total{outcome}             data points stored: inserted or replaced
    importapi_rejections_total{reason}               refused requests, by a short reason class
    importapi_request_duration_seconds{route}        latency histogram
    importapi_storage_errors_total                   requests that failed in the storage

The figures are fed by the application's ``observers`` hook, once per finished request.
Labels are bounded (routes, status codes, reason classes): never a client, table or key.

Under ``serve --workers N`` each worker counts for itself; ``importapi.server`` then gives
the workers a shared folder (``PROMETHEUS_MULTIPROC_DIR``) and every worker's ``/metrics``
answers the sum over all of them. The folder must be set before this module is imported.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from importapi.app import Request

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_BY_STATUS = {
    401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 408: "timeout",
    413: "too_large", 415: "unsupported_encoding", 429: "rate_limited", 500: "server_error",
}
# A 400's class, from its first reason (the texts live in records, body and schema).
_BAD_REQUEST_CLASSES = (
    ("unreadable_body", re.compile(r"not valid (JSON|UTF-8|gzip)|body is empty|nested too deeply to be "
                                   r"read|gzip body|Content-Length|disconnected|more than once in one")),
    ("invalid_table_name", re.compile(r"^table name")),
    ("point_count", re.compile(r"^the body (has \d+ data points|is an empty array)")),
    ("key_fields", re.compile(r"key field|\"keys\"|^keys ")),
    ("schema", re.compile(r"column|widening")),
    ("invalid_data_point", re.compile(r"^data point \d+")),
)
_STORAGE_ERRORS = ("StorageUnavailable", "ServerError")


def rejection_reason(req: Request) -> str:
    """A short, bounded name for why a request was refused."""
    if req.status == 400:
        first = req.reasons[0] if req.reasons else ""
        for name, pattern in _BAD_REQUEST_CLASSES:
            if pattern.search(first):
                return name
        return "bad_request"
    if req.status == 503:
        return "overloaded" if req.error == "Overloaded" else "storage_unavailable"
    return _BY_STATUS.get(req.status, f"status_{req.status}")


class Metrics:
    """The counters of one application; ``observe`` is its observer."""

    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("importapi_requests", "Answers sent, by route and status.",
                                ["route", "status"], registry=r)
        self.points = Counter("importapi_data_points", "Data points stored, by outcome.",
                              ["outcome"], registry=r)
        self.rejections = Counter("importapi_rejections", "Refused requests, by reason.",
                                  ["reason"], registry=r)
        self.latency = Histogram("importapi_request_duration_seconds",
                                 "Time from the request's start to its answer, by route.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.storage_errors = Counter("importapi_storage_errors",
                                      "Requests that failed in the storage.", registry=r)

        self._inserted = self.points.labels("inserted")
        self._replaced = self.points.labels("replaced")
        # each (route, status)'s counter and latency histogram, looked up once
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, req: Request) -> None:
        children = self._children.get((req.route, req.status))
        if children is None:
            children = self._children[(req.route, req.status)] = (
                self.requests.labels(req.route, str(req.status)), self.latency.labels(req.route))
        children[0].inc()
        children[1].observe(req.duration_ms / 1000)
        if req.status == 201 and not req.sandbox:
            if req.inserted:
                self._inserted.inc(req.inserted)
            if req.replaced:
                self._replaced.inc(req.replaced)
        elif req.status >= 400:
            self.rejections.labels(rejection_reason(req)).inc()
            if req.error in _STORAGE_ERRORS:
                self.storage_errors.inc()

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
