"""The fast way in for a batch: its messages decoded by a type made from its JSON Schema.

A batch's records all have the schema's fields, so msgspec can decode the messages straight
into structs of those fields, checking every type in C: integers (within 2**53), doubles,
text, booleans, instants and dates (RFC 3339, then written as the warehouse's ISO text),
exact decimals (kept as Decimal, checked against their step), objects and arrays (JSON
columns). The result is rows in a fixed column order, ready to store.

Whatever this does not take (a field the schema does not name, a value of another type, a
field of several types, a missing key, a NUL, a name given twice, an activation without a
version ...) is read again by ``batch.read_batch``, which refuses it with its reasons or
takes it the general way. So the decoder decides how fast a batch is read, never whether it
is taken or what is stored: both ways store the same rows.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from decimal import Decimal
from itertools import repeat
from operator import is_
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType
from msgspec.structs import astuple

from importapi.body import names_once
from importapi.errors import BadRequest
from importapi.kinds import DOUBLE_EXACT, Kind, timestamp_text
from importapi.names import field_name_problem
from importapi.push import Batch, Push
from importapi.settings import Limits
from importapi.stitch import jsonschema
from importapi.stitch.jsonschema import multiple_of
from importapi.stitch.records import (
    BATCHED,
    EXTRACTED,
    MAX_FIELDS,
    MAX_RECORDS,
    PRIMARY_KEY,
    RECEIVED,
    SEQUENCE,
    SYSTEM,
    SYSTEM_KINDS,
    VERSION,
    primary_key,
    table_name,
)

_INT = Annotated[int, msgspec.Meta(ge=-(DOUBLE_EXACT - 1), le=DOUBLE_EXACT - 1)]
_SEQUENCE = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_REJECTED = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError, ValueError)
MAX_DECODERS = 64


class _Head(msgspec.Struct, forbid_unknown_fields=True):
    table_name: str
    schema: dict[str, Any]
    messages: msgspec.Raw
    key_names: list[str] | UnsetType | None = UNSET
    table_version: int | UnsetType | None = UNSET
    bookmark_names: list[Any] | UnsetType | None = UNSET


_decode_head = msgspec.json.Decoder(_Head).decode


def _field_type(ft: jsonschema.FieldType) -> tuple[Any, str] | None:
    """The msgspec type of a field and what its values need afterwards, or None when it
    has no single type (then the batch is read the general way)."""
    named = ft.types - {"null"}
    if len(named) != 1:
        return None
    (t,) = named
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
        base, post = Any, "json"
    return (base | None if "null" in ft.types else base) | UnsetType, post


class Decoder:
    """The messages of batches of one schema, decoded into rows."""

    def __init__(self, fields: dict[str, jsonschema.FieldType]) -> None:
        self.names = tuple(fields)
        self.steps = [fields[n].step for n in self.names]
        self.kinds = {n: fields[n].kind for n in self.names}
        attrs, self.post = [], []
        for i, name in enumerate(self.names):
            typed = _field_type(fields[name])
            if typed is None or field_name_problem(name) is not None or name in SYSTEM:
                raise ValueError(f"field {name!r} is read the general way")
            attrs.append((f"f{i}", typed[0], UNSET))
            self.post.append(typed[1])
        if len({n.lower() for n in self.names}) != len(self.names) or len(self.names) > MAX_FIELDS:
            raise ValueError("names that differ only in case, or too many fields")
        rename = {f"f{i}": n for i, n in enumerate(self.names)}
        data = msgspec.defstruct("Data", attrs, rename=rename, forbid_unknown_fields=True, gc=False)
        message = msgspec.defstruct(
            "Message",
            [
                ("action", Literal["upsert", "activate_version"]),
                ("sequence", _SEQUENCE),
                ("data", data | UnsetType, UNSET),
                ("time_extracted", str | None | UnsetType, UNSET),
            ],
            forbid_unknown_fields=True,
            gc=False,
        )
        hook = Decimal if any(p == "decimal" for p in self.post) else None
        self.decode = msgspec.json.Decoder(list[message], float_hook=hook).decode  # type: ignore[valid-type]

    def rows(
        self,
        messages: list[Any],
        keys: tuple[str, ...],
        table: str,
        version: int | None,
        received: str,
        max_depth: int,
    ) -> tuple[list[tuple[Any, ...]], bool, int] | None:
        """(rows, whether the batch activates its version, the name-value pairs decoded)."""
        at_keys = [self.names.index(k) for k in keys if k in self.names]
        if len(at_keys) != len(keys):
            return None
        activate = False
        pairs = 0
        upserts = []
        for m in messages:
            pairs += 2 if m.time_extracted is UNSET else 3
            if m.action == "activate_version":
                activate = True
                if m.data is not UNSET:
                    return None
            elif m.data is UNSET:
                return None
            else:
                upserts.append(m)
        values = list(map(astuple, (m.data for m in upserts)))
        pairs += len(upserts) * (1 + len(self.names))
        for i, v in enumerate(values):
            absent = sum(map(is_, v, repeat(UNSET)))  # by identity: no value's __eq__ runs
            if absent:
                pairs -= absent
                values[i] = tuple(None if x is UNSET else x for x in v)
        for j in at_keys:  # a missing key is refused, with its reason, the general way
            if any(v[j] is None for v in values):
                return None
        extracted = _times([None if m.time_extracted is UNSET else m.time_extracted for m in upserts])
        if extracted is None:
            return None
        rows = [(*v, m.sequence, version, received, e, None) for v, m, e in zip(values, upserts, extracted)]
        if not keys:
            rows = [(*r, primary_key(table, version, m.sequence, m.data)) for r, m in zip(rows, upserts)]
        for j, what in enumerate(self.post):
            if what and not _fix_column(rows, j, what, self.steps[j], max_depth):
                return None
        return rows, activate, pairs


def _times(column: list[Any]) -> list[Any] | None:
    """A column of date-time texts as the warehouse writes them (UTC, to the microsecond);
    None if one is not a date-time."""
    present = [v for v in column if v is not None]
    try:
        parsed = msgspec.convert(present, list[dt.datetime])
    except msgspec.ValidationError:
        return None
    if all(len(v) == 27 and v[26] == "Z" and v[10] == "T" and v[19] == "." for v in present):
        return column  # already so (target-stitch's time_extracted, most taps' date-times)
    it = iter(parsed)
    return [None if v is None else timestamp_text(next(it)) for v in column]


def _fix_column(rows: list[tuple[Any, ...]], j: int, what: str, step: Decimal | None, max_depth: int) -> bool:
    """Check column ``j`` of the rows, and write it as the warehouse stores it; False if a
    value does not fit."""
    column = [r[j] for r in rows]
    if what == "timestamp":
        fixed = _times(column)
        if fixed is None:
            return False
        if fixed is not column:
            rows[:] = [(*r[:j], v, *r[j + 1 :]) for r, v in zip(rows, fixed)]
        return True
    if what == "date":
        present = [v for v in column if v is not None]
        try:
            msgspec.convert(present, list[dt.date])
        except msgspec.ValidationError:
            return False
        return all(len(v) == 10 for v in present)
    if what == "decimal":
        if not all(
            v is None or (type(v) in (Decimal, int) and (step is None or multiple_of(v, step)))
            for v in column
        ):
            return False
        texts = [None if v is None else format(v, "f") for v in column]  # as a decimal column stores it
        rows[:] = [(*r[:j], v, *r[j + 1 :]) for r, v in zip(rows, texts)]
        return True
    return all(v is None or _depth(v) < max_depth for v in column)


def _depth(value: Any) -> int:
    if type(value) is dict:
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if type(value) is list:
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _pairs(value: Any) -> int:
    if type(value) is dict:
        return len(value) + sum(_pairs(v) for v in value.values())
    if type(value) is list:
        return sum(_pairs(v) for v in value)
    return 0


_decoders: OrderedDict[bytes, Decoder | None] = OrderedDict()
_lock = threading.Lock()


def _decoder(schema: dict[str, Any]) -> Decoder | None:
    key = msgspec.json.encode(schema, order="sorted")
    with _lock:
        if key in _decoders:
            _decoders.move_to_end(key)
            return _decoders[key]
    try:
        made: Decoder | None = Decoder(jsonschema.properties(schema))
    except (ValueError, TypeError, jsonschema.Unreadable):
        made = None
    with _lock:
        _decoders[key] = made
        while len(_decoders) > MAX_DECODERS:
            _decoders.popitem(last=False)
    return made


def read(raw: bytes, client_id: int, *, sandbox: bool, received: dt.datetime, limits: Limits) -> Push | None:
    """The push of a batch its schema's decoder takes whole; None: read it the general way."""
    if b"\\u0000" in raw:
        return None
    try:
        head = _decode_head(raw)
    except _REJECTED:
        return None
    keys = tuple(head.key_names or ())
    version = head.table_version if isinstance(head.table_version, int) else None
    if len(set(keys)) != len(keys) or not all(keys):
        return None
    decoder = _decoder(head.schema)
    if decoder is None:
        return None
    try:
        table = table_name(head.table_name)
        messages = decoder.decode(head.messages)
    except (*_REJECTED, BadRequest):
        return None  # refused, with its reasons, the general way
    if not 1 <= len(messages) <= MAX_RECORDS:
        return None
    made = decoder.rows(messages, keys, table, version, timestamp_text(received), limits.max_depth)
    if made is None:
        return None
    rows, activate, pairs = made
    if activate and version is None:
        return None
    present = sum(1 for f in _Head.__struct_fields__ if getattr(head, f) is not UNSET)
    pairs += (
        present
        + _pairs(head.schema)
        + sum(_pairs(r[j]) for r in rows for j, p in enumerate(decoder.post) if p == "json")
    )
    if not names_once(raw, pairs):
        return None
    columns = (*decoder.names, SEQUENCE, VERSION, RECEIVED, EXTRACTED, BATCHED) + (
        () if keys else (PRIMARY_KEY,)
    )
    kinds: dict[str, Kind] = dict(SYSTEM_KINDS)
    if not keys:
        kinds[PRIMARY_KEY] = Kind.TEXT
    by_column = list(zip(*rows)) if rows else []
    for j, name in enumerate(decoder.names):
        kind = decoder.kinds[name]
        if kind is not None and (name in keys or (by_column and by_column[j].count(None) < len(rows))):
            kinds[name] = kind
    ready = frozenset(n for n, p in zip(decoder.names, decoder.post) if p in ("timestamp", "date", "decimal"))
    batch = Batch(
        table,
        keys or (PRIMARY_KEY,),
        rows,
        kinds,
        columns=columns,
        sequence=SEQUENCE,
        version=VERSION,
        activate=version if activate else None,
        stamp=BATCHED,
        system=SYSTEM,
        ready=ready | {RECEIVED, EXTRACTED, BATCHED},
    )
    return Push(client_id, [batch], sandbox)
