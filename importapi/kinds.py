"""Column kinds: what a JSON value becomes in the warehouse, and how columns widen.

One lattice for every backend. Scalars widen along

    boolean < integer < double < decimal < text
                          timestamp, date < text

and ``json`` sits above them all: a JSON column takes any value as JSON. ``decimal`` is
an integer beyond 64 bits, an exact decimal (``Decimal``), or a column that has held one;
it keeps every digit. ``timestamp`` (an instant, stored in UTC) and ``date`` come from a
schema or from typed values (``datetime``, ``date``); joined with any other kind they
widen to text, written as ISO 8601 (``2026-12-01T07:46:49.376708Z``, ``2026-12-01``).
A value is converted to its column's kind by ``to_storage`` and a stored value to a wider
kind by ``widen_stored``: both go through the same Python value, so a widened column
means what the pushed values meant.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

import msgspec


class Kind(enum.IntEnum):
    BOOLEAN = 1
    INTEGER = 2
    DOUBLE = 3
    DECIMAL = 4
    TEXT = 5
    JSON = 6
    TIMESTAMP = 7
    DATE = 8

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Kind:
        return cls[label.upper()]


INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
DOUBLE_EXACT = 2**53  # integers beyond this magnitude are not all doubles
# Object keys sorted: PostgreSQL's jsonb keeps no key order, so neither backend does, and a
# warehouse copied from one to the other and back reads the same.
_encode_json = msgspec.json.Encoder(order="sorted", decimal_format="number").encode
_decode_json = msgspec.json.Decoder().decode


_TYPED = {Decimal: Kind.DECIMAL, dt.datetime: Kind.TIMESTAMP, dt.date: Kind.DATE}
_NUMBERS = frozenset((Kind.BOOLEAN, Kind.INTEGER, Kind.DOUBLE, Kind.DECIMAL))


def kind_of(value: Any) -> Kind | None:
    """The kind a value asks for; None for null, which never decides a type."""
    t = type(value)
    if t is str:
        return Kind.TEXT
    if t is int:
        return Kind.INTEGER if INT64_MIN <= value <= INT64_MAX else Kind.DECIMAL
    if t is float:
        return Kind.DOUBLE
    if t is bool:
        return Kind.BOOLEAN
    if value is None:
        return None
    return _TYPED.get(t, Kind.JSON)


def join(a: Kind, b: Kind) -> Kind:
    """The narrowest kind that holds values of both kinds."""
    if a is b:
        return a
    if a in _NUMBERS and b in _NUMBERS:
        return max(a, b)  # the numbers are a chain
    if a is Kind.JSON or b is Kind.JSON:
        return Kind.JSON
    return Kind.TEXT


def timestamp_text(value: dt.datetime) -> str:
    """An instant as the warehouse writes it: UTC, to the microsecond, so text order is time
    order. A time without a zone is taken as UTC."""
    zone = value.tzinfo
    if zone is not None and zone is not dt.UTC:
        value = value.astimezone(dt.UTC)
    return value.isoformat(timespec="microseconds")[:26] + "Z"  # the zone's "+00:00" left out


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


def _float_text(value: float) -> str:
    # repr is the shortest text that reads back as the same double.
    return repr(value)


def _text(value: Any, t: type) -> str:
    if t is bool:
        return "true" if value else "false"
    if t is float:
        return _float_text(value)
    if t is dt.datetime:
        return timestamp_text(value)
    if t is dt.date:
        return str(value.isoformat())
    if t is Decimal:
        return _decimal_text(value)
    return str(value)


def to_storage(value: Any, kind: Kind) -> Any:
    """Convert a decoded value to what a column of ``kind`` stores (timestamps and dates as
    their ISO text, which both backends take)."""
    if value is None:
        return None
    t = type(value)
    if kind is Kind.TEXT or kind is Kind.TIMESTAMP or kind is Kind.DATE:
        return value if t is str else _text(value, t)
    if kind is Kind.INTEGER or kind is Kind.BOOLEAN:
        return int(value)
    if kind is Kind.DOUBLE:
        return float(value)
    if kind is Kind.DECIMAL:
        if t is float:
            # the shortest digits, without an exponent and without a ".0": the text
            # PostgreSQL's numeric keeps, and 3.0 the same decimal (and key) as 3
            text = format(Decimal(_float_text(value or 0.0)), "f")
            return text.removesuffix(".0")
        if t is Decimal:
            return _decimal_text(value)
        return str(int(value))
    if t is float:
        # with a fraction part, so it reads back as a double from PostgreSQL's jsonb too,
        # which would write 1e+17 out as an integer
        text = format(Decimal(_float_text(value or 0.0)), "f")
        return text if "." in text else text + ".0"
    if t is dt.datetime or t is dt.date:
        return _encode_json(_text(value, t)).decode()
    return _encode_json(value).decode()


def from_storage(value: Any, kind: Kind) -> Any:
    """Read a stored value of ``kind`` back as the JSON value it holds."""
    if value is None:
        return None
    if kind is Kind.BOOLEAN:
        return bool(value)
    if kind is Kind.JSON:
        return _decode_json(value)
    if kind is Kind.DECIMAL:
        text = str(value)
        try:
            return int(text)
        except ValueError:
            exact = Decimal(text)
        near = float(exact)
        # a double when it holds the value exactly (what a double widened here was), else every digit
        return near if Decimal(repr(near)) == exact else exact
    if kind is Kind.TIMESTAMP and type(value) is dt.datetime:
        return timestamp_text(value)  # PostgreSQL gives a datetime; SQLite has the text already
    if kind is Kind.DATE and type(value) is dt.date:
        return value.isoformat()
    return value


def widen_stored(value: Any, old: Kind, new: Kind) -> Any:
    """Convert a value stored under ``old`` to what a column of ``new`` stores."""
    return to_storage(from_storage(value, old), new)


def json_depth(value: Any) -> int:
    """Nesting depth of a value: a scalar is 0, an object or array one more than its deepest."""
    if type(value) is dict:
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    if type(value) is list:
        return 1 + max((json_depth(v) for v in value), default=0)
    return 0


def tally(kinds: dict[str, Kind], mixed: set[str], name: str, kind: Kind) -> None:
    """Note that field ``name`` has a value of ``kind``: its kind so far widens to hold it,
    and a field seen with more than one kind is ``mixed``."""
    known = kinds.get(name)
    if known is None:
        kinds[name] = kind
    elif known is not kind:
        kinds[name] = join(known, kind)
        mixed.add(name)
