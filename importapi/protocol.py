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
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT = 15.0


def header_timeout() -> float:
    raw = os.environ.get("IMPORTAPI_HEADER_TIMEOUT") or ""
    try:
        value = float(raw) if raw else DEFAULT_HEADER_TIMEOUT
    except ValueError:
        return DEFAULT_HEADER_TIMEOUT
    return value if 0 < value < float("inf") else DEFAULT_HEADER_TIMEOUT


def _late_answer(timeout: float) -> bytes:
    body = json.dumps({"code": 408, "message": "Request Timeout", "reasons": [
        f"the request line and headers did not arrive within {timeout:g} seconds"]}).encode()
    head = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
    return head + body


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """httptools with a deadline between a request's first byte and the end of its headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = header_timeout()
        self.head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
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
