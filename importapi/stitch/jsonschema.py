"""A batch's JSON Schema, read for what the warehouse needs: each field's types, and a
converter that checks a value against them and gives it typed.

    integer                      -> int
    number                       -> float; a Decimal when multipleOf is a power of ten
                                    below 1 (a DECIMAL(10,2) keeps its cents)
    boolean, string              -> bool, str
    string, format date-time     -> an aware datetime in UTC (parsed leniently)
    string, format date          -> a date
    object, array                -> the value as it is (a JSON column)
    ["null", T]                  -> T, or None
    several types                -> whichever the value is (the column widens as elsewhere)

``$ref`` into ``definitions``, ``anyOf`` and ``oneOf`` (their types together) are read;
other keywords (``minimum``, ``maxLength``, ``inclusion`` ...) are accepted and not
enforced: a record conforms when each value is of a type its field allows, its date-time
or date parses, and an exact decimal is a multiple of its step.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from importapi.kinds import DOUBLE_EXACT, Kind

_TYPES = ("null", "boolean", "integer", "number", "string", "object", "array")
_NAMES = {
    "null": "Null",
    "boolean": "Boolean",
    "integer": "Integer",
    "number": "Number",
    "string": "String",
    "object": "JSONObject",
    "array": "JSONArray",
}


class Unreadable(ValueError):
    """The schema itself cannot be read (not an object, a type that does not exist, ...)."""


class Mismatch(ValueError):
    """A value its field's schema does not allow; the message says what was expected."""


def _found(value: Any) -> str:
    if value is None:
        return "Null"
    t = type(value)
    if t is bool:
        return "Boolean"
    if t is int:
        return "Integer"
    if t is float or t is Decimal:
        return "Number"
    if t is str:
        return "String"
    return "JSONObject" if t is dict else "JSONArray" if t is list else t.__name__


_OFFSET = re.compile(r"([+-]\d\d)(\d\d)$")


def parse_datetime(text: str) -> dt.datetime:
    """A date-time, leniently: RFC 3339, a space for the ``T``, ``+0000`` offsets, no zone
    (taken as UTC), a bare date (midnight UTC). The result is aware, in UTC."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    s = _OFFSET.sub(r"\1:\2", s)
    try:
        value = dt.datetime.fromisoformat(s)
    except ValueError:
        raise Mismatch(f"[{text}] is not a valid date-time") from None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise Mismatch(f"[{text}] is not a valid date") from None


@dataclass(frozen=True)
class FieldType:
    """What one field of a record may hold."""

    types: frozenset[str]
    """The JSON types allowed; empty: any value."""
    format: str | None = None
    step: Decimal | None = None
    """The step of an exact decimal (``multipleOf`` a power of ten below 1)."""
    properties: Mapping[str, FieldType] | None = field(default=None, compare=False)
    """An object's fields (flattened into ``field__child`` columns)."""
    items: FieldType | None = field(default=None, compare=False)
    """An array's elements (the rows of a subtable)."""

    @functools.cached_property
    def convert(self) -> Callable[[Any], Any]:
        """From a decoded value to its typed value, raising Mismatch (made once)."""
        return _converter(self)

    @property
    def nullable(self) -> bool:
        return not self.types or "null" in self.types

    @property
    def kind(self) -> Kind | None:
        """The column kind this field asks for before any value is seen, when its schema
        says one (one non-null type); None otherwise."""
        named = self.types - {"null"}
        if len(named) != 1:
            return None
        (t,) = named
        if t == "string":
            return {"date-time": Kind.TIMESTAMP, "date": Kind.DATE}.get(self.format or "", Kind.TEXT)
        if t == "number":
            return Kind.DECIMAL if self.step is not None else Kind.DOUBLE
        return {"integer": Kind.INTEGER, "boolean": Kind.BOOLEAN}.get(t, Kind.JSON)

    def expected(self) -> str:
        return " or ".join(_NAMES[t] for t in (*_TYPES[1:], "null") if t in self.types)

    def converter(self) -> Callable[[Any], Any]:
        """A function from a decoded value to its typed value, raising Mismatch."""
        return _converter(self)


def _mismatch(ft: FieldType, value: Any) -> Mismatch:
    return Mismatch(f"expected type: {ft.expected()}, found: {_found(value)}")


def _converter(ft: FieldType) -> Callable[[Any], Any]:
    types = ft.types
    if not types:
        return lambda value: value
    nullable = "null" in types
    if types <= {"null", "string"} and ft.format is None:

        def text(value: Any) -> Any:
            if type(value) is str or (value is None and nullable):
                return value
            raise _mismatch(ft, value)

        return text
    if types <= {"null", "integer"}:

        def integer(value: Any) -> Any:
            t = type(value)
            if t is int or (value is None and nullable):
                return value
            if (t is float or t is Decimal) and value == int(value):
                return int(value)  # 5.0 is an integer
            raise _mismatch(ft, value)

        return integer

    def general(value: Any) -> Any:
        return _convert(ft, value)

    return general


def _convert(ft: FieldType, value: Any) -> Any:
    types, t = ft.types, type(value)
    if value is None:
        if "null" in types:
            return None
    elif t is bool:
        if "boolean" in types:
            return value
    elif t is int or t is float or t is Decimal:
        if "integer" in types and t is not float and (t is int or value == int(value)):
            return int(value)
        if "number" in types:
            return _number(ft, value)
        if "integer" in types and value == int(value):
            return int(value)
    elif t is str:
        if "string" in types:
            if ft.format == "date-time":
                return parse_datetime(value)
            if ft.format == "date":
                return parse_date(value)
            return value
    elif t is dict:
        if "object" in types:
            return value
    elif t is list and "array" in types:
        return value
    raise _mismatch(ft, value)


def _number(ft: FieldType, value: Any) -> Any:
    if ft.step is None:
        if type(value) is int and not -DOUBLE_EXACT <= value <= DOUBLE_EXACT:
            return value  # a double would round it: it stays whole (a decimal column)
        return float(value)
    exact = value if type(value) is Decimal else Decimal(repr(value) if type(value) is float else value)
    if not multiple_of(exact, ft.step):
        raise Mismatch(f"{exact} is not a multiple of {ft.step}")
    return exact


def multiple_of(value: Decimal | int, step: Decimal) -> bool:
    """Is the value a whole number of ``step``, a power of ten below 1? Read off its digits,
    so any number of them works (decimal arithmetic would stop at 28)."""
    if not isinstance(value, Decimal):
        return True  # an integer
    _sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        return False  # infinity or NaN
    places = -step.as_tuple().exponent  # type: ignore[operator]
    extra = -exponent - places
    return extra <= 0 or not any(digits[-extra:])


def _step(schema: Mapping[str, Any]) -> Decimal | None:
    """The step of an exact decimal: ``multipleOf`` a power of ten below 1 (0.01, 1e-10)."""
    raw = schema.get("multipleOf")
    if raw is None or type(raw) is bool:
        return None
    try:
        step = Decimal(str(raw))
    except InvalidOperation:
        return None
    if 0 < step < 1 and step == Decimal(1).scaleb(step.adjusted()):
        return step
    return None


def _resolve(schema: Any, root: Mapping[str, Any], depth: int = 0) -> Mapping[str, Any]:
    if depth > 32:
        raise Unreadable("$ref goes too deep (a loop?)")
    if not isinstance(schema, Mapping):
        raise Unreadable(f"a property's schema must be an object, not {_found(schema)}")
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith("#/"):
            raise Unreadable(f"$ref {ref!r} is not a reference into this schema")
        target: Any = root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or part not in target:
                raise Unreadable(f"$ref {ref!r} points at nothing")
            target = target[part]
        return _resolve(target, root, depth + 1)
    return schema


MAX_DEPTH = 32
MAX_SCHEMAS = 50_000
"""Property schemas read in one record schema, once its ``$ref`` are followed: a few kilobytes
of references to references can stand for billions of them."""


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_SCHEMAS

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise Unreadable(
                f"the schema describes more than {MAX_SCHEMAS} properties once its $refs are followed"
            )


def field_type(
    schema: Any, root: Mapping[str, Any], depth: int = 0, budget: _Budget | None = None
) -> FieldType:
    """A property's schema, read (an object's and an array's own ones too, to a depth)."""
    budget = budget or _Budget()
    budget.take()
    if depth > MAX_DEPTH:
        return FieldType(frozenset())  # deeper than any record may be: whatever it holds
    schema = _resolve(schema, root)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(alternatives, list) and alternatives:
        parts = [field_type(a, root, depth, budget) for a in alternatives]
        if any(not p.types for p in parts):
            return FieldType(frozenset())
        fmt = next((p.format for p in parts if p.format), None)
        step = next((p.step for p in parts if p.step is not None), None)
        props = next((p.properties for p in parts if p.properties is not None), None)
        items = next((p.items for p in parts if p.items is not None), None)
        return FieldType(frozenset().union(*(p.types for p in parts)), fmt, step, props, items)
    raw = schema.get("type")
    if raw is None:
        return FieldType(frozenset())
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise Unreadable(f"type must be a type's name or a list of them, not {raw!r}")
    unknown = [n for n in names if n not in _TYPES]
    if unknown:
        raise Unreadable(f"{unknown[0]!r} is not a JSON Schema type")
    fmt = schema.get("format") if isinstance(schema.get("format"), str) else None
    props = schema.get("properties") if "object" in names else None
    sub_fields = (
        {n: field_type(sub, root, depth + 1, budget) for n, sub in props.items()}
        if isinstance(props, Mapping)
        else None
    )
    items = schema.get("items") if "array" in names else None
    item_type = field_type(items, root, depth + 1, budget) if isinstance(items, Mapping) else None
    return FieldType(
        frozenset(names), fmt if fmt in ("date-time", "date") else None, _step(schema), sub_fields, item_type
    )


def properties(schema: Any) -> dict[str, FieldType]:
    """The top-level fields of a record schema and what each may hold."""
    if not isinstance(schema, Mapping):
        raise Unreadable("schema must be a JSON Schema object")
    props = _resolve(schema, schema).get("properties", {})
    if not isinstance(props, Mapping):
        raise Unreadable("schema.properties must be an object")
    budget = _Budget()
    return {name: field_type(sub, schema, 0, budget) for name, sub in props.items()}
