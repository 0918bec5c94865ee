"""Faults put in front of the real app or the real server, for the client and loader tests.

``Faults`` is a script, one entry per request that passes: ``"pass"``, ``"503"`` or
``"429"`` (answered in its place, with ``Retry-After: 0``), ``"hold"`` (kept back until
a later request has been answered, in process only), ``"drop"`` (the connection is
closed before the request reaches the server) or ``"drop-after"`` (the server handles it,
then the connection is closed before the answer). ``faulty(app, faults)`` wraps the ASGI
app in process (no dropping there); ``FaultProxy`` is a real HTTP proxy on a socket in
front of the real server process. ``LoopTransport`` lets the sync client reach the app in
process, the way ``httpx.ASGITransport`` does for the async one.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

import httpx

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@dataclass
class Seen:
    method: str
    path: str
    fault: str
    body_bytes: int
    content_encoding: str


class Faults:
    def __init__(self, *script: str) -> None:
        self.script = deque(script)
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._finished: asyncio.Event | None = None

    def next(self, method: str, path: str, body_bytes: int, encoding: str) -> str:
        with self._lock:
            fault = self.script.popleft() if self.script else "pass"
            self.seen.append(Seen(method, path, fault, body_bytes, encoding))
            return fault

    async def overtaken(self, at_most: float = 1.0) -> None:
        """Hold a request until a later one has been answered (at most ``at_most`` seconds,
        for a client that rightly sends nothing else meanwhile)."""
        self._finished = self._finished or asyncio.Event()
        try:
            await asyncio.wait_for(self._finished.wait(), at_most)
        except TimeoutError:
            pass

    def finished(self) -> None:
        self._finished = self._finished or asyncio.Event()
        self._finished.set()

    def data_requests(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.endswith("/data")]


def canned(status: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    message = "Too Many Requests" if status == 429 else "Service Unavailable"
    body = json.dumps({"code": status, "message": message, "reasons": ["injected by the test"]}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"0"),
    ]
    return headers, body


def faulty(app: ASGIApp, faults: Faults) -> ASGIApp:
    """The app behind a script of injected 503 and 429 answers."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:  # read the body here, then replay it to the app
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = dict(scope["headers"])
        fault = faults.next(
            scope["method"], scope["path"], len(body), headers.get(b"content-encoding", b"").decode()
        )
        if fault in ("503", "429"):
            answer_headers, content = canned(int(fault))
            await send({"type": "http.response.start", "status": int(fault), "headers": answer_headers})
            await send({"type": "http.response.body", "body": content})
            return
        if fault == "hold":
            await faults.overtaken()
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)
        if fault != "hold":
            faults.finished()

    return wrapped


class LoopTransport(httpx.BaseTransport):
    """A sync httpx transport to an ASGI app running on an event loop in another thread."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def go() -> tuple[int, httpx.Headers, bytes]:
            forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            response = await self.inner.handle_async_request(forwarded)
            return response.status_code, response.headers, await response.aread()

        status, headers, content = asyncio.run_coroutine_threadsafe(go(), self.loop).result(timeout=60)
        return httpx.Response(status, headers=headers, content=content)


class FaultProxy:
    """A real HTTP/1.1 proxy on 127.0.0.1, in a thread of its own, that forwards to
    ``upstream`` except where the script says otherwise. Use it as a context manager."""

    def __init__(self, upstream: str, faults: Faults) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""
        self._server: asyncio.Server | None = None
        self._http: httpx.AsyncClient | None = None

    def __enter__(self) -> Self:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _start(self) -> str:
        self._http = httpx.AsyncClient(timeout=60)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        assert self._server is not None and self._http is not None
        self._server.close()
        await self._server.wait_closed()
        await self._http.aclose()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        fault = self.faults.next(method, target.split("?")[0], len(body), headers.get("content-encoding", ""))
        if fault == "drop":
            return False
        if fault in ("503", "429"):
            status = int(fault)
            raw_headers, content = canned(status)
            out = [(k.decode(), v.decode()) for k, v in raw_headers]
        else:
            assert self._http is not None
            keep = {k: v for k, v in headers.items() if k not in ("host", "connection", "content-length")}
            response = await self._http.request(method, self.upstream + target, headers=keep, content=body)
            status, content = response.status_code, response.content
            out = [
                (k, v)
                for k, v in response.headers.items()
                if k.lower() not in ("content-length", "connection", "transfer-encoding")
            ]
            out.append(("content-length", str(len(content))))
        if fault == "drop-after":
            return False
        lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in out), "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + content)
        await writer.drain()
        return True
