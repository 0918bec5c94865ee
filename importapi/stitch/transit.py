"""Transit (``application/transit+json``), as stitchclient and the Java and Clojure clients
send it: JSON whose strings and arrays carry types, read into the values the push model takes.

    ["^ ", k1, v1, ...]     a map                 "~m1796111209376"   a UTC instant (milliseconds)
    "^0", "^1", ...         a string seen before  "~t2026-12-01T..."  an instant, as text
    "~i123", "~n123"        an integer            "~f12.50"           an exact decimal
    "~d1.5"                 a double              "~:name", "~$name"  a keyword, a symbol (text)
    "~u...", "~r..."        a UUID, a URI (text)  "~~x", "~^x", "~`x" strings that begin so
    ["~#set", [...]]        a set, a list ...     ["~#cmap", [k, v, ...]]  a map with other keys

Map keys of four characters or more, and tags, keywords and symbols, are written once and
then referred to by their place in a cache; the reader keeps the same cache, in the same
order. JSON is decoded by msgspec; the walk over it is the only Python per value.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from importapi.errors import BadRequest, Code

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_CACHE_SIZE = 44 * 44
_decode = msgspec.json.Decoder().decode


class TransitError(ValueError):
    pass


def _code_index(ref: str) -> int:
    if len(ref) == 2:
        return ord(ref[1]) - 48
    return (ord(ref[1]) - 48) * 44 + (ord(ref[2]) - 48)


class _Reader:
    def __init__(self) -> None:
        self.cache: list[str] = []

    def _resolve(self, s: str, as_key: bool) -> str:
        """The string as written (a cache reference replaced by what it stands for)."""
        if len(s) > 1 and s[0] == "^" and s != "^ ":
            try:
                return self.cache[_code_index(s)]
            except IndexError:
                raise TransitError(f"cache reference {s!r} refers to nothing") from None
        if len(s) > 3 and (as_key or s[:2] in ("~#", "~$", "~:")):
            if len(self.cache) == _CACHE_SIZE:
                self.cache.clear()
            self.cache.append(s)
        return s

    def value(self, v: Any, as_key: bool = False) -> Any:
        t = type(v)
        if t is str:
            return _scalar(self._resolve(v, as_key))
        if t is list:
            return self._array(v)
        if t is dict:
            return self._object(v)
        if t is float and v != v:  # pragma: no cover - JSON has no NaN
            raise TransitError("NaN is not a number the warehouse stores")
        return v

    def _array(self, items: list[Any]) -> Any:
        if items and type(items[0]) is str:
            head = self._resolve(items[0], False) if items[0] != "^ " else "^ "
            if head == "^ ":
                return self._map(items[1:])
            if head.startswith("~#") and len(items) == 2:
                return self._tagged(head[2:], items[1])
            return [_scalar(head), *(self.value(x) for x in items[1:])]
        return [self.value(x) for x in items]

    def _map(self, flat: list[Any]) -> dict[str, Any]:
        if len(flat) % 2:
            raise TransitError("a map has a key without a value")
        out: dict[str, Any] = {}
        for i in range(0, len(flat), 2):
            key = _key(self.value(flat[i], as_key=True))  # first: the cache fills in document order
            out[key] = self.value(flat[i + 1])
        return out

    def _object(self, obj: dict[str, Any]) -> Any:
        """Verbose Transit: maps are JSON objects, and a tagged value is {"~#tag": value}."""
        if len(obj) == 1:
            ((name, inner),) = obj.items()
            raw = self._resolve(name, True)
            if raw.startswith("~#"):
                return self._tagged(raw[2:], inner)
            return {_key(_scalar(raw)): self.value(inner)}
        out: dict[str, Any] = {}
        for k, v in obj.items():
            key = _key(self.value(k, as_key=True))
            out[key] = self.value(v)
        return out

    def _tagged(self, tag: str, inner: Any) -> Any:
        if tag in ("set", "list", "'"):
            return self.value(inner)
        if tag == "cmap":
            flat = self.value(inner)
            if not isinstance(flat, list) or len(flat) % 2:
                raise TransitError("a cmap is an array of keys and values")
            return {_key(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        value = self.value(inner)
        if tag in ("m", "t", "i", "n", "f", "d", "u", "r", ":", "$", "?"):
            return _scalar(f"~{tag}{value}") if isinstance(value, str | int) else value
        raise TransitError(f"tag {tag!r} is not one a record holds")


def _key(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    return str(value)


def _scalar(s: str) -> Any:
    if len(s) < 2 or s[0] != "~":
        return s
    tag, rest = s[1], s[2:]
    try:
        if tag in "~^`":
            return s[1:]
        if tag == "_":
            return None
        if tag == "?":
            return rest == "t"
        if tag in "in":
            return int(rest)
        if tag == "d":
            return float(rest)
        if tag == "f":
            return Decimal(rest)
        if tag == "m":
            return _EPOCH + dt.timedelta(milliseconds=int(rest))
        if tag == "t":
            value = dt.datetime.fromisoformat(rest.replace("Z", "+00:00"))
            return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if tag in ":$ur":
            return rest
        if tag == "z":
            raise TransitError(f"{rest} is not a number the warehouse stores")
    except (ValueError, InvalidOperation, OverflowError) as exc:
        raise TransitError(f"{s[:40]!r} is not a valid Transit value ({exc})") from None
    raise TransitError(f"{s[:40]!r} has a Transit tag the records do not use")


def decode(body: bytes) -> Any:
    """The value of a Transit-JSON body, or a 400 that says what is wrong."""
    try:
        raw = _decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid Transit JSON: {exc}", code=Code.BODY_NOT_JSON) from None
    try:
        return _Reader().value(raw)
    except (TransitError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid Transit: {exc}", code=Code.BODY_NOT_JSON) from None
