"""A batch's record schema compiled for the fast way in: msgspec types for its records, and
the flattening of a decoded record into its table's row and its subtables' rows.

A record's fields are columns; an object's fields are columns named by their path
(``customer__name``, shortened as ``records.column_name`` shortens it); an array is a
subtable, each element a row keyed by the record's key and the index at each level, an
element's own arrays a subtable one level deeper. Every value is typed by its field's
schema in C, while msgspec decodes; what is left for Python is putting values in rows.

A schema this cannot compile raises ``ValueError``, and its batches are read the general way
(``records.Builder``), which takes them or refuses them with their reasons: a field of
several types, an object without ``properties``, an array without ``items`` or of arrays, a
name that is reserved, differs from another only in case, or would be another's column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain, repeat
from operator import attrgetter, is_
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from importapi.kinds import DOUBLE_EXACT, Kind
from importapi.names import field_name_problem
from importapi.stitch.jsonschema import FieldType
from importapi.stitch.records import LEVEL, MAX_FIELDS, SOURCE_KEY, SYSTEM, VALUE, column_name, table_name

_INT = Annotated[int, msgspec.Meta(ge=-(DOUBLE_EXACT - 1), le=DOUBLE_EXACT - 1)]

Arrays = list[tuple["Sub", Sequence[Any]]]
"""The arrays met while flattening objects: each subtable and the column of values found for
it, one per object (a list, or None or UNSET where an object has none)."""


@dataclass(frozen=True)
class Column:
    """A column of a table, from a field path."""

    name: str
    path: str
    """The path's parts joined by ``__``: the name, unless it had to be shortened."""
    kind: Kind | None
    post: str
    """What its values need after decoding: ``timestamp``, ``date``, ``decimal`` or nothing."""
    step: Decimal | None


def _scalar(ft: FieldType) -> tuple[Any, str, Kind | None]:
    """The msgspec type of a single-typed scalar field, what its values need afterwards, and
    its column kind."""
    (t,) = ft.types - {"null"}
    base: Any
    if t == "integer":
        base, post = _INT, ""
    elif t == "number":
        base, post = (Any, "decimal") if ft.step is not None else (float, "")
    elif t == "boolean":
        base, post = bool, ""
    elif t == "string":
        base, post = str, {"date-time": "timestamp", "date": "date"}.get(ft.format or "", "")
    else:
        raise ValueError(f"a field of type {t} is read the general way")
    return base, post, ft.kind


def _single(ft: FieldType) -> str:
    named = ft.types - {"null"}
    if len(named) != 1:
        raise ValueError("a field of several types (or none) is read the general way")
    return next(iter(named))


def _optional(base: Any, ft: FieldType) -> Any:
    return base | None if "null" in ft.types else base


class _Names:
    """The column names of one table, checked as the general way checks them."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.lower: set[str] = set()

    def column(self, parts: tuple[str, ...]) -> Column:
        name = column_name(parts)
        if any(not p or "\x00" in p for p in parts) or field_name_problem(name) is not None:
            raise ValueError(f"field {name!r} is refused the general way")
        if name in SYSTEM or name.startswith((SOURCE_KEY, "_sdc_level_")):
            raise ValueError(f"field {name!r} is reserved")
        if name in self.taken or name.lower() in self.lower:
            raise ValueError(f"column {name!r} comes from two fields")
        self.taken.add(name)
        self.lower.add(name.lower())
        return Column(name, "__".join(parts), None, "", None)


class Node:
    """An object's fields: the struct msgspec decodes it into, and its flattening into
    column values (its objects' fields after its own) and arrays."""

    struct: Any

    def __init__(
        self,
        fields: Mapping[str, FieldType],
        prefix: tuple[str, ...],
        names: _Names,
        level: int,
        depth: int,
        within: tuple[str, ...] = (),
    ) -> None:
        """``prefix``: the object's path in its table's row; ``within``: the path, from the
        record, of the array whose element it is in (``()``: the record's own table)."""
        if len(fields) > MAX_FIELDS or depth > 32:
            raise ValueError("too many fields, or too deep")
        self.columns: list[Column] = []
        self.depth = depth
        """The most objects and arrays any value of it is inside, counted from the record."""
        self._objects: list[tuple[int, Node]] = []
        self._arrays: list[tuple[int, Sub]] = []
        scalars: list[int] = []
        attrs: list[tuple[str, Any, Any]] = []
        for i, (name, ft) in enumerate(fields.items()):
            parts = (*prefix, name)
            t = _single(ft)
            base: Any
            if t == "object":
                if ft.properties is None:
                    raise ValueError("an object without properties is read the general way")
                node = Node(ft.properties, parts, names, level, depth + 1, within)
                self._objects.append((i, node))
                self.depth = max(self.depth, node.depth)
                base = node.struct
            elif t == "array":
                sub = Sub((*within, *parts), ft, level + 1, depth + 1)
                self._arrays.append((i, sub))
                self.depth = max(self.depth, sub.depth)
                base = list[sub.element]  # type: ignore[name-defined]
            else:
                base, post, kind = _scalar(ft)
                column = names.column(parts)
                self.columns.append(Column(column.name, column.path, kind, post, ft.step))
                scalars.append(i)
            attrs.append((f"f{i}", _optional(base, ft) | UnsetType, UNSET))
        for _, node in self._objects:
            self.columns.extend(node.columns)
        self.plain = not self._objects and not self._arrays
        self._scalars = scalars
        self._width = len(attrs)
        self._getters = [attrgetter(name) for name, _, _ in attrs]  # a field's values, in C
        self._empty: Any = None
        rename = {f"f{i}": n for i, n in enumerate(fields)}
        self.struct = msgspec.defstruct("Object", attrs, rename=rename, forbid_unknown_fields=True, gc=False)

    @property
    def subtables(self) -> list[Sub]:
        """The arrays of this object and of its objects, not deeper ones."""
        return [s for _, s in self._arrays] + [s for _, n in self._objects for s in n.subtables]

    def table(self, objects: list[Any]) -> tuple[list[Sequence[Any]], Arrays, int]:
        """Decoded objects (or None) as columns, one value per object in each (None for a
        field an object lacks), in the order of ``columns``; their arrays, as a column of
        values each; and the name-value pairs they held. Python runs per column, not per
        value: the values move in C."""
        if self._empty is None:
            self._empty = self.struct()
        if any(map(is_, objects, repeat(None))) or any(map(is_, objects, repeat(UNSET))):
            empty = self._empty  # no fields: what a null object's columns hold, and no pairs
            objects = [empty if o is None or o is UNSET else o for o in objects]
        fields: list[Sequence[Any]] = [list(map(get, objects)) for get in self._getters]
        pairs = len(objects) * self._width
        for i, column in enumerate(fields):
            absent = sum(map(is_, column, repeat(UNSET)))  # by identity: no value's __eq__ runs
            if absent:
                pairs -= absent
                fields[i] = [None if x is UNSET else x for x in column]
        columns = [fields[i] for i in self._scalars]
        arrays: Arrays = [(sub, fields[i]) for i, sub in self._arrays]
        for i, node in self._objects:
            more, inner, n = node.table(list(fields[i]))
            columns.extend(more)
            arrays.extend(inner)
            pairs += n
        return columns, arrays, pairs


class Sub:
    """An array field: a subtable whose rows are its elements."""

    def __init__(self, parts: tuple[str, ...], ft: FieldType, level: int, depth: int) -> None:
        item = ft.items
        if item is None:
            raise ValueError("an array without items is read the general way")
        self.parts = parts
        """The field's path from the record."""
        self.level = level
        """How many ``_sdc_level_N_id`` columns key its rows."""
        self.node: Node | None = None
        t = _single(item)
        if t == "array":
            raise ValueError("an array of arrays is read the general way")
        if t == "object":
            if item.properties is None:
                raise ValueError("an array of objects without properties is read the general way")
            self.node = Node(item.properties, (), _Names(), level, depth + 1, parts)
            self.columns = self.node.columns
            self.depth = self.node.depth
            element: Any = self.node.struct
        else:
            element, post, kind = _scalar(item)
            self.columns = [Column(VALUE, VALUE, kind, post, item.step)]
            self.depth = depth
        self.element = _optional(element, item)
        self.levels = tuple(LEVEL.format(n) for n in range(level))

    def emit(
        self, keys: Sequence[Sequence[Any]], values: Sequence[Any], sequences: Sequence[Any], out: Rows
    ) -> int:
        """The elements of each of ``values`` (a list, or None or UNSET: no array) as rows of
        ``out``, keyed by ``keys`` (columns: the record's key, then the outer levels) and the
        index; their own arrays' deeper down. The name-value pairs the elements held."""
        lists = [v if type(v) is list else () for v in values]
        if not any(type(v) is list for v in values):
            return 0  # no array at all: no subtable (an empty one makes it, as the general way does)
        lengths = list(map(len, lists))
        elements = list(chain.from_iterable(lists))

        def spread(column: Sequence[Any]) -> list[Any]:  # each value once per element of its array
            return list(chain.from_iterable(map(repeat, column, lengths)))

        head = [*map(spread, keys), list(chain.from_iterable(map(range, lengths)))]
        pairs = 0
        if self.node is None:
            columns: list[Sequence[Any]] = [elements]
            inner: Arrays = []
        else:
            columns, inner, pairs = self.node.table(elements)
        spread_sequences = spread(sequences)
        out.tables[self] = [*head, *columns, spread_sequences]
        for sub, held in inner:
            pairs += sub.emit(head, held, spread_sequences, out)
        return pairs


class Rows:
    """The subtables met in a batch, in the order met, each with its columns: the source
    keys, the levels, the element's columns, the sequence."""

    def __init__(self) -> None:
        self.tables: dict[Sub, list[Sequence[Any]]] = {}


def compile_record(fields: Mapping[str, FieldType]) -> Node:
    """A record schema's fields compiled, or ValueError when the general way must read it."""
    node = Node(fields, (), _Names(), 0, 0)
    tables: set[str] = set()
    for sub in every(node.subtables):
        path = table_name("t__" + "__".join(sub.parts))  # as the subtable's name is made
        if path in tables:
            raise ValueError(f"two arrays would both be subtable {path!r}")
        tables.add(path)
    return node


def every(subs: list[Sub]) -> list[Sub]:
    """These subtables and every one below them."""
    out = []
    for sub in subs:
        out.append(sub)
        if sub.node is not None:
            out.extend(every(sub.node.subtables))
    return out
