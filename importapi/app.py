"""The HTTP surface: a small ASGI application that routes each request to its protocol.

    /v2/import/..., /sandbox/v2/import/...    the Stitch Import API (``importapi.stitch``)
    /, /v1/..., /v2/..., /sandbox/...          the RJMetrics Data Import API (``importapi.rjmetrics``)
    /ready, /metrics, /openapi.json           for operators
    /console/...                              the owner's web console (``importapi.console``)

A protocol's routes turn a request into the push model and an answer; this module bounds
the requests in progress, turns refusals into the protocol's error answers (a 500 says only
that something went wrong, with a request id; the traceback goes to the log), sends the
answer and tells the observers (access log, metrics, activity) once it is sent.
``create_app`` is the one place the API, the console and the activity recorder are wired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

import msgspec

from importapi.activity import ActivityRecorder
from importapi.asgi import ASGIApp, Receive, Scope, Send
from importapi.auth import Authenticator
from importapi.console import create_console
from importapi.errors import ImportApiError, MethodNotAllowed, ServerError
from importapi.http import Answer, Services, allow
from importapi.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from importapi.metrics import Metrics
from importapi.observe import Observer, RequestRecord
from importapi.openapi import build as build_openapi
from importapi.ratelimit import BodyBudget, ConcurrencyLimit, RateLimiter
from importapi.rjmetrics.routes import RJMetricsRoutes
from importapi.settings import Limits, Settings
from importapi.stitch import openapi as stitch_openapi
from importapi.stitch.routes import PREFIX as STITCH_PREFIX
from importapi.stitch.routes import StitchRoutes
from importapi.storage import Storage, open_storage

log = logging.getLogger("importapi.server")
access_log = logging.getLogger("importapi.access")
_encode = msgspec.json.Encoder().encode

# Service routes answer however busy the server is: they are cheap, and probes need them.
_SERVICE_PATHS = frozenset(("/ready", "/metrics", "/openapi.json"))
_UNBOUNDED = frozenset(("/", *_SERVICE_PATHS))


def openapi_document(limits: Limits) -> dict[str, Any]:
    """``/openapi.json``: every protocol's routes."""
    return build_openapi(limits, (stitch_openapi,))


class Routes(Protocol):
    """A wire protocol's routes."""

    async def handle(self, req: RequestRecord, scope: Scope, receive: Receive, path: str) -> Answer: ...

    def refusal(self, req: RequestRecord, exc: ImportApiError) -> Answer: ...


def log_access(req: RequestRecord) -> None:
    if access_log.isEnabledFor(logging.INFO):  # a record made directly: no search for the caller
        access_log.handle(
            access_log.makeRecord(
                access_log.name, logging.INFO, __file__, 0, _encode(req.log_fields()).decode(), (), None
            )
        )


class ImportApi:
    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings
        self.services = Services(
            storage,
            settings,
            Authenticator(storage.catalog, settings.key_touch_seconds),
            RateLimiter(settings.rate_limit, settings.rate_burst),
            BodyBudget(settings.max_body_bytes_in_progress),
        )
        # Called with every finished request, after its answer is sent; keep them cheap.
        self.observers: list[Observer] = [log_access] if settings.access_log else []
        self.metrics = Metrics()
        self.observers.append(self.metrics.observe)
        self.in_progress = ConcurrencyLimit(settings.max_concurrent)
        self.rjmetrics = RJMetricsRoutes(self.services)
        self.stitch = StitchRoutes(self.services)
        self._openapi = _encode(openapi_document(settings.limits))
        self.console: ASGIApp | None = None  # the web console, answering under /console
        self.on_shutdown: list[Callable[[], None]] = []  # run before the storage closes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if self.console is not None and (path == "/console" or path.startswith("/console/")):
                await self.console(scope, receive, send)
                return
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close(self, *, storage: bool = True) -> None:
        """Run the shutdown hooks (the activity recorder writes what it holds), then close
        the storage unless told not to (its owner closes it)."""
        for hook in self.on_shutdown:
            try:
                hook()
            except Exception:
                log.exception("shutdown hook %r failed", hook)
        self.services.reader.shutdown()  # no body is read any more
        if storage:
            self.storage.close()

    def _routes_for(self, req: RequestRecord, path: str) -> tuple[Routes, str]:
        if path == "/sandbox" or path.startswith("/sandbox/"):
            req.sandbox = True
            path = path[len("/sandbox") :] or "/"
        return (self.stitch if path.startswith(STITCH_PREFIX) else self.rjmetrics), path

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        req = RequestRecord(scope["method"], scope["path"], scope["headers"])
        routes, path = self._routes_for(req, scope["path"])
        entered = False
        try:
            if scope["path"] not in _UNBOUNDED:
                self.in_progress.enter()
                entered = True
            if path in _SERVICE_PATHS and not req.sandbox:
                answer = await self._service(req, path)
            else:
                answer = await routes.handle(req, scope, receive, path)
        except ImportApiError as exc:
            answer = self._refused(req, routes, exc)
        except Exception as exc:
            log.exception("request %s failed", req.rid)
            answer = self._refused(req, routes, exc)
        except BaseException:
            if entered:
                self.in_progress.leave()
            self.services.bodies.release(req)
            raise
        try:
            await self._send(req, answer, send)
        finally:
            if entered:
                self.in_progress.leave()
            self.services.bodies.release(req)
        req.status = answer.status
        req.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        for observer in self.observers:
            try:
                observer(req)
            except Exception:
                log.exception("observer %r failed on request %s", observer, req.rid)

    def _refused(self, req: RequestRecord, routes: Routes, exc: Exception) -> Answer:
        req.error = type(exc).__name__
        if not isinstance(exc, ImportApiError) or isinstance(exc, ServerError):
            # storage logged the cause of its ServerError; the client learns only the request id
            exc = ServerError(
                f"something went wrong on our side; quote request id {req.rid} when reporting it"
            )
        req.details = exc.details
        answer = routes.refusal(req, exc)
        if isinstance(exc, MethodNotAllowed):
            answer.headers.append((b"allow", ", ".join(exc.allow).encode()))
        if exc.retry_after is not None:
            answer.headers.append((b"retry-after", str(exc.retry_after).encode()))
        return answer

    async def _send(self, req: RequestRecord, answer: Answer, send: Send) -> None:
        body = _encode(answer.body) if answer.raw is None else answer.raw
        headers = [
            (b"content-type", answer.content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", req.rid.encode()),
            *answer.headers,
        ]
        # A body left unread (too slow) cannot be skipped safely: the connection ends too.
        if req.headers.get(b"connection", b"").lower() == b"close" or answer.status == 408:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if req.method == "HEAD" else body})

    async def _service(self, req: RequestRecord, path: str) -> Answer:
        """Readiness, metrics and the API's description: for operators, not clients."""
        req.route = path.strip("/").removesuffix(".json")
        allow(req.method, ("GET", "HEAD"))
        if path == "/ready":
            await self.services.in_thread(self.storage.check_writable)
            return Answer(200, {"code": 200, "message": "Ready"})
        if path == "/metrics":
            return Answer(200, {}, raw=self.metrics.exposition(), content_type=METRICS_CONTENT_TYPE)
        return Answer(200, {}, raw=self._openapi)


def create_app(
    settings: Settings | None = None,
    *,
    storage: Storage | None = None,
    recorder: ActivityRecorder | None = None,
) -> ImportApi:
    """The application for the configured warehouse: the API, the console under /console,
    and the activity recorder that feeds the console (one on ``storage`` unless given).
    No process-wide side effects: those belong to the code that runs the server
    (``importapi.server``). ``close`` stops the recorder and closes the storage."""
    settings = settings or Settings.from_env()
    storage = storage or open_storage(settings)
    app = ImportApi(storage, settings)
    recorder = recorder or ActivityRecorder(storage.catalog)
    app.observers.append(recorder)
    app.on_shutdown.append(recorder.close)
    app.console = cast(ASGIApp, create_console(storage))
    return app
