"""Reading a request body: size limits, gzip without inflating a bomb, and JSON decoding.

The body is read as JSON whatever its Content-Type says. Integers of any size keep every
digit (the decoder does not round them to doubles), and NaN or Infinity are refused.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from importapi.errors import BadRequest, PayloadTooLarge, UnsupportedEncoding

Receive = Callable[[], Awaitable[dict[str, Any]]]
_decode = msgspec.json.Decoder().decode


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is larger than {limit} bytes; send at most {limit} bytes "
                           "(after decompression) per request")


def encoding_of(header: bytes | None) -> str:
    value = (header or b"").decode("latin-1").strip().lower()
    if value in ("", "identity"):
        return ""
    if value in ("gzip", "x-gzip"):
        return "gzip"
    raise UnsupportedEncoding(
        f"Content-Encoding {value!r} is not supported: send the body plain or gzip-compressed"
    )


async def read_body(receive: Receive, encoding: str, content_length: bytes | None, limit: int) -> bytes:
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise BadRequest("the Content-Length header is not a number") from None
        if declared > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    return gunzip(body, limit) if encoding == "gzip" and body else body


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes; a bigger result is refused before it is inflated."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid gzip ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _too_large(limit)
    if not inflater.eof:
        raise BadRequest("the gzip body is truncated")
    return out


def decode_json(body: bytes) -> Any:
    if not body.strip():
        raise BadRequest("the body is empty: send a JSON object or an array of objects")
    try:
        return _decode(body)
    except RecursionError:
        raise BadRequest("the body is nested too deeply to be read") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
