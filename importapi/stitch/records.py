"""What the Stitch routes share: system columns, table names, and records made into batches.

Every table fed through the Stitch routes carries these columns besides the records' own:

    _sdc_received_at      when the request arrived
    _sdc_batched_at       when the push was applied (the transaction that stored it)
    _sdc_sequence         the record's sequence: an older one never replaces a newer row
    _sdc_table_version    the table version the record belongs to (full-table syncs)
    _sdc_extracted_at     when the tap read the record (``time_extracted``)

and a table without key fields (append-only) is keyed by ``__sdc_primary_key``: a UUID
made from the record itself, so a request sent twice adds nothing the second time.

Records land in Stitch's warehouse shape: an object is flattened into ``field__child``
columns, to any depth; an array becomes a subtable ``table__field`` (``table__field__sub``
deeper) whose rows carry ``_sdc_source_key_<key>`` for each key field of the record,
``_sdc_level_0_id`` (the element's index; ``_sdc_level_1_id`` ... inside arrays of arrays
of objects), the element's fields flattened, or ``value`` for an array of scalars (an array
directly inside an array is a JSON ``value``). A name too long for a column keeps its first
part and a hash of the whole, and the column records the path it holds; two paths that
would make one column are refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from importapi.errors import BadRequest, Code, Detail
from importapi.kinds import DOUBLE_EXACT, INT64_MAX, INT64_MIN, Kind, json_depth, kind_of, tally
from importapi.names import MAX_NAME_BYTES, RESERVED_TABLE_PREFIXES, field_name_problem
from importapi.push import Batch
from importapi.rjmetrics.validate import MAX_REASONS
from importapi.stitch.jsonschema import FieldType, Mismatch

RECEIVED, BATCHED, SEQUENCE, VERSION, EXTRACTED = (
    "_sdc_received_at",
    "_sdc_batched_at",
    "_sdc_sequence",
    "_sdc_table_version",
    "_sdc_extracted_at",
)
PRIMARY_KEY = "__sdc_primary_key"
SYSTEM_KINDS = {
    RECEIVED: Kind.TIMESTAMP,
    BATCHED: Kind.TIMESTAMP,
    SEQUENCE: Kind.INTEGER,
    VERSION: Kind.INTEGER,
    EXTRACTED: Kind.TIMESTAMP,
}
SYSTEM = frozenset((*SYSTEM_KINDS, PRIMARY_KEY))
SOURCE_KEY = "_sdc_source_key_"
LEVEL = "_sdc_level_{}_id"
VALUE = "value"
CHILD_SYSTEM = (SEQUENCE, VERSION, RECEIVED, BATCHED)
MAX_RECORDS = 20_000
MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_FIELDS = 10_000
_NAMESPACE = uuid.UUID("5e1d2c3b-4a59-4c6d-8e7f-90a1b2c3d4e5")
_canonical = msgspec.json.Encoder(order="sorted").encode
_UNSAFE = re.compile(r"[^a-z0-9_]")


def table_name(raw: str) -> str:
    """A stream's name as a table name: lower case, any character other than a letter, a
    digit or ``_`` made ``_``, at most 63 characters (a longer name keeps its first 54 and a
    hash of the whole, so two long names stay apart)."""
    name = _UNSAFE.sub("_", raw.lower())
    if len(name) > 63:
        name = name[:54] + "_" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    if not name.strip("_"):
        raise BadRequest(f"table name {raw!r} has no letter or digit", code=Code.TABLE_NAME_INVALID)
    if name.startswith(RESERVED_TABLE_PREFIXES):
        raise BadRequest(
            f"table name {raw!r} is reserved: names starting with {', '.join(RESERVED_TABLE_PREFIXES)} are "
            "kept for the system",
            code=Code.TABLE_NAME_RESERVED,
        )
    return name


def primary_key(table: str, version: int | None, sequence: int, data: Any) -> str:
    """An append-only record's key: the same record always gets the same one."""
    return str(
        uuid.uuid5(
            _NAMESPACE, f"{table}\x00{version}\x00{sequence}\x00".encode().hex() + _canonical(data).hex()
        )
    )


def column_name(parts: tuple[str, ...]) -> str:
    """A field path as a column name: its parts joined by ``__``; one too long for a column
    keeps as many of its first bytes as leave room for ``_`` and a hash of the whole."""
    name = "__".join(parts)
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:10]
    kept = raw[: MAX_NAME_BYTES - len(digest) - 1].decode("utf-8", "ignore")
    return f"{kept}_{digest}"


def _allows(ft: FieldType | None, json_type: str) -> bool:
    return ft is None or not ft.types or json_type in ft.types


@dataclass
class _Record:
    """A record's key and what it brings to subtables, until the batch knows its winners."""

    index: int
    key: tuple[Any, ...]
    sequence: int
    version: int | None
    arrays: list[tuple[tuple[str, ...], list[Any], FieldType | None]]


@dataclass
class Builder:
    """Collects one table's records into batches: its own, and its subtables'."""

    table: str
    key_fields: tuple[str, ...]
    max_depth: int
    received: dt.datetime
    problems: list[Detail]
    exact: bool = True
    """Decimals of fields the schema does not type stay exact (Transit's); else doubles."""
    points: list[dict[str, Any]] = field(default_factory=list)
    kinds: dict[str, Kind] = field(default_factory=dict)
    mixed: set[str] = field(default_factory=set)
    inexact: set[str] = field(default_factory=set)
    paths: dict[str, str] = field(default_factory=dict)
    append_only: bool = False
    _columns: dict[tuple[str, ...], str | None] = field(default_factory=dict)
    _origins: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _lower: dict[str, str] = field(default_factory=dict)
    _records: list[_Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.append_only = not self.key_fields
        if self.append_only:
            self.key_fields = (PRIMARY_KEY,)

    def problem(self, index: int | None, code: Code, text: str, name: str | None = None) -> None:
        if len(self.problems) < MAX_REASONS:
            self.problems.append(Detail(code, text, index, name))

    def add(
        self,
        index: int,
        data: dict[str, Any],
        sequence: int,
        version: int | None,
        extracted: dt.datetime | None,
        fields: Mapping[str, FieldType] | None,
    ) -> None:
        """One record (``fields``: the schema's, or None to type by the values)."""
        if len(data) > MAX_FIELDS:
            self.problem(
                index, Code.TOO_MANY_FIELDS, f"has {len(data)} fields; at most {MAX_FIELDS} are allowed"
            )
            return
        point: dict[str, Any] = {}
        arrays: list[tuple[tuple[str, ...], list[Any], FieldType | None]] = []
        self.flatten(index, data, fields, (), point, arrays)
        for key in self.key_fields if not self.append_only else ():
            if point.get(key) is None:
                self.problem(index, Code.KEY_MISSING, f"Record is missing key property {key}", key)
        if self.append_only:
            point[PRIMARY_KEY] = primary_key(self.table, version, sequence, data)
        point.update(
            {
                SEQUENCE: sequence,
                VERSION: version,
                RECEIVED: self.received,
                EXTRACTED: extracted,
                BATCHED: None,
            }
        )
        self.points.append(point)
        self._records.append(
            _Record(index, tuple(point.get(k) for k in self.key_fields), sequence, version, arrays)
        )

    def flatten(
        self,
        index: int,
        data: Mapping[str, Any],
        fields: Mapping[str, FieldType] | None,
        prefix: tuple[str, ...],
        point: dict[str, Any],
        arrays: list[tuple[tuple[str, ...], list[Any], FieldType | None]],
    ) -> None:
        """The fields of an object into ``point`` (objects flattened), its arrays into ``arrays``."""
        if len(prefix) >= self.max_depth:
            self.problem(
                index,
                Code.NESTED_TOO_DEEP,
                f"field {'__'.join(prefix)!r} is nested deeper than {self.max_depth} levels",
                "__".join(prefix),
            )
            return
        for name, value in data.items():
            parts = (*prefix, name)
            ft = fields.get(name) if fields is not None else None
            t = type(value)
            if t is dict and _allows(ft, "object"):
                self.flatten(index, value, ft.properties if ft is not None else None, parts, point, arrays)
            elif t is list and _allows(ft, "array"):
                arrays.append((parts, value, ft.items if ft is not None else None))
            else:
                column = self._column(index, parts)
                if column is not None:
                    self._set(index, point, column, ft, value)

    def _set(self, index: int, point: dict[str, Any], column: str, ft: FieldType | None, value: Any) -> None:
        try:
            typed = (
                ft.convert(value)
                if ft is not None
                else (float(value) if type(value) is Decimal and not self.exact else value)
            )
        except Mismatch as exc:
            self.problem(index, Code.RECORD_NOT_CONFORMING, f"#/{column}: {exc}", column)
            return
        if self._kind(index, column, typed):
            point[column] = typed

    def _column(self, index: int, parts: tuple[str, ...]) -> str | None:
        """The column of a field path, its name checked once (None: refused)."""
        if parts in self._columns:
            return self._columns[parts]
        name = column_name(parts)
        problem = next(
            (field_name_problem(p) for p in parts if not p or "\x00" in p), None
        ) or field_name_problem(name)
        if problem is None and (name in SYSTEM or name.startswith((SOURCE_KEY, "_sdc_level_"))):
            problem = (Code.FIELD_NAME_RESERVED, f"field name {name!r} is reserved: importapi sets it itself")
        if problem is None and self._origins.setdefault(name, parts) != parts:
            problem = (
                Code.FIELD_NAME_COLLISION,
                f"fields {'.'.join(self._origins[name])!r} and "
                f"{'.'.join(parts)!r} would both be column {name!r}",
            )
        if problem is None and self._lower.setdefault(name.lower(), name) != name:
            problem = (
                Code.FIELD_NAME_CASE,
                f"field names {self._lower[name.lower()]!r} and {name!r} differ only "
                "in case; columns are matched ignoring case",
            )
        if problem is not None:
            self.problem(index, problem[0], problem[1], name)
            self._columns[parts] = None
            return None
        if name != "__".join(parts):
            self.paths[name] = "__".join(parts)
        self._columns[parts] = name
        return name

    def _kind(self, index: int, name: str, value: Any) -> bool:
        kind = kind_of(value)
        if kind is None:
            return True
        if kind is Kind.JSON and json_depth(value) >= self.max_depth:
            self.problem(
                index,
                Code.NESTED_TOO_DEEP,
                f"field {name!r} is nested deeper than {self.max_depth} levels",
                name,
            )
            return False
        if type(value) is int and not -DOUBLE_EXACT <= value <= DOUBLE_EXACT:
            self.inexact.add(name)
            if not INT64_MIN <= value <= INT64_MAX:
                kind = Kind.DECIMAL
        tally(self.kinds, self.mixed, name, kind)
        return True

    def batches(self, activate: int | None, declared: Mapping[str, Kind]) -> list[Batch]:
        """The table's batch, then its subtables' (of the records that win within the batch:
        the highest sequence per key, the later one on a tie; every record's elements are
        checked, and their problems added). ``declared``: kinds the schema gives fields that
        have no value yet (a table made by an activation alone still has its key columns)."""
        kinds = dict(SYSTEM_KINDS)
        if self.append_only:
            kinds[PRIMARY_KEY] = Kind.TEXT
        for key in self.key_fields:
            if key not in self.kinds and key in declared:
                kinds[key] = declared[key]
        kinds.update(self.kinds)
        own = Batch(
            self.table,
            self.key_fields,
            self.points,
            kinds,
            self.mixed,
            self.inexact,
            sequence=SEQUENCE,
            version=VERSION,
            activate=activate,
            stamp=BATCHED,
            system=SYSTEM,
            nested=True,
            paths=self.paths,
        )
        children, losers = _Children(self), _Children(self)  # the losers' are only checked
        won = _winners(self._records)
        for record in self._records:
            for parts, values, item in record.arrays:
                (children if id(record) in won else losers).add(record, parts, values, item, ())
        return [own, *children.batches(kinds)]


def _winners(records: list[_Record]) -> set[int]:
    """The ids of the records that win: the highest sequence per key, the later on a tie."""
    best: dict[tuple[Any, ...], _Record] = {}
    for r in records:
        held = best.get(r.key)
        if held is None or r.sequence >= held.sequence:
            best[r.key] = r
    return {id(r) for r in best.values()}


class _Children:
    """The subtables of one table's batch: each a builder of its own."""

    def __init__(self, parent: Builder) -> None:
        self.parent = parent
        self.sources = tuple(SOURCE_KEY + k for k in parent.key_fields)
        self.builders: dict[str, tuple[Builder, int]] = {}
        self.origins: dict[str, tuple[str, ...]] = {}

    def add(
        self,
        record: _Record,
        parts: tuple[str, ...],
        values: list[Any],
        item: FieldType | None,
        levels: tuple[int, ...],
    ) -> None:
        p = self.parent
        name = table_name(f"{p.table}__{'__'.join(parts)}")
        held = self.builders.get(name)
        if held is None:
            levels_keys = tuple(LEVEL.format(n) for n in range(len(levels) + 1))
            builder = Builder(
                name, (*self.sources, *levels_keys), p.max_depth, p.received, p.problems, p.exact
            )
            held = self.builders[name] = (builder, len(levels) + 1)
        builder = held[0]
        origin = self.origins.setdefault(name, parts)
        if origin != parts:
            p.problem(
                record.index,
                Code.FIELD_NAME_COLLISION,
                f"arrays {'.'.join(origin)!r} and {'.'.join(parts)!r} would both be table {name!r}",
                "__".join(parts),
            )
            return
        base = dict(zip(self.sources, record.key))
        for i, element in enumerate(values):
            row: dict[str, Any] = {**base, **{LEVEL.format(n): v for n, v in enumerate((*levels, i))}}
            if type(element) is dict and _allows(item, "object"):
                inner: list[tuple[tuple[str, ...], list[Any], FieldType | None]] = []
                builder.flatten(
                    record.index, element, item.properties if item is not None else None, (), row, inner
                )
                for sub_parts, sub_values, sub_item in inner:
                    self.add(record, (*parts, *sub_parts), sub_values, sub_item, (*levels, i))
            elif type(element) is list:
                builder._set(record.index, row, VALUE, None, element)
            else:
                builder._set(record.index, row, VALUE, item, element)
            row.update(
                {SEQUENCE: record.sequence, VERSION: record.version, RECEIVED: p.received, BATCHED: None}
            )
            builder.points.append(row)

    def batches(self, parent_kinds: Mapping[str, Kind]) -> list[Batch]:
        out = []
        for builder, depth in self.builders.values():
            kinds = {src: parent_kinds[k] for src, k in zip(self.sources, self.parent.key_fields)}
            kinds |= {LEVEL.format(n): Kind.INTEGER for n in range(depth)}
            kinds |= {c: SYSTEM_KINDS[c] for c in CHILD_SYSTEM}
            kinds.update(builder.kinds)
            system = frozenset((*self.sources, *(LEVEL.format(n) for n in range(depth)), *CHILD_SYSTEM))
            out.append(
                Batch(
                    builder.table,
                    builder.key_fields,
                    builder.points,
                    kinds,
                    builder.mixed,
                    builder.inexact,
                    stamp=BATCHED,
                    system=system,
                    parent=self.parent.table,
                    parent_keys=self.sources,
                    paths=builder.paths,
                )
            )
        return out
