"""Column kinds: what a JSON value becomes in the warehouse, and how columns widen.

One lattice for every backend. Scalars widen along

    boolean < integer < double < decimal < text

and ``json`` sits above them all: a JSON column takes any value as JSON. ``decimal`` is
an integer beyond 64 bits (or a column that has held one); it keeps every digit.
A value is converted to its column's kind by ``to_storage`` and a stored value to a wider
kind by ``widen_stored``: both go through the same Python value, so a widened column
means what the pushed values meant.
"""

from __future__ import annotations

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
_encode_json = msgspec.json.Encoder(order="sorted").encode
_decode_json = msgspec.json.Decoder().decode


def kind_of(value: Any) -> Kind | None:
    """The kind a JSON value asks for; None for null, which never decides a type."""
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
    return Kind.JSON


def join(a: Kind, b: Kind) -> Kind:
    """The narrowest kind that holds values of both kinds (the lattice is a chain)."""
    return max(a, b)


def _float_text(value: float) -> str:
    # repr is the shortest text that reads back as the same double.
    return repr(value)


def to_storage(value: Any, kind: Kind) -> Any:
    """Convert a decoded JSON value to what a column of ``kind`` stores."""
    if value is None:
        return None
    t = type(value)
    if kind is Kind.TEXT:
        if t is str:
            return value
        if t is bool:
            return "true" if value else "false"
        if t is float:
            return _float_text(value)
        return str(value)
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
        return str(int(value))
    if t is float:
        # with a fraction part, so it reads back as a double from PostgreSQL's jsonb too,
        # which would write 1e+17 out as an integer
        text = format(Decimal(_float_text(value or 0.0)), "f")
        return text if "." in text else text + ".0"
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
            return float(text)
    return value


def widen_stored(value: Any, old: Kind, new: Kind) -> Any:
    """Convert a value stored under ``old`` to what a column of ``new`` stores."""
    return to_storage(from_storage(value, old), new)
