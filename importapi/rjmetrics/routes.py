"""The RJMetrics Data Import API's routes: an adapter from its wire format to the push model.

    GET       /                                         status
    GET       /v{1,2}/client/{cid}/authenticate         is this a live key of the client
    POST/PUT  /v{1,2}/client/{cid}/table/{table}/data   upsert

The sandbox is the same routes under ``/sandbox`` or on a host named ``sandbox-*`` or
``sandbox.*``. Every answer is a JSON object starting with ``code`` and ``message``; errors
add ``reasons`` (and ``details``, the same problems as data). The quirks the legacy clients
need are kept here: answers labelled ``text/plain`` for the Node.js client (needle), and a
``Deprecation`` header on every v1 answer.
"""

from __future__ import annotations

from typing import Any

from importapi import __version__
from importapi.asgi import Receive, Scope
from importapi.body import decode_json
from importapi.errors import ImportApiError, NotFound, ServerError
from importapi.http import Answer, Services, allow
from importapi.names import table_name
from importapi.observe import RequestRecord
from importapi.push import Push
from importapi.rjmetrics.shapes import Shapes
from importapi.rjmetrics.validate import validate

V1_DEPRECATION = b"@1451606400"  # 2016-01-01: v2 has been the current version since
_DATA_METHODS = ("POST", "PUT")
_TEXT = b"text/plain; charset=utf-8"


class RJMetricsRoutes:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.shapes = Shapes()  # record shapes each table took: their requests read fastest

    async def handle(self, req: RequestRecord, scope: Scope, receive: Receive, path: str) -> Answer:
        """``path`` is the request's path without a ``/sandbox`` prefix."""
        return self._shaped(req, await self._route(req, scope, receive, path))

    def refusal(self, req: RequestRecord, exc: ImportApiError) -> Answer:
        body = exc.envelope()
        if isinstance(exc, ServerError) and exc.status == 500:
            body["request_id"] = req.rid
        return self._shaped(req, Answer(exc.status, body))

    def _shaped(self, req: RequestRecord, answer: Answer) -> Answer:
        if req.headers.get(b"user-agent", b"").startswith(b"Needle/"):
            answer.content_type = _TEXT  # the Node.js client decodes the body itself
        if req.version == 1:
            answer.headers.append((b"deprecation", V1_DEPRECATION))
            answer.headers.append((b"link", b'</v2>; rel="successor-version"'))
        return answer

    async def _route(self, req: RequestRecord, scope: Scope, receive: Receive, path: str) -> Answer:
        if path == "/":
            req.route = "status"
            allow(req.method, ("GET", "HEAD"))
            await self.services.in_thread(self.services.storage.ping)
            return Answer(
                200,
                {
                    "code": 200,
                    "message": "OK",
                    "service": "importapi",
                    "version": __version__,
                    "sandbox": req.sandbox,
                },
            )
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
            allow(req.method, ("GET", "HEAD"))
            await self.services.key(req, scope, int(cid))
            return Answer(200, {"code": 200, "message": "OK", "client_id": int(cid), "sandbox": req.sandbox})
        if len(parts) == 7 and parts[4] == "table" and parts[6] == "data":
            req.route = "data"
            allow(req.method, _DATA_METHODS)
            return await self._upsert(req, scope, receive, int(cid), parts[5])
        raise NotFound(f"no such resource: {path}")

    async def _upsert(
        self, req: RequestRecord, scope: Scope, receive: Receive, client_id: int, raw_table: str
    ) -> Answer:
        services = self.services
        await services.key(req, scope, client_id)
        table = req.table = table_name(raw_table)
        limits = services.settings.limits
        raw = await services.body(req, receive, limits.max_body_bytes)
        batch = self.shapes.decode(client_id, table, raw, limits) if req.version == 2 else None
        if batch is None:
            batch = validate(decode_json(raw), table, version=req.version, limits=limits)
        req.points = len(batch.points)
        (result,) = await services.storage.warehouse.push(Push(client_id, [batch], req.sandbox))
        if result.kinds is not None and req.version == 2:
            self.shapes.learn(client_id, batch, result.kinds)
        req.inserted, req.replaced = result.inserted, result.replaced
        body: dict[str, Any] = {
            "code": 201,
            "message": "Created",
            "table": table,
            "inserted": result.inserted,
            "replaced": result.replaced,
        }
        if req.sandbox:
            body["sandbox"] = True
            body["plan"] = {**result.plan, "inserted": result.inserted, "replaced": result.replaced}
        return Answer(201, body)
