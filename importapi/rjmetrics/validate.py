"""Validation of an RJMetrics upsert request: from a decoded JSON body to a ``Batch``.

Everything the request alone can tell is checked here, for the whole request, before
anything is written: the body's shape, each data point's ``keys`` and key values, field
and table names, nesting depth. Each problem becomes one reason naming the data point's
index. What needs the table's current schema (its key fields, column names, the column
limit) is checked by ``importapi.schema``.
"""

from __future__ import annotations

from typing import Any

from importapi.errors import BadRequest, Code, Detail
from importapi.kinds import DOUBLE_EXACT, INT64_MAX, INT64_MIN, Kind, json_depth, kind_of, tally
from importapi.names import field_name_problem
from importapi.push import Batch
from importapi.settings import Limits

MAX_REASONS = 50


def _name_problem(name: str, lower_names: dict[str, str]) -> tuple[Code, str] | None:
    problem = field_name_problem(name)
    if problem:
        return problem
    other = lower_names.setdefault(name.lower(), name)
    if other != name:
        return (
            Code.FIELD_NAME_CASE,
            f"field names {other!r} and {name!r} differ only in case; columns are matched ignoring case",
        )
    return None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


class Collector:
    """The problems of a request, at most ``MAX_REASONS`` of them, raised together."""

    def __init__(self) -> None:
        self.details: list[Detail] = []
        self.dropped = 0

    def add(self, index: int | None, code: Code, text: str, field: str | None = None) -> None:
        if len(self.details) >= MAX_REASONS:
            self.dropped += 1
            return
        self.details.append(Detail(code, text, index, field))

    def raise_if_any(self) -> None:
        if self.details:
            more = (
                [Detail(Code.MORE_PROBLEMS, f"... and {self.dropped} more problems")] if self.dropped else []
            )
            raise BadRequest(details=[*self.details, *more])


def _v2_keys(point: dict[str, Any], i: int, limits: Limits, out: Collector) -> tuple[str, ...] | None:
    keys = point.get("keys", _MISSING)
    if keys is _MISSING:
        out.add(
            i, Code.KEYS_MISSING, 'has no "keys" field: name the fields that identify it, e.g. "keys": ["id"]'
        )
        return None
    if type(keys) is not list or not keys:
        out.add(
            i, Code.KEYS_INVALID, f'"keys" must be a non-empty array of field names, got {_type_name(keys)}'
        )
        return None
    if any(type(k) is not str for k in keys):
        out.add(i, Code.KEYS_INVALID, '"keys" must contain only field names (strings)')
        return None
    if len(set(keys)) != len(keys):
        out.add(i, Code.KEYS_INVALID, f'"keys" names a field more than once: {keys}')
        return None
    if len(keys) > limits.max_key_fields:
        out.add(
            i,
            Code.KEYS_TOO_MANY,
            f'"keys" names {len(keys)} fields; at most {limits.max_key_fields} are allowed',
        )
        return None
    ok = True
    for k in keys:
        if k == "keys":
            out.add(i, Code.KEYS_INVALID, '"keys" cannot name the field "keys" itself', "keys")
            ok = False
        elif k not in point:
            out.add(i, Code.KEY_MISSING, f"key field {k!r} is missing", k)
            ok = False
        else:
            v = point[k]
            if v is None or type(v) is dict or type(v) is list:
                out.add(
                    i,
                    Code.KEY_INVALID,
                    f"key field {k!r} must be a string, number or boolean, got {_type_name(v)}",
                    k,
                )
                ok = False
    return tuple(keys) if ok else None


_MISSING = object()


def _v1_id(point: dict[str, Any], i: int, out: Collector) -> bool:
    """v1 keys a data point by ``_id``: an integer, or a string of digits (made an integer)."""
    value = point.get("_id", _MISSING)
    if value is _MISSING:
        out.add(i, Code.ID_MISSING, 'has no "_id" field: v1 data points are keyed by an integer "_id"', "_id")
        return False
    if type(value) is str and value.isascii() and value.isdigit():
        point["_id"] = int(value)
        return True
    if type(value) is not int:
        out.add(
            i,
            Code.ID_INVALID,
            f'"_id" must be an integer or a string of digits, got {_type_name(value)}',
            "_id",
        )
        return False
    return True


class _Validator:
    """Walks the data points once. Points of a shape already seen (same field names, same
    value types) skip the per-name checks: only what varies with the value itself (integer
    range, nesting depth) is looked at again."""

    def __init__(self, version: int, limits: Limits) -> None:
        self.version = version
        self.limits = limits
        self.out = Collector()
        self.kinds: dict[str, Kind] = {}
        self.mixed: set[str] = set()
        self.inexact: set[str] = set()
        self.lower_names: dict[str, str] = {}
        self.seen: set[str] = set()
        self.keys: tuple[str, ...] | None = None
        self.key_set: frozenset[str] = frozenset()
        self.keys_list: list[str] = []
        self.shapes: dict[tuple[tuple[str, ...], tuple[type, ...]], tuple[list[int], list[int]]] = {}

    def point(self, i: int, point: dict[str, Any]) -> None:
        keys = self._keys(i, point)
        if keys is not None:
            if self.keys is None:
                self.keys, self.key_set, self.keys_list = keys, frozenset(keys), list(keys)
            elif keys != self.keys and frozenset(keys) != self.key_set:
                self.out.add(
                    i,
                    Code.KEYS_DIFFER,
                    f"keys {list(keys)} differ from {list(self.keys)} named by "
                    "an earlier data point; a table has one set of key fields",
                )
        names = tuple(point)
        types = tuple(map(type, point.values()))
        shape = self.shapes.get((names, types))
        if shape is None:
            if self._fields(i, point):
                ints = [j for j, t in enumerate(types) if t is int]
                nested = [j for j, t in enumerate(types) if t is dict or t is list]
                self.shapes[(names, types)] = (ints, nested)
            return
        ints, nested = shape
        if ints or nested:
            values = list(point.values())
            for j in ints:
                if not -DOUBLE_EXACT <= values[j] <= DOUBLE_EXACT:
                    self._big_int(names[j], values[j])
            for j in nested:
                self._depth_ok(i, names[j], values[j])

    def _keys(self, i: int, point: dict[str, Any]) -> tuple[str, ...] | None:
        if self.version == 1:
            point.pop("keys", None)
            return ("_id",) if _v1_id(point, i, self.out) else None
        raw = point.pop("keys", _MISSING)
        if self.keys is not None and type(raw) is list and raw == self.keys_list:
            for k in raw:  # the common case: the same keys as the data point before
                v = point.get(k)
                if v is None or type(v) is dict or type(v) is list:
                    break
            else:
                return self.keys
        if raw is not _MISSING:
            point["keys"] = raw
        keys = _v2_keys(point, i, self.limits, self.out)
        point.pop("keys", None)
        return keys

    def _fields(self, i: int, point: dict[str, Any]) -> bool:
        ok = True
        for name, value in point.items():
            if name not in self.seen:
                problem = _name_problem(name, self.lower_names)
                if problem:
                    self.out.add(i, *problem, name)
                    ok = False
                    continue
                self.seen.add(name)
            kind = kind_of(value)
            if kind is None:
                continue
            if kind is Kind.JSON and not self._depth_ok(i, name, value):
                ok = False
                continue
            if kind is Kind.INTEGER and not -DOUBLE_EXACT <= value <= DOUBLE_EXACT:
                self.inexact.add(name)
            self._kind(name, kind)
        return ok

    def _big_int(self, name: str, value: int) -> None:
        self.inexact.add(name)
        if not INT64_MIN <= value <= INT64_MAX:
            self._kind(name, Kind.DECIMAL)

    def _kind(self, name: str, kind: Kind) -> None:
        tally(self.kinds, self.mixed, name, kind)

    def _depth_ok(self, i: int, name: str, value: Any) -> bool:
        if 1 + json_depth(value) > self.limits.max_depth:
            self.out.add(
                i,
                Code.NESTED_TOO_DEEP,
                f"field {name!r} is nested deeper than {self.limits.max_depth} levels",
                name,
            )
            return False
        return True


def validate(body: Any, table: str, *, version: int = 2, limits: Limits | None = None) -> Batch:
    """Check a decoded body against everything the request alone can tell."""
    limits = limits or Limits()
    points = body if type(body) is list else [body]
    if not points:
        raise BadRequest("the body is an empty array: send 1 to 100 data points", code=Code.POINTS_EMPTY)
    if len(points) > limits.max_points:
        raise BadRequest(
            f"the body has {len(points)} data points; at most {limits.max_points} are allowed per request",
            code=Code.POINTS_TOO_MANY,
        )
    v = _Validator(version, limits)
    for i, point in enumerate(points):
        if type(point) is dict:
            v.point(i, point)
        else:
            v.out.add(i, Code.POINT_NOT_OBJECT, f"is {_type_name(point)}; a data point must be an object")
    v.out.raise_if_any()
    assert v.keys is not None
    return Batch(
        table=table, key_fields=v.keys, points=points, kinds=v.kinds, mixed=v.mixed, inexact=v.inexact
    )
