"""A small HTTP/1.1 proxy for the client tests, run on an asyncio loop in a thread of the test.

It forwards each request to the real server byte for byte, one upstream connection per
request, and hands back the server's answer as it came, except for the requests a test
scripts by their number (1 is the first request the proxy sees):

    "503"          answer 503 (JSON, Retry-After) without forwarding: the server never saw it
    "forward-503"  forward it (the server stores it), then answer 503 instead: the answer lost
    "hold"         keep it until ``release()``, then forward it
    "drop"         close the connection without an answer

It reads what the Stitch clients send (a Content-Length body; no chunked uploads) and
records every request with what it answered and when, so a test can count requests,
compare retried bodies and order events against the client's output.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

INJECTED = b'{"status":"ERROR","message":"503 injected by the test proxy"}'


@dataclass
class Seen:
    """One request as the proxy got it, and what became of it."""

    number: int
    method: str
    path: str
    body: bytes
    action: str
    status: int | None = None
    """The status sent back to the client; None when the connection was dropped."""
    answered_at: float | None = None
    """``time.monotonic()`` just before the answer's first byte was written."""


@dataclass
class _Message:
    head: bytes
    headers: dict[str, str]
    body: bytes


async def _read_message(reader: asyncio.StreamReader) -> _Message | None:
    """A request or an answer with a Content-Length body; None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ValueError("the test proxy does not read chunked bodies")
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return _Message(head, headers, body)


def _header_lines(head: bytes) -> list[bytes]:
    return [line for line in head.split(b"\r\n") if line and not line.lower().startswith(b"connection:")]


def _with_close(head: bytes) -> bytes:
    return b"\r\n".join([*_header_lines(head), b"Connection: close", b"", b""])


def _without_connection(head: bytes) -> bytes:
    return b"\r\n".join([*_header_lines(head), b"", b""])


def _injected_503() -> bytes:
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Retry-After: 1\r\nContent-Length: " + str(len(INJECTED)).encode() + b"\r\n\r\n" + INJECTED
    )


@dataclass
class FailingProxy:
    upstream: str
    plan: dict[int, str]
    base: str = ""
    seen: list[Seen] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    """Set once a request to hold has fully arrived (and is being held)."""
    errors: list[Exception] = field(default_factory=list)
    """What went wrong in the proxy itself (a request it cannot read, a server it cannot
    reach); the proxy's context fails with them, so no fault of its own passes for the
    client's behaviour."""
    _release: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def release(self) -> None:
        """Let held requests go on to the server."""
        self._release.set()

    def statuses(self) -> list[int | None]:
        return [s.status for s in self.seen]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while (request := await _read_message(reader)) is not None:
                if not await self._one(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except (OSError, ValueError) as exc:
            self.errors.append(exc)
        finally:
            self._writers.discard(writer)
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    async def _one(self, request: _Message, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the client connection is to be closed."""
        method, path, _ = request.head.decode("latin-1").split(" ", 2)
        number = len(self.seen) + 1
        action = self.plan.get(number, "forward")
        seen = Seen(number, method, path, request.body, action)
        self.seen.append(seen)
        if action == "drop":
            return False
        if action == "503":
            answer = _injected_503()
        else:
            if action == "hold":
                self.held.set()
                await asyncio.to_thread(self._release.wait)
            answer = await self._forward(request)
            if action == "forward-503":
                answer = _injected_503()
        seen.status = int(answer.split(b" ", 2)[1])
        seen.answered_at = time.monotonic()
        writer.write(answer)
        await writer.drain()
        return True

    async def _forward(self, request: _Message) -> bytes:
        url = urlsplit(self.upstream)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            writer.write(_with_close(request.head) + request.body)
            await writer.drain()
            answer = await _read_message(reader)
            if answer is None:
                raise ConnectionError("the server closed the connection without an answer")
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()
        # the server's "Connection: close" was about the proxy's upstream connection only
        return _without_connection(answer.head) + answer.body

    async def _close(self, server: asyncio.Server) -> None:
        server.close()
        for writer in list(self._writers):
            writer.close()  # its connection's task sees the end of the stream and returns
        await server.wait_closed()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await asyncio.get_running_loop().shutdown_default_executor()


@contextmanager
def failing_proxy(upstream: str, plan: dict[int, str] | None = None) -> Iterator[FailingProxy]:
    """A proxy to ``upstream`` (``http://host:port``) on a free local port, at ``.base``."""
    proxy = FailingProxy(upstream, dict(plan or {}))
    loop = proxy._loop
    thread = threading.Thread(target=loop.run_forever, name="failing-proxy", daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        asyncio.start_server(proxy._connection, "127.0.0.1", 0), loop
    ).result(10)
    port = server.sockets[0].getsockname()[1]
    proxy.base = f"http://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        proxy.release()
        asyncio.run_coroutine_threadsafe(proxy._close(server), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert not proxy.errors, f"the test proxy failed: {proxy.errors!r}"
