"""The HTTP connection under uvicorn: httptools, plus a deadline for each request's head.

uvicorn closes idle keep-alive connections, and the application bounds the time a body may
take (``IMPORTAPI_BODY_TIMEOUT``), but nothing bounds the time a client may take to send a
request line and headers: a client that sends them a byte at a time, or connects and sends
nothing, would hold its connection forever. Here each request's head must be complete
within ``IMPORTAPI_HEADER_TIMEOUT`` seconds (default 15) of the connection opening or of
the request's first byte; a late one is answered 408 in the contract's envelope, and the
connection is closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from importapi.errors import Code, RequestTimeout
from importapi.settings import Settings


def _late_answer(timeout: float) -> bytes:
    late = RequestTimeout(
        f"the request line and headers did not arrive within {timeout:g} seconds", code=Code.HEAD_TIMEOUT
    )
    body = json.dumps(late.envelope()).encode()
    head = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


# Read once per process from the settings that ``importapi.server`` handed to it.
_HEADER_TIMEOUT = Settings.from_env().header_timeout


class CoalescingTransport:
    """A connection's transport whose writes within one turn of the event loop go out as
    one: an answer's head and body in one system call, not two. Everything else is the
    transport's own; closing sends what is waiting first."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """httptools with a deadline between a request's first byte and the end of its headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = _HEADER_TIMEOUT
        self.head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        shared: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(shared)
        self._arm()  # a connection that never sends a byte is a head that never arrives

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if not self.transport.is_closing():
            self.transport.write(_late_answer(self.head_timeout))
            self.transport.close()
