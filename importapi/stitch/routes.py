"""The Stitch Import API's routes: an adapter from its wire format to the push model.

    GET   /v2/import/status     200 while writes work, 503 otherwise; no key needed
    POST  /v2/import/batch      one table, a JSON Schema, up to 20,000 messages; 201 once committed
    POST  /v2/import/push       an array of records (JSON or Transit); 201 once committed
    POST  /v2/import/validate   as push, checked in full against the tables, stores nothing; 200

The same under ``/sandbox`` (or a ``sandbox-*`` host) store nothing and answer as production
would. The key (``Authorization: Bearer``) names the client. Answers and errors are shaped as
the real service shapes them (every one JSON, labelled ``application/json``), with
``details`` added to errors. The clients give up at once on any 4xx and retry 5xx, so what
could succeed later is never a 4xx here: a key over its rate limit, or a server holding too
many bodies at once, is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from importapi.asgi import Receive, Scope
from importapi.body import decode_json
from importapi.errors import Code, ImportApiError, NotFound, UnsupportedEncoding
from importapi.http import Answer, Services, allow
from importapi.observe import RequestRecord
from importapi.push import Push, PushResult
from importapi.settings import Limits
from importapi.stitch import transit, typed
from importapi.stitch.batch import read_batch
from importapi.stitch.push import read_records
from importapi.stitch.records import MAX_BODY_BYTES

PREFIX = "/v2/import/"
_JSON = "application/json"
_TRANSIT = "application/transit+json"
_ROUTES = ("status", "batch", "push", "validate")
READ_IN_THREAD_BYTES = 256 * 1024
"""Bodies bigger than this are read (decoded, checked, made rows) in a thread."""


def _media_type(req: RequestRecord) -> str:
    return req.headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()


class StitchRoutes:
    def __init__(self, services: Services) -> None:
        self.services = services
        s = services.settings
        self.limits = Limits(
            max_points=20_000,
            max_body_bytes=max(MAX_BODY_BYTES, s.limits.max_body_bytes),
            max_depth=s.limits.max_depth,
            max_columns=s.limits.max_columns,
        )

    async def handle(self, req: RequestRecord, scope: Scope, receive: Receive, path: str) -> Answer:
        route = path[len(PREFIX) :]
        req.route = {"status": "import_status"}.get(route, route) if route in _ROUTES else "other"
        if route == "status":
            allow(req.method, ("GET", "HEAD"))
            await self.services.in_thread(self.services.storage.ping)
            return Answer(
                200,
                {
                    "status": "OK",
                    "message": "The Import API is up and can take writes",
                    "sandbox": req.sandbox,
                },
            )
        if req.route == "other":
            raise NotFound(f"no such resource: {path}")
        allow(req.method, ("POST",))
        stored = await self.services.key(req, scope, None)
        media = _media_type(req)
        allowed = (_JSON,) if route == "batch" else (_JSON, _TRANSIT)
        if media not in allowed:
            raise UnsupportedEncoding(
                f"Unsupported content-type {media or '(none)'}: send {' or '.join(allowed)}",
                code=Code.CONTENT_TYPE_UNSUPPORTED,
            )
        raw = await self.services.body(req, receive, self.limits.max_body_bytes, budget=True)
        received = dt.datetime.now(dt.UTC)
        sandbox = req.sandbox or route == "validate"
        read = functools.partial(
            _read, route, media, raw, stored.client_id, sandbox=sandbox, received=received, limits=self.limits
        )
        # a big body takes a CPU's tens of milliseconds to read: in a thread, the event loop
        # goes on serving other requests meanwhile
        push = await self.services.read_in_thread(read) if len(raw) > READ_IN_THREAD_BYTES else read()
        req.table = push.batches[0].table if len(push.batches) == 1 else None
        req.points = sum(len(b.points) for b in push.batches)
        results = await self.services.storage.warehouse.push(push)
        return self._accepted(req, route, push, results)

    def _accepted(self, req: RequestRecord, route: str, push: Push, results: list[PushResult]) -> Answer:
        req.inserted = sum(r.inserted for r in results)
        req.replaced = sum(r.replaced for r in results)
        req.stale = sum(r.stale for r in results)
        body: dict[str, Any] = {
            "status": "OK",
            "message": "Batch is valid!" if route == "validate" else "Batch Accepted!",
            "records": req.points,
            "inserted": req.inserted,
            "replaced": req.replaced,
            "stale": req.stale,
            "request_id": req.rid,
        }
        if push.sandbox:
            body["sandbox"] = True
            body["tables"] = [
                {
                    "table": r.table,
                    "inserted": r.inserted,
                    "replaced": r.replaced,
                    "stale": r.stale,
                    "plan": r.plan,
                }
                for r in results
            ]
        return Answer(200 if route == "validate" else 201, body)

    def refusal(self, req: RequestRecord, exc: ImportApiError) -> Answer:
        """The real service's error bodies, with ``details`` (and a request id) added."""
        details = [d.as_dict() for d in exc.details]
        status = 503 if exc.status == 429 else exc.status  # a 4xx would end a sync for good
        first = exc.details[0]
        if status == 401:
            body: dict[str, Any] = {"message": "Not Authorized"}
        elif status == 403:
            body = {
                "status": "ERROR",
                "error": "Forbidden",
                "errors": {"error": "Access token is not associated with this client."},
            }
        elif status == 422:
            body = {
                "status": "ERROR",
                "error": "Request cannot be processed; see errors.",
                "errors": [{"reason": d.reason} for d in exc.details],
            }
        elif status == 413:
            body = {"status": "ERROR", "message": "Request rejected: request size exceeds the maximum"}
        elif status == 400 and first.code in (
            Code.BODY_NOT_JSON,
            Code.BODY_NOT_UTF8,
            Code.BODY_EMPTY,
            Code.NAME_REPEATED,
            Code.BODY_TOO_DEEP,
            Code.BODY_NOT_GZIP,
        ):
            body = {"status": "ERROR", "message": "Malformed json in the body!", "reason": first.message}
        elif status == 400 and first.code == Code.RECORDS_EXPECTED:
            body = {"status": "ERROR", "message": first.message}
        elif status == 400:
            body = {"error": _stitch_text(exc)}
        else:
            body = {"status": "ERROR", "message": first.message}
        body["details"] = details
        body["request_id"] = req.rid
        return Answer(status, body)


def _stitch_text(exc: ImportApiError) -> str:
    """A 400's error line, worded as the real service words it."""
    lines = []
    for d in exc.details:
        if d.code == Code.RECORD_NOT_CONFORMING:
            lines.append(f"Record {d.point} did not conform to schema: {d.message}")
        elif d.code == Code.BATCH_INVALID or d.code == Code.SCHEMA_UNREADABLE:
            text = (
                d.message
                if d.message.startswith("Request failed validation:")
                else (f"Request failed validation:{d.message}")
            )
            lines.append(text)
        else:
            lines.append(d.reason if d.code != Code.KEY_MISSING else d.message)
    return "; ".join(lines)


def _read(
    route: str,
    media: str,
    raw: bytes,
    client_id: int,
    *,
    sandbox: bool,
    received: dt.datetime,
    limits: Limits,
) -> Push:
    """The push a body asks for, or the refusal of it."""
    if route == "batch":
        push = typed.read(raw, client_id, sandbox=sandbox, received=received, limits=limits)
        if push is None:  # not of its schema's fast shape: read the general way
            push = read_batch(raw, client_id, sandbox=sandbox, received=received, limits=limits)
        return push
    body = transit.decode(raw) if media == _TRANSIT else decode_json(raw, points=False)
    return read_records(body, client_id, sandbox=sandbox, received=received, limits=limits)
