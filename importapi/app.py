"""The HTTP surface: a small ASGI application with the contract's routes.

    GET       /                                         status
    GET       /v{1,2}/client/{cid}/authenticate         is this a live key of the client
    POST/PUT  /v{1,2}/client/{cid}/table/{table}/data   upsert

The sandbox is the same routes under ``/sandbox`` or on a host named ``sandbox-*`` or
``sandbox.*``. Handlers stay thin: authenticate, read, validate, hand to storage, answer.
Every answer is a JSON object starting with ``code`` and ``message``. The owner's web
console, when mounted (``create_app`` mounts it), answers under ``/console``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from importapi import __version__
from importapi.auth import Authenticator, presented_key
from importapi.body import decode_json, encoding_of, read_body
from importapi.errors import ImportApiError, MethodNotAllowed, NotFound, RequestTimeout, ServerError
from importapi.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from importapi.metrics import Metrics
from importapi.openapi import build as build_openapi
from importapi.ratelimit import ConcurrencyLimit, RateLimiter
from importapi.records import table_name, validate
from importapi.settings import Settings
from importapi.shapes import Shapes
from importapi.storage import Storage, open_storage

log = logging.getLogger("importapi.server")
access_log = logging.getLogger("importapi.access")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SWITCH_INTERVAL = 0.00005  # seconds; see create_app
V1_DEPRECATION = b"@1451606400"  # 2016-01-01: v2 has been the current version since
_encode = msgspec.json.Encoder().encode
_DATA_METHODS = ("POST", "PUT")
# Request ids: unique per process start (random prefix) without a system call per request.
_RID_PREFIX = secrets.token_hex(5)
_rid_counter = itertools.count(1)


# Service routes answer however busy the server is: they are cheap, and probes need them.
_SERVICE_PATHS = frozenset(("/", "/ready", "/metrics", "/openapi.json"))


class _Answer:
    __slots__ = ("body", "content_type", "headers", "raw", "status")

    def __init__(self, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None,
                 raw: bytes | None = None, content_type: bytes | None = None):
        self.status = status
        self.body = body
        self.headers = headers or []
        self.raw = raw  # a body sent as is (metrics, the OpenAPI description) instead of ``body``
        self.content_type = content_type


class Request:
    """One request as the answer, the access log and other observers see it."""

    __slots__ = ("client_id", "duration_ms", "error", "headers", "inserted", "key_id", "method", "path",
                 "points", "reasons", "replaced", "rid", "route", "sandbox", "status", "table", "version")

    def __init__(self, scope: Scope) -> None:
        self.rid = f"{_RID_PREFIX}{next(_rid_counter):06x}"
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.route = "other"  # "status", "authenticate" or "data" once routed
        self.headers = dict(scope["headers"])
        host = self.headers.get(b"host", b"").lower()  # host names are case-insensitive
        self.sandbox = host.startswith((b"sandbox-", b"sandbox."))
        self.version = 0
        self.client_id: int | None = None
        self.key_id: str | None = None
        self.table: str | None = None
        self.points = 0
        self.inserted = 0
        self.replaced = 0
        self.status = 0
        self.reasons: list[str] = []
        self.duration_ms = 0.0
        self.error: str | None = None  # the class name of the exception that ended the request

    def log_fields(self) -> dict[str, Any]:
        """The access log's fields: never a key, only the key's id."""
        return {
            "request_id": self.rid, "method": self.method, "route": self.route,
            "version": self.version or None, "sandbox": self.sandbox, "client_id": self.client_id,
            "key_id": self.key_id, "table": self.table, "data_points": self.points,
            "inserted": self.inserted, "replaced": self.replaced, "status": self.status,
            "duration_ms": self.duration_ms,
        }


Observer = Callable[[Request], None]


def log_access(req: Request) -> None:
    if access_log.isEnabledFor(logging.INFO):  # a record made directly: no search for the caller
        access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, __file__, 0,
                                                _encode(req.log_fields()).decode(), (), None))


class ImportApi:
    def __init__(self, storage: Storage, settings: Settings | None = None) -> None:
        self.storage = storage
        self.settings = settings or Settings()
        self.auth = Authenticator(storage, self.settings.key_touch_seconds, self._in_thread)
        # Called with every finished request, after its answer is sent; keep them cheap.
        self.observers: list[Observer] = [log_access] if self.settings.access_log else []
        self.metrics = Metrics()
        self.observers.append(self.metrics.observe)
        self.rate_limiter = RateLimiter(self.settings.rate_limit, self.settings.rate_burst)
        self.in_progress = ConcurrencyLimit(self.settings.max_concurrent)
        self.shapes = Shapes()  # record shapes each table took: their requests read fastest
        self._openapi = _encode(build_openapi(self.settings.limits))
        self.console: ASGIApp | None = None  # the web console, answering under /console
        self.on_shutdown: list[Callable[[], None]] = []  # run before the storage closes

    def _in_thread(self, fn: Callable[[], None]) -> None:
        asyncio.get_running_loop().run_in_executor(None, fn)

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
                for hook in self.on_shutdown:
                    await asyncio.get_running_loop().run_in_executor(None, hook)
                await asyncio.get_running_loop().run_in_executor(None, self.storage.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        req = Request(scope)
        entered = False
        try:
            if scope["path"] not in _SERVICE_PATHS:
                self.in_progress.enter()
                entered = True
            answer = await self._route(req, scope, receive)
        except ImportApiError as exc:
            req.error = type(exc).__name__
            answer = _Answer(exc.status, exc.envelope())
            if isinstance(exc, MethodNotAllowed):
                answer.headers.append((b"allow", ", ".join(exc.allow).encode()))
            elif isinstance(exc, ServerError):  # raised by storage, which logged the cause
                answer = _server_error(req)
            if exc.retry_after is not None:
                answer.headers.append((b"retry-after", str(exc.retry_after).encode()))
        except Exception as exc:
            req.error = type(exc).__name__
            log.exception("request %s failed", req.rid)
            answer = _server_error(req)
        except BaseException:
            if entered:
                self.in_progress.leave()
            raise
        try:
            await self._send(req, answer, send)
        finally:
            if entered:
                self.in_progress.leave()
        req.status = answer.status
        req.reasons = answer.body.get("reasons", [])
        req.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        for observer in self.observers:
            try:
                observer(req)
            except Exception:
                log.exception("observer %r failed on request %s", observer, req.rid)

    async def _send(self, req: Request, answer: _Answer, send: Send) -> None:
        body = _encode(answer.body) if answer.raw is None else answer.raw
        needle = req.headers.get(b"user-agent", b"").startswith(b"Needle/")
        content_type = b"text/plain; charset=utf-8" if needle else b"application/json"
        headers = [
            (b"content-type", answer.content_type or content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", req.rid.encode()),
            *answer.headers,
        ]
        if req.version == 1:
            headers.append((b"deprecation", V1_DEPRECATION))
            headers.append((b"link", b'</v2>; rel="successor-version"'))
        # A body left unread (too slow) cannot be skipped safely: the connection ends too.
        if req.headers.get(b"connection", b"").lower() == b"close" or answer.status == 408:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if req.method == "HEAD" else body})

    async def _route(self, req: Request, scope: Scope, receive: Receive) -> _Answer:
        path: str = scope["path"]
        if path == "/sandbox" or path.startswith("/sandbox/"):
            req.sandbox = True
            path = path[len("/sandbox"):] or "/"
        if path == "/":
            req.route = "status"
            _allow(req.method, ("GET", "HEAD"))
            self.storage.ping()
            return _Answer(200, {"code": 200, "message": "OK", "service": "importapi",
                                 "version": __version__, "sandbox": req.sandbox})
        if path in _SERVICE_PATHS and not req.sandbox:
            return await self._service(req, path)
        parts = path.split("/")
        # ['', 'v2', 'client', cid, 'authenticate'] or [..., cid, 'table', name, 'data']
        if len(parts) < 5 or parts[0] or parts[1] not in ("v1", "v2") or parts[2] != "client":
            raise NotFound(f"no such resource: {path}")
        req.version = int(parts[1][1])
        cid = parts[3]
        if not (cid.isascii() and cid.isdigit() and int(cid) > 0):
            raise NotFound(f"client id {cid!r} is not a positive integer")
        if len(parts) == 5 and parts[4] == "authenticate":
            req.route = "authenticate"
            _allow(req.method, ("GET", "HEAD"))
            return self._authenticate(req, scope, int(cid))
        if len(parts) == 7 and parts[4] == "table" and parts[6] == "data":
            req.route = "data"
            _allow(req.method, _DATA_METHODS)
            return await self._upsert(req, scope, receive, int(cid), parts[5])
        raise NotFound(f"no such resource: {path}")

    async def _service(self, req: Request, path: str) -> _Answer:
        """Readiness, metrics and the API's description: for operators, not clients."""
        req.route = path.strip("/").removesuffix(".json")
        _allow(req.method, ("GET", "HEAD"))
        if path == "/ready":
            await asyncio.get_running_loop().run_in_executor(None, self.storage.check_writable)
            return _Answer(200, {"code": 200, "message": "Ready"})
        if path == "/metrics":
            return _Answer(200, {}, raw=self.metrics.exposition(), content_type=METRICS_CONTENT_TYPE)
        return _Answer(200, {}, raw=self._openapi)

    def _check_key(self, req: Request, scope: Scope, client_id: int) -> None:
        key = presented_key(scope["query_string"], req.headers.get(b"authorization"))
        req.key_id = self.auth.check(key, client_id, sandbox=req.sandbox).key_id
        req.client_id = client_id
        self.rate_limiter.check(req.key_id)

    def _authenticate(self, req: Request, scope: Scope, client_id: int) -> _Answer:
        self._check_key(req, scope, client_id)
        return _Answer(200, {"code": 200, "message": "OK", "client_id": client_id,
                             "sandbox": req.sandbox})

    async def _upsert(self, req: Request, scope: Scope, receive: Receive, client_id: int,
                      raw_table: str) -> _Answer:
        self._check_key(req, scope, client_id)
        table = req.table = table_name(raw_table)
        limits = self.settings.limits
        encoding = encoding_of(req.headers.get(b"content-encoding"))
        try:
            async with asyncio.timeout(self.settings.body_timeout):
                raw = await read_body(receive, encoding, req.headers.get(b"content-length"),
                                      limits.max_body_bytes)
        except TimeoutError:
            raise RequestTimeout(f"the body did not arrive within {self.settings.body_timeout:g} seconds; "
                                 "send it whole, promptly") from None
        batch = self.shapes.decode(client_id, table, raw, limits) if req.version == 2 else None
        if batch is None:
            batch = validate(decode_json(raw), table, version=req.version, limits=limits)
        req.points = len(batch.points)
        result = await self.storage.push(client_id, batch, sandbox=req.sandbox)
        if result.kinds is not None and req.version == 2:
            self.shapes.learn(client_id, batch, result.kinds)
        req.inserted, req.replaced = result.inserted, result.replaced
        body: dict[str, Any] = {"code": 201, "message": "Created", "table": table,
                                "inserted": result.inserted, "replaced": result.replaced}
        if req.sandbox:
            body["sandbox"] = True
            body["plan"] = {**result.plan, "inserted": result.inserted, "replaced": result.replaced}
        return _Answer(201, body)


def _server_error(req: Request) -> _Answer:
    error = ServerError(f"something went wrong on our side; quote request id {req.rid} when reporting it")
    return _Answer(500, {**error.envelope(), "request_id": req.rid})


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise MethodNotAllowed(f"{method} is not allowed here; use {' or '.join(allowed)}",
                               allow=allowed)


def create_app(settings: Settings | None = None) -> ImportApi:
    """The application for the configured warehouse (an ASGI factory for server workers)."""
    settings = settings or Settings.from_env()
    # The event loop holds Python's lock while it reads requests; a writer thread back from
    # SQLite waits for it up to this long (5 ms by default) before it can answer or go on.
    # Shorter turns keep the writer busy: with one statement per push, ascending keys went
    # from ~575 to ~730 requests/s in one A/B (docs/decisions.md, "The hot path").
    sys.setswitchinterval(SWITCH_INTERVAL)
    from importapi.server import configure_logging, flush_access_log

    configure_logging()  # in each worker process too
    app = ImportApi(open_storage(settings.database, **settings.storage_options()), settings)
    app.on_shutdown.append(flush_access_log)
    from importapi.console import mount

    mount(app)
    # Everything made so far lives as long as the process: the garbage collector's full
    # passes need not walk it again (shorter pauses in the latency's tail).
    gc.collect()
    gc.freeze()
    return app
