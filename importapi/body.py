"""Reading a request body: size limits, gzip without inflating a bomb, and JSON decoding.

The body is read as JSON whatever its Content-Type says. Integers of any size keep every
digit (the decoder does not round them to doubles), and NaN or Infinity are refused.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import msgspec

from importapi.errors import BadRequest, Code, Detail, PayloadTooLarge, UnsupportedEncoding

Receive = Callable[[], Awaitable[dict[str, Any]]]
_decode = msgspec.json.Decoder().decode
_decode_exact = msgspec.json.Decoder(float_hook=Decimal).decode


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body is larger than {limit} bytes; send at most {limit} bytes (after decompression) per request"
    )


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
            raise BadRequest(
                "the Content-Length header is not a number", code=Code.CONTENT_LENGTH_INVALID
            ) from None
        if declared > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest(
                "the client disconnected before sending the whole body", code=Code.BODY_INCOMPLETE
            )
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    return gunzip(body, limit) if encoding == "gzip" and body else body


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes; a bigger result is refused before it is inflated.

    A gzip stream may hold several members one after the other (``cat a.gz b.gz``); all of
    them are read, within one budget, so no part of the body is silently left out.
    """
    parts: list[bytes] = []
    size = 0
    rest = data
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, limit + 1 - size)  # never 0, which means "no limit"
        except zlib.error as exc:
            raise BadRequest(f"the body is not valid gzip ({exc})", code=Code.BODY_NOT_GZIP) from None
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise _too_large(limit)
        if not inflater.eof:
            raise BadRequest("the gzip body is truncated", code=Code.BODY_NOT_GZIP)
        parts.append(part)
        rest = inflater.unused_data
    return b"".join(parts)


def decode_json(body: bytes, *, exact: bool = False, points: bool = True) -> Any:
    """The body's JSON value. ``exact``: numbers with a fraction come as Decimal, every digit
    kept. ``points``: the body is data points (an object or an array of them), whose text
    is checked for NUL characters here; a caller that reads another shape checks its own."""
    if not body.strip():
        raise BadRequest("the body is empty: send a JSON object or an array of objects", code=Code.BODY_EMPTY)
    try:
        value = (_decode_exact if exact else _decode)(body)
    except RecursionError:
        raise BadRequest("the body is nested too deeply to be read", code=Code.BODY_TOO_DEEP) from None
    except msgspec.DecodeError as exc:
        raise _not_utf8(body) or BadRequest(
            f"the body is not valid JSON: {exc}", code=Code.BODY_NOT_JSON
        ) from None
    except UnicodeDecodeError as exc:  # msgspec before 0.23 (later ones raise DecodeError)
        raise _not_utf8(body) or BadRequest(
            f"the body is not valid UTF-8 ({exc})", code=Code.BODY_NOT_UTF8
        ) from None
    _refuse_repeated_names(body, value)
    if points and b"\\u0000" in body:  # JSON can carry a NUL only escaped; look closer only then
        _refuse_nul(value)
    return value


def _not_utf8(body: bytes) -> BadRequest | None:
    """The refusal of a body that is not UTF-8, naming the first bad byte; None if it is."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRequest(
            f"the body is not valid UTF-8 (byte {exc.start}); JSON is sent as UTF-8", code=Code.BODY_NOT_UTF8
        )
    half = _HALF_SURROGATE.search(body)
    if half is not None:  # an escape the decoder refuses: text no database can store as given
        return BadRequest(
            f"the body escapes half a surrogate pair ({half.group(1).decode()!r}), which is not text",
            code=Code.BODY_NOT_UTF8,
        )
    return None


# An escape (after an even run of backslashes, so not an escaped backslash) of \uD800-\uDBFF
# not followed by one of \uDC00-\uDFFF, or of \uDC00-\uDFFF not after one of \uD800-\uDBFF.
_HALF_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*"
    rb"(\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)


def holds_nul(value: Any) -> bool:
    if type(value) is str:
        return "\x00" in value
    if type(value) is list:
        return any(holds_nul(v) for v in value)
    if type(value) is dict:
        return any("\x00" in k or holds_nul(v) for k, v in value.items())
    return False


def _refuse_nul(value: Any) -> None:
    """Text with a NUL character (U+0000) cannot be stored by PostgreSQL (text or jsonb), so
    neither backend takes it; a field name with one is refused by validation."""
    points = value if type(value) is list else [value]
    try:
        bad = [i for i, p in enumerate(points) if holds_nul(list(p.values()) if type(p) is dict else p)]
    except RecursionError:
        return  # validation refuses the nesting
    if bad:
        raise BadRequest(
            details=[
                Detail(
                    Code.TEXT_HAS_NUL,
                    "a string holds the character U+0000 (NUL), which the warehouse cannot store",
                    i,
                )
                for i in bad
            ]
        )


# A name, then white space, then the colon: the one way to write a pair without '":'.
_SPACE_BEFORE_COLON = re.compile(rb'"[ \t\n\r]+:')


def names_once(body: bytes, pairs: int) -> bool:
    """True when a body whose objects decoded to ``pairs`` name-value pairs wrote no name twice.

    Every pair of every object is written with a colon, so a body with no more colons than
    pairs repeats no name. When values hold colons too (times of day, URLs): with no white
    space before a colon, each pair reads ``"name":``, and the only other way to write
    ``":`` is after an escaped quote inside a string, so as many ``":`` as pairs proves it as
    well. False means "not proved": the caller looks closer.
    """
    colons = body.count(b":")
    if colons == pairs:
        return True
    quoted = body.count(b'":')
    if quoted != pairs:
        return False
    return colons == quoted or _SPACE_BEFORE_COLON.search(body) is None


def _members(value: Any) -> int:
    """How many name-value pairs the objects of a decoded value hold, at every depth."""
    if type(value) is dict:
        return len(value) + sum(_members(v) for v in value.values() if type(v) is dict or type(v) is list)
    if type(value) is list:
        return sum(_members(v) for v in value if type(v) is dict or type(v) is list)
    return 0


def _refuse_repeated_names(body: bytes, value: Any) -> None:
    """A name given twice in one object is a 400: the decoder would silently keep the last.

    The common cases are proved by counting (``names_once``), without a second parse;
    anything else is parsed again by a decoder that sees every pair (about twice the cost).
    """
    points = value if type(value) is list else [value]
    try:
        if body.count(b"{") == len(points) and all(type(p) is dict for p in points):
            pairs = sum(map(len, points))  # no object inside another: count without a walk
        else:
            pairs = _members(value)
        if not names_once(body, pairs):
            json.loads(body, object_pairs_hook=_no_repeated_name)
    except RecursionError:
        pass  # deeper than validation allows, which refuses it with its own reason


def _no_repeated_name(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise BadRequest(
                f"the name {name!r} is given more than once in one object; give each field once",
                code=Code.NAME_REPEATED,
                field=name,
            )
        seen.add(name)
    return {}
