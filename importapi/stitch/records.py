"""What the Stitch routes share: system columns, table names, and records made into a batch.

Every table fed through the Stitch routes carries these columns besides the records' own:

    _sdc_received_at      when the request arrived
    _sdc_batched_at       when the push was applied (the transaction that stored it)
    _sdc_sequence         the record's sequence: an older one never replaces a newer row
    _sdc_table_version    the table version the record belongs to (full-table syncs)
    _sdc_extracted_at     when the tap read the record (``time_extracted``)

and a table without key fields (append-only) is keyed by ``__sdc_primary_key``: a UUID
made from the record itself, so a request sent twice adds nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from importapi.errors import BadRequest, Code, Detail
from importapi.kinds import DOUBLE_EXACT, INT64_MAX, INT64_MIN, Kind, join, kind_of
from importapi.names import RESERVED_TABLE_PREFIXES, field_name_problem
from importapi.push import Batch
from importapi.rjmetrics.validate import MAX_REASONS

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


@dataclass
class Builder:
    """Collects one table's records into a ``Batch``: names checked, kinds joined."""

    table: str
    key_fields: tuple[str, ...]
    max_depth: int
    received: dt.datetime
    problems: list[Detail]
    points: list[dict[str, Any]] = field(default_factory=list)
    kinds: dict[str, Kind] = field(default_factory=dict)
    mixed: set[str] = field(default_factory=set)
    inexact: set[str] = field(default_factory=set)
    lower: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    append_only: bool = False

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
        convert: Callable[[str, Any], Any],
    ) -> None:
        """One record; ``convert(name, value)`` gives a value typed (or raises ValueError)."""
        if len(data) > MAX_FIELDS:
            self.problem(
                index, Code.TOO_MANY_FIELDS, f"has {len(data)} fields; at most {MAX_FIELDS} are allowed"
            )
            return
        point: dict[str, Any] = {}
        for name, value in data.items():
            if name not in self.seen and not self._name_ok(index, name):
                continue
            try:
                typed = convert(name, value)
            except ValueError as exc:
                self.problem(index, Code.RECORD_NOT_CONFORMING, f"#/{name}: {exc}", name)
                continue
            if not self._kind(index, name, typed):
                continue
            point[name] = typed
        for key in self.key_fields if not self.append_only else ():
            value = point.get(key)
            if value is None or type(value) in (dict, list):
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

    def _name_ok(self, index: int, name: str) -> bool:
        problem = field_name_problem(name)
        if problem is None and name in SYSTEM:
            problem = (Code.FIELD_NAME_RESERVED, f"field name {name!r} is reserved: importapi sets it itself")
        if problem is None:
            other = self.lower.setdefault(name.lower(), name)
            if other != name:
                problem = (
                    Code.FIELD_NAME_CASE,
                    f"field names {other!r} and {name!r} differ only in case; columns are matched ignoring case",
                )
        if problem is not None:
            self.problem(index, problem[0], problem[1], name)
            return False
        self.seen.add(name)
        return True

    def _kind(self, index: int, name: str, value: Any) -> bool:
        kind = kind_of(value)
        if kind is None:
            return True
        if kind is Kind.JSON and _depth(value) >= self.max_depth:
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
        known = self.kinds.get(name)
        if known is None:
            self.kinds[name] = kind
        elif known is not kind:
            self.kinds[name] = join(known, kind)
            self.mixed.add(name)
        return True

    def batch(self, activate: int | None, declared: Mapping[str, Kind]) -> Batch:
        """The table's batch. ``declared``: kinds the schema gives fields that have no value
        yet (a table created by an activation alone still has its key columns)."""
        kinds = dict(SYSTEM_KINDS)
        if self.append_only:
            kinds[PRIMARY_KEY] = Kind.TEXT
        for key in self.key_fields:
            if key not in self.kinds and key in declared:
                kinds[key] = declared[key]
        kinds.update(self.kinds)
        return Batch(
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
        )


def _depth(value: Any) -> int:
    if type(value) is dict:
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if type(value) is list:
        return 1 + max((_depth(v) for v in value), default=0)
    return 0
