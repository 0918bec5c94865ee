"""``/metrics``: what the server did, in the Prometheus text format.

    importapi_requests_total{route, status}          answers sent
    importapi_data_points_total{outcome}             data points stored: inserted or replaced
    importapi_rejections_total{reason}               refused requests, by the code of their first problem
    importapi_request_duration_seconds{route}        latency histogram
    importapi_storage_errors_total                   requests that failed in the storage

The figures are fed by the application's ``observers`` hook, once per finished request.
Labels are bounded (routes, status codes, refusal codes): never a client, table or key.

Under ``serve --workers N`` each worker counts for itself; ``importapi.server`` then gives
the workers a shared folder (``PROMETHEUS_MULTIPROC_DIR``) and every worker's ``/metrics``
answers the sum over all of them. The folder must be set before this module is imported.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from importapi.errors import Code
from importapi.observe import RequestRecord

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STORAGE_ERRORS = ("StorageUnavailable", "ServerError")


def rejection_reason(req: RequestRecord) -> str:
    """A short, bounded name for why a request was refused: the code of its first problem."""
    return req.code or (Code.SERVER_ERROR if req.status >= 500 else f"status_{req.status}")


class Metrics:
    """The counters of one application; ``observe`` is its observer."""

    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "importapi_requests", "Answers sent, by route and status.", ["route", "status"], registry=r
        )
        self.points = Counter(
            "importapi_data_points", "Data points stored, by outcome.", ["outcome"], registry=r
        )
        self.rejections = Counter(
            "importapi_rejections", "Refused requests, by reason.", ["reason"], registry=r
        )
        self.latency = Histogram(
            "importapi_request_duration_seconds",
            "Time from the request's start to its answer, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.storage_errors = Counter(
            "importapi_storage_errors", "Requests that failed in the storage.", registry=r
        )

        self._inserted = self.points.labels("inserted")
        self._replaced = self.points.labels("replaced")
        # each (route, status)'s counter and latency histogram, looked up once
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, req: RequestRecord) -> None:
        children = self._children.get((req.route, req.status))
        if children is None:
            children = self._children[(req.route, req.status)] = (
                self.requests.labels(req.route, str(req.status)),
                self.latency.labels(req.route),
            )
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
