"""Stitch batch bodies: checking every record against the body's JSON Schema, and typing its values.

    python -m bench.schema_validation [--quick] [--records 20000] [--repeats 7] [--no-memory]
                                      [--only NAME,NAME...] [--pause-gc]

Builds a body the way target-stitch 4.0.x sends one (table_name, schema, key_names,
table_version, messages: upserts with 19-digit sequences and ``data`` of 12 fields typed by
the schema), then times, from the raw bytes, median of several runs, each candidate:

- msgspec untyped decode + fastjsonschema (compiled validator), record by record;
- msgspec untyped decode + jsonschema-rs, record by record and in one call for all messages,
  with floats and with ``float_hook=Decimal``;
- msgspec untyped decode + jsonschema (pure Python, Draft 4 as target-stitch uses), on a subset
  of the records, extrapolated;
- msgspec untyped decode + ``msgspec.convert`` record by record into the typed Struct;
- our own typed decoder: a msgspec Struct built from the JSON Schema at run time, the messages
  decoded in one call, then one pass that puts date-times in UTC and checks ``multipleOf``
  exactly; warm (type cached per schema), cold (type built), and the fallback that takes
  date-times as strings and parses them in Python (for formats msgspec refuses).

For the untyped candidates the "typed" column adds our converter (date-times parsed leniently
to UTC, ``date``, exact decimals for ``multipleOf`` a power of ten below 1). Then: peak
memory of the Python heap (tracemalloc: Rust allocations of jsonschema-rs are not seen), the
time to reject a body whose last record is bad and the message each gives, and edge cases
(multipleOf and float rounding, 2^63-1, date-time forms, wrong types, null).

Times are CPU seconds of this process (another process on the machine does not count), the
candidates in rounds; the garbage collector runs as by default, or is paused during each run
with --pause-gc (decoding 20,000 records allocates ~300k objects: collections are a real part
of the cost, and a server can avoid most of them).

Needs msgspec; fastjsonschema, jsonschema-rs and jsonschema are optional (a missing one is
reported and skipped): ``.venv/bin/pip install fastjsonschema jsonschema-rs jsonschema``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import importlib.metadata
import random
import re
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from bench.cpu import cpu_seconds

UTC = dt.UTC
MAX_RECORDS = 20_000
MAX_SEQUENCE = 2**63 - 1
SEQ_BASE = 1_796_111_209_374_000_000  # what target-stitch's clock-based sequences look like
TABLE_VERSION = 1_796_111_209_374
TIME_EXTRACTED = "2026-12-01T07:46:49.376708Z"
TOP_KEYS = {"table_name", "schema", "messages", "key_names", "table_version", "bookmark_names"}
ACTIONS = {"upsert", "activate_version"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["null", "string"]},
        "email": {"type": ["null", "string"], "maxLength": 254},
        "status": {"type": ["null", "string"]},
        "amount": {"type": ["null", "number"], "multipleOf": 0.01},
        "score": {"type": ["null", "number"]},
        "created_at": {"type": ["null", "string"], "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "birthday": {"type": ["null", "string"], "format": "date"},
        "active": {"type": ["null", "boolean"]},
        "quantity": {"type": ["null", "integer"]},
        "ref": {"type": ["null", "integer", "string"]},
    },
    "required": ["id", "updated_at"],
}
FIELDS = tuple(SCHEMA["properties"])
KEY_NAMES = ["id"]


# ---------------------------------------------------------------------------------------------
# The body


def make_record(rng: random.Random, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One record: (what goes into the JSON, the typed values we expect back)."""
    created: Any = dt.datetime(2012, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=rng.randrange(4 * 10**14))
    updated = created + dt.timedelta(microseconds=rng.randrange(10**12))
    r = i % 100
    if r == 1:  # the form Stitch's own examples use
        created_text: Any = created.strftime("%Y-%m-%dT%H:%M:%S+0000")
        created = created.replace(microsecond=0)
    elif r == 2:  # no zone: taken as UTC
        created_text = created.strftime("%Y-%m-%d %H:%M:%S")
        created = created.replace(microsecond=0)
    elif r == 3:  # an offset
        created_text = created.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    elif r == 4:
        created_text = created = None
    else:  # singer-python's strftime
        created_text = created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    amount: Decimal | None = Decimal(rng.randrange(10**7)).scaleb(-2)
    if i % 20 == 7:
        amount = Decimal(rng.randrange(1000))  # an integer in a number field
    elif i % 20 == 9:
        amount = None
    score = None if i % 11 == 0 else rng.random() * 100
    birthday = None if i % 9 == 0 else dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(25000))
    ref: Any = (None, i * 3, f"R-{i:07d}")[i % 3]
    typed = {
        "id": i + 1,
        "name": None if i % 10 == 3 else f"customer {i}",
        "email": None if i % 7 == 0 else f"user{i}@example.com",
        "status": rng.choice(("active", "pending", "cancelled", None)),
        "amount": amount,
        "score": score,
        "created_at": created,
        "updated_at": updated,
        "birthday": birthday,
        "active": (True, False, None)[i % 3],
        "quantity": None if i % 5 == 0 else rng.randrange(-5, 10**6),
        "ref": ref,
    }
    wire = dict(typed)
    wire["created_at"] = created_text
    wire["updated_at"] = updated.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    wire["birthday"] = None if birthday is None else birthday.isoformat()
    return wire, typed


@dataclass
class Body:
    raw: bytes
    expected: list[tuple[int, dict[str, Any]]]  # (sequence, typed data) per message


_ENCODER = msgspec.json.Encoder(decimal_format="number")  # Decimal('12.50') -> 12.50, as simplejson


def build_body(
    n: int, seed: int = 7, overrides: dict[int, dict[str, Any]] | None = None, odd_last: bool = False
) -> Body:
    """A target-stitch-like batch body of n upserts. ``overrides`` patch records' wire values;
    ``odd_last`` writes the last record's created_at in a form msgspec refuses (a space before
    the offset), the same instant."""
    rng = random.Random(seed)
    messages, expected = [], []
    for i in range(n):
        wire, typed = make_record(rng, i)
        if overrides and i in overrides:
            wire.update(overrides[i])
        if odd_last and i == n - 1 and typed["created_at"] is not None:
            wire["created_at"] = typed["created_at"].strftime("%Y-%m-%dT%H:%M:%S.%f +0000")
        seq = MAX_SEQUENCE if i == n - 1 else SEQ_BASE + i
        messages.append({"action": "upsert", "sequence": seq, "time_extracted": TIME_EXTRACTED, "data": wire})
        expected.append((seq, typed))
    body = {
        "table_name": "orders",
        "schema": SCHEMA,
        "key_names": KEY_NAMES,
        "table_version": TABLE_VERSION,
        "bookmark_names": ["updated_at"],
        "messages": messages,
    }
    return Body(_ENCODER.encode(body), expected)


# ---------------------------------------------------------------------------------------------
# Errors, in the shapes the Stitch service gives


class BatchError(Exception):
    """A 400: the body is refused."""

    def __init__(
        self, message: str, index: int | None = None, pointer: str | None = None, retry: bool = False
    ) -> None:
        super().__init__(message)
        self.index, self.pointer = index, pointer
        self.retry = retry  # the typed fast path cannot decide: the general path may accept


def record_error(index: int, pointer: str, detail: str) -> BatchError:
    return BatchError(f"Record {index} did not conform to schema: #{pointer}: {detail}", index, pointer)


def missing_key(index: int, name: str) -> BatchError:
    return BatchError(f"Record is missing key property {name}", index, "/" + name)


# ---------------------------------------------------------------------------------------------
# Typed values: lenient date-times, dates, exact decimals (shared by every untyped candidate)

_OFFSET_SPACE = re.compile(r"\s+(?=[+-]\d\d:?\d\d$)")


def parse_datetime(text: str) -> dt.datetime:
    """ISO 8601 / RFC 3339, leniently, to an aware UTC datetime; no zone is taken as UTC."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        # lowercase t/z, a comma before the fraction, a space before the offset
        value = dt.datetime.fromisoformat(_OFFSET_SPACE.sub("", text.strip().upper().replace(",", ".")))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def to_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def decimal_places(multiple: Any) -> int | None:
    """k when multipleOf is 10**-k (k >= 1), else None."""
    try:
        d = Decimal(str(multiple)).normalize()
    except ArithmeticError:
        return None
    sign, digits, exp = d.as_tuple()
    if digits == (1,) and isinstance(exp, int) and exp < 0 and not sign:
        return -exp
    return None


def _decimal_of(value: Any) -> Decimal:
    if type(value) is Decimal:
        return value
    if type(value) is float:
        return Decimal(repr(value))  # exact for up to 15 significant digits, the text's value
    return Decimal(value)


def _float_of(value: Any) -> Any:
    t = type(value)
    return float(value) if t is int or t is Decimal else value


@dataclass
class Converter:
    """Turns validated untyped ``data`` dicts into typed ones, in place."""

    steps: list[tuple[str, Callable[[Any], Any], str]]

    @classmethod
    def for_schema(cls, schema: dict[str, Any]) -> Converter:
        steps: list[tuple[str, Callable[[Any], Any], str]] = []
        for name, prop in schema.get("properties", {}).items():
            types = prop.get("type")
            types = [types] if isinstance(types, str) else list(types or ())
            fmt = prop.get("format")
            if "string" in types and fmt == "date-time":
                steps.append((name, _only_str(parse_datetime), "date-time"))
            elif "string" in types and fmt == "date":
                steps.append((name, _only_str(parse_date), "date"))
            elif "number" in types and decimal_places(prop.get("multipleOf")) is not None:
                steps.append((name, _decimal_of, "decimal"))
            elif "number" in types:
                steps.append((name, _float_of, "number"))
        return cls(steps)

    def convert(self, messages: list[dict[str, Any]]) -> None:
        steps = self.steps
        for i, m in enumerate(messages):
            te = m.get("time_extracted")
            if te is not None:
                try:
                    m["time_extracted"] = parse_datetime(te)
                except (ValueError, TypeError):
                    raise BatchError(
                        f"Record {i}: time_extracted is not a date-time", i, "/time_extracted"
                    ) from None
            d = m.get("data")
            if d is None:
                continue
            for name, fn, what in steps:
                v = d.get(name)
                if v is not None and type(v) is not bool:
                    try:
                        d[name] = fn(v)
                    except (ValueError, TypeError, ArithmeticError):
                        raise record_error(i, "/" + name, f"{v!r} is not a valid {what}") from None


def _only_str(fn: Callable[[str], Any]) -> Callable[[Any], Any]:
    def conv(v: Any) -> Any:
        if type(v) is str:
            return fn(v)
        return v  # not a string: another type the schema allows, left as it is

    return conv


def check_shape(body: Any) -> tuple[dict[str, Any], list[Any]]:
    """The checks around the records, in Python, for the untyped candidates."""
    if type(body) is not dict:
        raise BatchError("Request failed validation:#: expected type: JSONObject")
    for k in ("table_name", "schema", "messages"):
        if k not in body:
            raise BatchError(f"Request failed validation:#: required key [{k}] not found")
    extra = set(body) - TOP_KEYS
    if extra:
        raise BatchError(f"Request failed validation:#: extraneous key [{min(extra)}] is not permitted")
    if type(body["table_name"]) is not str or type(body["schema"]) is not dict:
        raise BatchError("Request failed validation:#/table_name or #/schema: wrong type")
    messages = body["messages"]
    if type(messages) is not list or not 1 <= len(messages) <= MAX_RECORDS:
        raise BatchError("Request failed validation:#/messages: expected 1 to 20000 messages")
    keys = body.get("key_names") or []
    for i, m in enumerate(messages):
        if type(m) is not dict or m.get("action") not in ACTIONS:
            raise BatchError(f"Request failed validation:#/messages/{i}/action: not a known action", i)
        seq = m.get("sequence")
        if type(seq) is not int or not 0 <= seq <= MAX_SEQUENCE:
            raise BatchError(f"Request failed validation:#/messages/{i}/sequence: expected an integer", i)
        if m["action"] == "upsert":
            d = m.get("data")
            if type(d) is not dict:
                raise BatchError(f"Request failed validation:#/messages/{i}/data: expected an object", i)
            for k in keys:
                if d.get(k) is None:
                    raise missing_key(i, k)
    return body, messages


# ---------------------------------------------------------------------------------------------
# Our own typed decoder: a msgspec Struct built from the JSON Schema at run time


class Unsupported(Exception):
    """The schema uses something the type builder does not map: use a validator instead."""


_UNSUPPORTED_KEYWORDS = {
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "$ref",
    "patternProperties",
    "dependencies",
    "if",
    "then",
    "else",
    "const",
    "minProperties",
    "maxProperties",
    "uniqueItems",
    "contains",
    "propertyNames",
    "additionalItems",
    "dependentRequired",
    "dependentSchemas",
    "unevaluatedProperties",
    "prefixItems",
}


@dataclass
class PostStep:
    """Work left for the pass after msgspec: one attribute path and what to do with its value."""

    path: tuple[str, ...]  # attribute names down to the value
    pointer: str  # the JSON pointer inside ``data``
    kind: Literal["utc", "parse_dt", "parse_date", "decimal"]
    multiple: Decimal | None = None
    as_float: bool = False
    nullable: bool = True


@dataclass
class RecordType:
    struct: type
    steps: list[PostStep]
    keys: tuple[str, ...]
    unknown_is_error: bool  # additionalProperties: false
    post: Callable[[list[Any]], None] | None = None


@dataclass
class _Build:
    dt_as_str: bool
    steps: list[PostStep] = field(default_factory=list)
    counter: int = 0


def _meta(**kw: Any) -> msgspec.Meta | None:
    kw = {k: v for k, v in kw.items() if v is not None}
    return msgspec.Meta(**kw) if kw else None


def _num(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, Decimal)):
        raise Unsupported(f"bound {v!r}")
    return v if isinstance(v, int) else float(v)


def _bounds(prop: dict[str, Any]) -> dict[str, Any]:
    """minimum/maximum, with draft 4's boolean exclusive* and draft 6's numeric ones."""
    out = {"ge": _num(prop.get("minimum")), "le": _num(prop.get("maximum"))}
    emin, emax = prop.get("exclusiveMinimum"), prop.get("exclusiveMaximum")
    if emin is True:
        out["gt"], out["ge"] = out.pop("ge"), None
    elif emin not in (None, False):
        out["gt"] = _num(emin)
    if emax is True:
        out["lt"], out["le"] = out.pop("le"), None
    elif emax not in (None, False):
        out["lt"] = _num(emax)
    return out


def _type_for(prop: Any, b: _Build, path: tuple[str, ...], pointer: str, strip_null: bool = False) -> Any:
    if prop is True or prop == {}:
        return Any
    if not isinstance(prop, dict):
        raise Unsupported(f"schema {prop!r}")
    bad = _UNSUPPORTED_KEYWORDS & set(prop)
    if bad:
        raise Unsupported(", ".join(sorted(bad)))
    types = prop.get("type")
    if types is None:
        if "enum" in prop or "properties" in prop or "items" in prop:
            raise Unsupported("untyped schema with keywords")
        return Any
    types = [types] if isinstance(types, str) else list(types)
    nullable = "null" in types and not strip_null
    types = [t for t in types if t != "null"]
    if "integer" in types and "number" in types:
        types.remove("integer")
    if not types:
        return None
    if "enum" in prop:
        values = [v for v in prop["enum"] if v is not None]
        if not values or (
            not all(type(v) is str for v in values) and not all(type(v) is int for v in values)
        ):
            raise Unsupported("enum of mixed types")
        if types not in (["string"], ["integer"]):
            raise Unsupported("enum with these types")
        lit: Any = Literal[tuple(values)]
        return lit | None if nullable or None in prop["enum"] else lit
    places = decimal_places(prop.get("multipleOf")) if "number" in types else None
    multiple = prop.get("multipleOf")
    if "number" in types and multiple is not None:
        # exact arithmetic after the decode: msgspec's float multiple_of is unusable (12.5 is
        # not a multiple of 0.01 for it) and its Decimal type also takes strings
        if set(types) - {"number"}:
            raise Unsupported("multipleOf on a union")
        bounds = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        if any(prop.get(k) is not None for k in bounds):
            raise Unsupported("bounds with multipleOf on a number")
        b.steps.append(
            PostStep(
                path, pointer, "decimal", Decimal(str(multiple)), as_float=places is None, nullable=nullable
            )
        )
        return Any
    members: list[Any] = []
    for t in types:
        if t == "integer":
            m = _meta(multiple_of=prop.get("multipleOf"), **_bounds(prop))
            members.append(Annotated[int, m] if m else int)
        elif t == "number":
            m = _meta(**_bounds(prop))
            members.append(Annotated[float, m] if m else float)
        elif t == "boolean":
            members.append(bool)
        elif t == "string":
            fmt = prop.get("format")
            if fmt == "date-time":
                if b.dt_as_str:
                    b.steps.append(PostStep(path, pointer, "parse_dt", nullable=nullable))
                    members.append(str)
                else:
                    b.steps.append(PostStep(path, pointer, "utc", nullable=nullable))
                    members.append(dt.datetime)
            elif fmt == "date":
                if b.dt_as_str:
                    b.steps.append(PostStep(path, pointer, "parse_date", nullable=nullable))
                    members.append(str)
                else:
                    members.append(dt.date)
            else:
                m = _meta(
                    min_length=prop.get("minLength"),
                    max_length=prop.get("maxLength"),
                    pattern=prop.get("pattern"),
                )
                members.append(Annotated[str, m] if m else str)
        elif t == "object":
            if "properties" in prop:
                members.append(_struct_for(prop, b, path, pointer))
            else:
                members.append(dict[str, Any])
        elif t == "array":
            before = len(b.steps)
            item = _type_for(prop.get("items", {}), b, (*path, "[]"), pointer + "/-")
            if len(b.steps) != before:
                raise Unsupported("date-times or decimals inside arrays")
            m = _meta(min_length=prop.get("minItems"), max_length=prop.get("maxItems"))
            seq: Any = list[item]  # type: ignore[valid-type]  # a type built at run time
            members.append(Annotated[seq, m] if m else seq)
        else:
            raise Unsupported(f"type {t!r}")
    if nullable:
        members.append(None)
    out = members[0]
    for extra in members[1:]:
        out = out | extra
    return out


def _struct_for(
    schema: dict[str, Any], b: _Build, path: tuple[str, ...], pointer: str, keys: tuple[str, ...] = ()
) -> type:
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    if extra not in (True, False):
        raise Unsupported("additionalProperties with a schema")
    required = set(schema.get("required", ())) | set(keys)
    fields_: list[tuple[Any, ...]] = []
    rename: dict[str, str] = {}
    for i, (name, prop) in enumerate(props.items()):
        attr = f"f{i}"  # JSON names need not be identifiers: the JSON name goes in ``rename``
        rename[attr] = name
        t = _type_for(prop, b, (*path, attr), f"{pointer}/{name}", strip_null=name in keys)
        fields_.append((attr, t) if name in required else (attr, t, None))
    # required fields first, as msgspec wants no required field after one with a default
    fields_.sort(key=len)
    b.counter += 1
    return msgspec.defstruct(
        f"Record{b.counter}", fields_, rename=rename, forbid_unknown_fields=True, omit_defaults=False
    )


def build_record_type(schema: dict[str, Any], key_names: list[str], dt_as_str: bool = False) -> RecordType:
    if schema.get("type") not in ("object", ["object"]) or "properties" not in schema:
        raise Unsupported("the top level is not an object with properties")
    missing = [k for k in key_names if k not in schema["properties"]]
    if missing:
        raise Unsupported(f"key {missing[0]} not in the schema")
    b = _Build(dt_as_str)
    struct = _struct_for(schema, b, (), "", tuple(key_names))
    return RecordType(struct, b.steps, tuple(key_names), schema.get("additionalProperties") is False)


class Head(msgspec.Struct, forbid_unknown_fields=True):
    table_name: str
    schema: msgspec.Raw
    messages: msgspec.Raw
    key_names: list[str] = []
    table_version: int | None = None
    bookmark_names: list[str] | None = None


class ActivateVersion(msgspec.Struct, tag_field="action", tag="activate_version"):
    sequence: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE)]


Result = tuple[Any, list[Any]]
_MSGSPEC_PATH = re.compile(r"^(?P<what>.*?)(?: - at `\$(?:\[(?P<index>\d+)\])?(?P<rest>[^`]*)`)?$", re.DOTALL)
_WORDS = {
    "int": "Integer",
    "float": "Number",
    "decimal": "Number",
    "decimal.Decimal": "Number",
    "str": "String",
    "datetime": "String",
    "date": "String",
    "bool": "Boolean",
    "null": "Null",
    "object": "JSONObject",
    "array": "JSONArray",
}


def _stitch_type(text: str) -> str:
    return " or ".join(_WORDS.get(p.strip(), p.strip()) for p in text.split("|"))


class TypedDecoder:
    """Two decodes: the head, with ``schema`` and ``messages`` left raw; then the messages with
    the type built from the schema (cached by the schema's bytes), then one pass in Python."""

    def __init__(self, dt_as_str: bool = False, cache: bool = True) -> None:
        self.dt_as_str, self.cache_enabled = dt_as_str, cache
        self.cache: dict[tuple[bytes, tuple[str, ...]], tuple[RecordType, msgspec.json.Decoder[Any]]] = {}
        self.head_decoder = msgspec.json.Decoder(Head)

    def compile(
        self,
        schema_raw: bytes,
        key_names: list[str],
    ) -> tuple[RecordType, msgspec.json.Decoder[Any]]:
        cache_key = (bytes(schema_raw), tuple(key_names))
        hit = self.cache.get(cache_key) if self.cache_enabled else None
        if hit is not None:
            return hit
        schema = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal).decode(schema_raw)
        try:
            rt = build_record_type(schema, key_names, self.dt_as_str)
        except Unsupported as e:
            raise BatchError(f"schema not mapped to a type ({e})", retry=True) from None
        upsert: Any = msgspec.defstruct(
            "Upsert",
            [
                ("sequence", Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE)]),
                ("data", rt.struct),
                ("time_extracted", (str if self.dt_as_str else dt.datetime) | None, None),
            ],
            tag_field="action",
            tag="upsert",
        )
        decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
            Annotated[list[upsert | ActivateVersion], msgspec.Meta(min_length=1, max_length=MAX_RECORDS)],
            float_hook=Decimal,
        )
        self.cache[cache_key] = (rt, decoder)
        return rt, decoder

    def decode(self, raw: bytes) -> tuple[Head, list[Any]]:
        try:
            head = self.head_decoder.decode(raw)
        except msgspec.ValidationError as e:
            raise BatchError(f"Request failed validation:#: {e}") from None
        except msgspec.DecodeError as e:
            raise BatchError(f"Malformed json in the body! {e}") from None
        rt, decoder = self.compile(head.schema, head.key_names)
        try:
            messages = decoder.decode(head.messages)
        except msgspec.ValidationError as e:
            raise self._error(e, rt) from None
        self._post(messages, rt)
        return head, messages

    @staticmethod
    def _error(e: msgspec.ValidationError, rt: RecordType) -> BatchError:
        m = _MSGSPEC_PATH.match(str(e))
        assert m is not None
        what, index, rest = m["what"], m["index"], m["rest"] or ""
        if index is None:
            return BatchError(f"Request failed validation:#/messages: {what}")
        i = int(index)
        if not rest.startswith(".data"):
            return BatchError(f"Request failed validation:#/messages/{i}{rest.replace('.', '/')}: {what}", i)
        pointer = rest[len(".data") :].replace(".", "/")
        req = re.match(r"Object missing required field `(.*)`", what)
        if req:
            name = req[1]
            if pointer == "" and name in rt.keys:
                return missing_key(i, name)
            return BatchError(
                f"Record {i} did not conform to schema: #{pointer}: required key [{name}] not found",
                i,
                f"{pointer}/{name}",
            )
        if pointer.count("/") == 1 and pointer[1:] in rt.keys and what.endswith("got `null`"):
            return missing_key(i, pointer[1:])
        typ = re.match(r"Expected `(.*)`, got `(.*)`$", what)
        if typ:
            what = f"expected type: {_stitch_type(typ[1])}, found: {_stitch_type(typ[2])}"
        unknown = re.match(r"Object contains unknown field `(.*)`", what)
        if unknown:
            what = f"extraneous key [{unknown[1]}] is not permitted"
            pointer = f"{pointer}/{unknown[1]}" if pointer else f"/{unknown[1]}"
        err = record_error(i, pointer, what)
        # a field the schema does not list (allowed unless additionalProperties is false), or a
        # date-time form msgspec does not parse: only the general path can tell
        err.retry = bool(unknown and not rt.unknown_is_error) or "RFC3339" in what
        return err

    @staticmethod
    def _post(messages: list[Any], rt: RecordType) -> None:
        if rt.post is None:
            rt.post = compile_post(rt.steps)
        rt.post(messages)


def compile_post(steps: list[PostStep]) -> Callable[[list[Any]], None]:
    """The pass after msgspec as straight-line Python for this schema: attribute reads and
    identity checks, no loop over the steps, no dispatch on their kind."""
    lines = [
        "def post(messages):",
        "    for i, m in enumerate(messages):",
        "        if type(m) is ActivateVersion:",
        "            continue",
        "        te = m.time_extracted",
        "        if te is not None and (type(te) is str or te.tzinfo is not UTC):",
        "            m.time_extracted = fix_time_extracted(i, te)",
        "        d = m.data",
        "        if d is None:",
        "            continue",
    ]
    env: dict[str, Any] = {
        "ActivateVersion": ActivateVersion,
        "UTC": UTC,
        "Decimal": Decimal,
        "to_utc": to_utc,
        "fix_time_extracted": _fix_time_extracted,
    }
    for k, st in enumerate(steps):
        ind, obj = "        ", "d"
        for depth, attr in enumerate(st.path[:-1]):  # nested objects, each may be null
            lines.append(f"{ind}o{depth} = {obj}.{attr}")
            lines.append(f"{ind}if o{depth} is not None:")
            ind, obj = ind + "    ", f"o{depth}"
        target = f"{obj}.{st.path[-1]}"
        lines.append(f"{ind}v = {target}")
        lines.append(f"{ind}if v is not None:")
        body = ind + "    "
        if st.kind == "utc":
            lines[-1] = f"{ind}if v is not None and v.tzinfo is not UTC:"
            lines.append(f"{body}{target} = to_utc(v)")
        elif st.kind == "decimal":
            env[f"M{k}"] = st.multiple
            env[f"bad{k}"] = _bad_number(st)
            conv = "float(v)" if st.as_float else "v"
            lines += [
                f"{body}t = type(v)",
                f"{body}if t is Decimal:",
                f"{body}    if v % M{k}:",
                f"{body}        bad{k}(i, v)",
            ]
            if st.as_float:
                lines.append(f"{body}    {target} = {conv}")
            lines += [
                f"{body}elif t is int:",
                f"{body}    if v % M{k}:",
                f"{body}        bad{k}(i, v)",
                f"{body}    {target} = {'float(v)' if st.as_float else 'Decimal(v)'}",
                f"{body}else:",
                f"{body}    bad{k}(i, v)",
            ]
        else:
            env[f"parse{k}"] = _parse_at(st)
            lines.append(f"{body}{target} = parse{k}(i, v)")
    # our own code, generated from the schema's shape: no value from the body goes into it
    exec("\n".join(lines), env)
    post: Callable[[list[Any]], None] = env["post"]
    return post


def _fix_time_extracted(i: int, te: Any) -> dt.datetime:
    try:
        return parse_datetime(te) if type(te) is str else to_utc(te)
    except ValueError:
        raise BatchError(f"Record {i}: time_extracted is not a date-time", i, "/time_extracted") from None


def _bad_number(st: PostStep) -> Callable[[int, Any], None]:
    def bad(i: int, v: Any) -> None:
        if type(v) in (int, Decimal):
            raise record_error(i, st.pointer, f"{v} is not a multiple of {st.multiple}")
        raise record_error(i, st.pointer, f"expected type: Number, found: {_json_type(v)}")

    return bad


def _parse_at(st: PostStep) -> Callable[[int, Any], Any]:
    fn, what = (parse_datetime, "date-time") if st.kind == "parse_dt" else (parse_date, "date")

    def parse(i: int, v: Any) -> Any:
        try:
            return fn(v)
        except ValueError:
            raise record_error(i, st.pointer, f"[{v}] is not a valid {what}") from None

    return parse


def _json_type(v: Any) -> str:
    if v is None:
        return "Null"
    return {
        bool: "Boolean",
        int: "Integer",
        float: "Number",
        Decimal: "Number",
        str: "String",
        dict: "JSONObject",
        list: "JSONArray",
    }.get(type(v), type(v).__name__)


def with_fallback(
    fast: Callable[[bytes], Result], general: Callable[[bytes], Result]
) -> Callable[[bytes], Result]:
    """The typed fast path; where it cannot decide (a schema it does not map, a field the
    schema lacks, a date-time form msgspec refuses), the general path decides."""

    def decode(raw: bytes) -> Result:
        try:
            return fast(raw)
        except BatchError as e:
            if not e.retry:
                raise
        return general(raw)

    return decode


# ---------------------------------------------------------------------------------------------
# The candidates


@dataclass
class Candidate:
    name: str
    validate: Callable[[bytes], Result] | None  # decode + validate, values as decoded
    typed: Callable[[bytes], Result]  # decode + validate + typed values
    subset: int | None = None  # times on this many records, extrapolated
    odd_last: bool = False  # timed on the body whose last date-time msgspec refuses
    note: str = ""


def _decoders() -> tuple[msgspec.json.Decoder[Any], msgspec.json.Decoder[Any]]:
    return msgspec.json.Decoder(), msgspec.json.Decoder(float_hook=Decimal)


def _rs_message(e: Any) -> tuple[str, str]:
    pointer = "".join(f"/{p}" for p in e.instance_path)
    return pointer, e.message


def candidates(missing: list[str]) -> list[Candidate]:
    plain, exact = _decoders()
    out: list[Candidate] = []
    general: Callable[[bytes], Result] | None = None

    def untyped(
        decoder: msgspec.json.Decoder[Any],
        check: Callable[[list[Any], dict[str, Any]], None],
    ) -> tuple[Callable[[bytes], Result], Callable[[bytes], Result]]:
        def validate(raw: bytes) -> Result:
            try:
                obj = decoder.decode(raw)
            except msgspec.DecodeError as e:
                raise BatchError(f"Malformed json in the body! {e}") from None
            body, messages = check_shape(obj)
            check(messages, body["schema"])
            return body, messages

        def typed(raw: bytes) -> Result:
            body, messages = validate(raw)
            Converter.for_schema(body["schema"]).convert(messages)
            return body, messages

        return validate, typed

    out.append(
        Candidate(
            "msgspec decode only (no validation)",
            None,
            lambda raw: (plain.decode(raw), []),
            note="baseline: the JSON parse alone",
        )
    )
    out.append(
        Candidate(
            "msgspec decode only, float_hook=Decimal",
            None,
            lambda raw: (exact.decode(raw), []),
            note="baseline",
        )
    )

    try:
        fastjsonschema = importlib.import_module("fastjsonschema")
    except ImportError:
        missing.append("fastjsonschema")
    else:
        fj_cache: dict[str, Any] = {}

        def fj_check(messages: list[Any], schema: dict[str, Any]) -> None:
            key = msgspec.json.encode(schema).decode()
            validator = fj_cache.get(key)
            if validator is None:  # compiled once per schema, as a server would cache it
                validator = fj_cache[key] = fastjsonschema.compile(
                    {"$schema": "http://json-schema.org/draft-04/schema#", **schema},
                    use_formats=False,
                    use_default=False,
                )
            exc = fastjsonschema.JsonSchemaValueException
            for i, m in enumerate(messages):
                d = m.get("data")
                if d is not None:
                    try:
                        validator(d)
                    except exc as e:
                        pointer = "".join(f"/{p}" for p in e.path[1:])
                        raise record_error(i, pointer, e.message) from None

        v, t = untyped(plain, fj_check)
        general = t
        out.append(
            Candidate(
                "fastjsonschema, per record",
                v,
                t,
                note="floats only: Decimal values raise TypeError in multipleOf",
            )
        )

    try:
        jsonschema_rs = importlib.import_module("jsonschema_rs")
    except ImportError:
        missing.append("jsonschema-rs (pip name jsonschema-rs)")
    else:
        rs_cache: dict[tuple[str, str], Any] = {}

        def rs_validator(schema: dict[str, Any], batched: bool) -> Any:
            key = (msgspec.json.encode(schema).decode(), "b" if batched else "r")
            v = rs_cache.get(key)
            if v is None:
                s = {"type": "array", "items": {"properties": {"data": schema}}} if batched else schema
                v = rs_cache[key] = jsonschema_rs.Draft4Validator(s, validate_formats=False)
            return v

        def rs_per_record(messages: list[Any], schema: dict[str, Any]) -> None:
            validator = rs_validator(schema, False)
            is_valid = validator.is_valid
            for i, m in enumerate(messages):
                d = m.get("data")
                if d is not None and not is_valid(d):
                    pointer, msg = _rs_message(next(iter(validator.iter_errors(d))))
                    raise record_error(i, pointer, msg)

        def rs_batched(messages: list[Any], schema: dict[str, Any]) -> None:
            validator = rs_validator(schema, True)
            if not validator.is_valid(messages):
                e = next(iter(validator.iter_errors(messages)))
                path = list(e.instance_path)
                raise record_error(int(path[0]), "".join(f"/{p}" for p in path[2:]), e.message)

        v, t = untyped(plain, rs_per_record)
        out.append(Candidate("jsonschema-rs, per record", v, t))
        v, t = untyped(plain, rs_batched)
        out.append(Candidate("jsonschema-rs, one call for all", v, t))
        general = t
        v, t = untyped(exact, rs_batched)
        out.append(Candidate("jsonschema-rs, one call, float_hook=Decimal", v, t))

    try:
        jsonschema = importlib.import_module("jsonschema")
    except ImportError:
        missing.append("jsonschema")
    else:

        def js_check(messages: list[Any], schema: dict[str, Any]) -> None:
            validator = jsonschema.Draft4Validator(schema)
            for i, m in enumerate(messages):
                d = m.get("data")
                if d is not None and not validator.is_valid(d):
                    e = jsonschema.exceptions.best_match(validator.iter_errors(d))
                    raise record_error(i, "".join(f"/{p}" for p in e.absolute_path), e.message)

        v, t = untyped(exact, js_check)
        out.append(
            Candidate(
                "jsonschema (Python), float_hook=Decimal",
                v,
                t,
                subset=2000,
                note="Draft 4, Decimals as target-stitch parses",
            )
        )
        v, t = untyped(plain, js_check)
        out.append(
            Candidate(
                "jsonschema (Python), floats",
                v,
                t,
                subset=2000,
                note="float multipleOf: rejects 0.07, 0.29...",
            )
        )

    conv_cache: dict[bytes, Any] = {}

    def convert_per_record(raw: bytes) -> Result:
        obj = exact.decode(raw)
        body, messages = check_shape(obj)
        key = _ENCODER.encode(body["schema"])
        rt = conv_cache.get(key)
        if rt is None:
            rt = conv_cache[key] = build_record_type(body["schema"], body.get("key_names") or [])
        convert, struct = msgspec.convert, rt.struct
        for i, m in enumerate(messages):
            te = m.get("time_extracted")
            if te is not None:
                m["time_extracted"] = parse_datetime(te)
            d = m.get("data")
            if d is not None:
                try:
                    m["data"] = convert(d, struct)
                except msgspec.ValidationError as e:
                    located = msgspec.ValidationError(str(e).replace("`$", f"`$[{i}].data", 1))
                    raise TypedDecoder._error(located, rt) from None
        TypedDecoder._post([_Msg(m) for m in messages], rt)
        return body, messages

    out.append(
        Candidate(
            "msgspec untyped + msgspec.convert per record",
            None,
            convert_per_record,
            note="same Struct, one msgspec.convert call per record",
        )
    )

    warm, warm_str, cold = TypedDecoder(), TypedDecoder(dt_as_str=True), TypedDecoder(cache=False)
    if general is None:  # no validator installed: only odd date-time forms can be retried
        general = warm_str.decode
        missing.append(
            "!jsonschema-rs is not installed: the typed rows fall back to the date-times-as-str "
            "type instead (/work/main/.venv/bin/pip install jsonschema-rs)"
        )
    out.append(
        Candidate(
            "typed msgspec Struct from the schema (cached)",
            None,
            with_fallback(warm.decode, general),
            note="one decode of all messages; then UTC + multipleOf pass",
        )
    )
    out.append(
        Candidate(
            "typed msgspec Struct, built per request",
            None,
            with_fallback(cold.decode, general),
            note="as above plus building the type",
        )
    )
    out.append(
        Candidate(
            "typed, date-times as str + Python parse",
            None,
            with_fallback(warm_str.decode, general),
            note="a slower type that takes every date-time form",
        )
    )
    out.append(
        Candidate(
            "typed, last date-time refused -> fallback",
            None,
            with_fallback(warm.decode, general),
            odd_last=True,
            note="fast path fails at the last record, general path redoes",
        )
    )
    return out


class _Msg:
    """Lets the Struct pass work on a message dict whose data is already a Struct."""

    __slots__ = ("m",)

    def __init__(self, m: dict[str, Any]) -> None:
        object.__setattr__(self, "m", m)

    def __getattr__(self, name: str) -> Any:
        return self.m.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self.m[name] = value


# ---------------------------------------------------------------------------------------------
# Checking a candidate's typed output against what the body was built from


def _typed_rows(messages: list[Any]) -> list[tuple[int, Any, dict[str, Any]]]:
    rows = []
    for m in messages:
        if isinstance(m, dict):
            data = m.get("data")
            seq, te = m["sequence"], m.get("time_extracted")
        else:
            data, seq, te = getattr(m, "data", None), m.sequence, getattr(m, "time_extracted", None)
        if data is None:
            continue
        if isinstance(data, msgspec.Struct):
            data = {_json_name(data, a): getattr(data, a) for a in data.__struct_fields__}
        rows.append((seq, te, data))
    return rows


def _json_name(struct: msgspec.Struct, attr: str) -> str:
    return struct.__struct_encode_fields__[struct.__struct_fields__.index(attr)]


def check_output(messages: list[Any], body: Body) -> str:
    rows = _typed_rows(messages)
    if len(rows) != len(body.expected):
        return f"{len(rows)} records out of {len(body.expected)}"
    te_expected = parse_datetime(TIME_EXTRACTED)
    for i, ((seq, te, data), (eseq, etyped)) in enumerate(zip(rows, body.expected, strict=True)):
        if type(seq) is not int or seq != eseq:
            return f"record {i}: sequence {seq!r} != {eseq}"
        if te != te_expected or not isinstance(te, dt.datetime) or te.utcoffset() != dt.timedelta(0):
            return f"record {i}: time_extracted {te!r}"
        for f in FIELDS:
            got, want = data.get(f), etyped[f]
            if got != want or (
                type(got) is not type(want) and not (type(want) is float and type(got) is int)
            ):
                if isinstance(want, Decimal) and isinstance(got, float):
                    return f"record {i}: {f} {got!r} is a float, not a Decimal"
                return f"record {i}: {f} {got!r} != {want!r}"
            if isinstance(got, dt.datetime) and got.tzinfo is not UTC:
                return f"record {i}: {f} {got!r} is not in UTC"
    return "ok"


# ---------------------------------------------------------------------------------------------
# Timing


PAUSE_GC = False  # --pause-gc


def time_runs(fn: Callable[[bytes], Any], raw: bytes, repeats: int) -> float:
    """Median CPU seconds of this process (``bench.cpu``); the collector runs meanwhile
    unless --pause-gc."""
    return statistics.median(cpu_seconds(fn, raw, repeats, pause_gc=PAUSE_GC))


def peak_memory(fn: Callable[[bytes], Any], raw: bytes) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        fn(raw)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def error_probe(fn: Callable[[bytes], Any], raw: bytes) -> tuple[float, str, bool]:
    t0 = time.process_time()
    try:
        fn(raw)
    except BatchError as e:
        return time.process_time() - t0, str(e), e.index is not None and e.pointer is not None
    return time.process_time() - t0, "(accepted)", False


_NOON_UTC = "2012-08-01 14:22:32+00:00"
EDGE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("amount 12.345 (multipleOf 0.01)", {"amount": Decimal("12.345")}, "reject"),
    ("amount 0.07 (multipleOf 0.01)", {"amount": Decimal("0.07")}, "0.07"),
    ("amount 0.29 (multipleOf 0.01)", {"amount": Decimal("0.29")}, "0.29"),
    ("amount 12 (integer for a number)", {"amount": 12}, "12"),
    ('amount "12.50" (string for a number)', {"amount": "12.50"}, "reject"),
    ("score 5 (integer for a double)", {"score": 5}, "5.0"),
    ('quantity "5" (string for an integer)', {"quantity": "5"}, "reject"),
    ("quantity true (boolean for an integer)", {"quantity": True}, "reject"),
    ("quantity 5.0 (draft 4: not an integer)", {"quantity": 5.0}, "reject"),
    ("ref 3.5 ([null,integer,string])", {"ref": 3.5}, "reject"),
    ("updated_at null (not nullable)", {"updated_at": None}, "reject"),
    ("id null (key)", {"id": None}, "reject"),
    ("created_at 2012-08-01T14:22:32+0000", {"created_at": "2012-08-01T14:22:32+0000"}, _NOON_UTC),
    ("created_at 2012-08-01 14:22:32 (no zone)", {"created_at": "2012-08-01 14:22:32"}, _NOON_UTC),
    ("created_at 2012-08-01T16:22:32+02:00", {"created_at": "2012-08-01T16:22:32+02:00"}, _NOON_UTC),
    (
        "created_at 2026-12-01T07:46:49.376708Z",
        {"created_at": "2026-12-01T07:46:49.376708Z"},
        "2026-12-01 07:46:49.376708+00:00",
    ),
    (
        "created_at 2012-08-01T14:22Z (no seconds)",
        {"created_at": "2012-08-01T14:22Z"},
        "2012-08-01 14:22:00+00:00",
    ),
    ("created_at not-a-date", {"created_at": "not-a-date"}, "reject"),
    ("birthday 2012-08-01", {"birthday": "2012-08-01"}, "2012-08-01"),
    ('nickname "x" (a field the schema lacks; allowed)', {"nickname": "x"}, "x"),
]


def _as_expected(outcome: str, expect: str) -> bool:
    if expect == "reject":
        return outcome.startswith("400 ")
    return outcome.startswith(f"ok {expect} ")


def edge_outcome(c: Candidate, patch: dict[str, Any], index: int) -> str:
    body = build_body(3, overrides={index: patch})
    try:
        _, messages = c.typed(body.raw)
    except BatchError as e:
        return "400 " + str(e)
    except Exception as e:
        return f"CRASH {type(e).__name__}: {e}"
    rows = _typed_rows(messages)
    if index == 2:
        seq = rows[2][0]
        if seq != MAX_SEQUENCE or type(seq) is not int:
            return f"sequence {seq!r} (not exact)"
    (name,) = patch
    v = rows[index][2].get(name)
    return f"ok {v} ({type(v).__name__})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="2,000 records, 2 runs: a smoke run")
    ap.add_argument("--records", type=int, default=MAX_RECORDS)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated substrings of candidate names")
    ap.add_argument(
        "--pause-gc",
        action="store_true",
        help="pause the cyclic garbage collector during each timed run (as a server may)",
    )
    args = ap.parse_args(argv)
    global PAUSE_GC
    PAUSE_GC = args.pause_gc
    n, repeats = (2000, 2) if args.quick else (args.records, args.repeats)

    missing: list[str] = []
    cands = candidates(missing)
    if args.only:
        wanted = [w.strip().lower() for w in args.only.split(",")]
        cands = [c for c in cands if any(w in c.name.lower() for w in wanted)]
    for m in missing:
        if m.startswith("!"):
            print(f"NOTE: {m[1:]}", file=sys.stderr)
        else:
            print(
                f"NOTE: {m} is not installed: its rows are skipped "
                f"(/work/main/.venv/bin/pip install {m.split()[0]})",
                file=sys.stderr,
            )

    body = build_body(n)
    print(
        f"body: {n:,} upserts, {len(body.raw) / 2**20:.1f} MiB, {len(FIELDS)} fields a record; "
        f"python {sys.version.split()[0]}, msgspec {msgspec.__version__}; median of {repeats} runs, "
        "CPU time of this process; garbage collector "
        + ("paused during each run" if PAUSE_GC else "on (as by default)")
    )
    versions = []
    for mod in ("fastjsonschema", "jsonschema_rs", "jsonschema"):
        try:
            versions.append(f"{mod} {importlib.metadata.version(mod.replace('_', '-'))}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{mod} not installed")
    print("versions: " + ", ".join(versions))
    t0 = time.process_time()
    build_record_type(SCHEMA, KEY_NAMES)
    print(f"building the Struct type from the schema: {(time.process_time() - t0) * 1e3:.2f} ms")

    bad_last = build_body(n, overrides={n - 1: {"quantity": "5"}})
    header = (
        f"{'candidate':48} {'validate ms':>11} {'+typed ms':>10} {'us/rec':>7} {'peak MiB':>8} "
        f"{'bad-last ms':>11}  output check"
    )
    print()
    print(header)
    print("-" * len(header))
    messages_seen: list[tuple[str, str, bool]] = []
    # first a correctness run of each; then the timed runs in rounds, every candidate once a
    # round, so that a slow spell of the host or the heap's growth falls on all of them alike
    plan: list[tuple[Candidate, Body, float, str]] = []
    bad_last.expected = []
    for c in cands:
        ref, scale = (build_body(n, odd_last=True) if c.odd_last else body), 1.0
        if c.subset and c.subset < n:
            ref, scale = build_body(c.subset), n / c.subset
        try:
            _, out = c.typed(ref.raw)
        except BatchError as e:  # refuses a valid body: timing it would time the early exit
            plan.append((c, ref, scale, f"REFUSES THE VALID BODY: {e}"))
            messages_seen.append((c.name, f"(refuses valid bodies: {e})", False))
            continue
        plan.append(
            (
                c,
                ref,
                scale,
                "(no typed values)" if c.name.startswith("msgspec decode only") else check_output(out, ref),
            )
        )
        del out
    for _, ref, _, _ in plan:  # what stays alive is bytes only: no container for gc to walk
        ref.expected = ref.expected[:0]
    gc.collect()
    gc.freeze()  # as a server does after start-up; the collector still runs during the runs
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):
        for c, ref, scale, check in plan:
            if check.startswith("REFUSES"):
                continue
            for mode, fn in (("validate", c.validate), ("typed", c.typed)):
                if fn is not None:
                    times.setdefault((c.name, mode), []).append(time_runs(fn, ref.raw, 1) * 1e3 * scale)
    for c, ref, scale, check in plan:
        extrap = "*" if scale != 1.0 else " "
        if check.startswith("REFUSES"):
            print(f"{c.name:48} {'-':>10}  {'-':>9}  {'-':>7} {'-':>8} {'-':>10}   {check}")
            continue
        v = times.get((c.name, "validate"))
        v_ms = statistics.median(v) if v else None
        t_ms = statistics.median(times[(c.name, "typed")])
        mem = None if args.no_memory or scale != 1.0 else peak_memory(c.typed, ref.raw)
        err_ms = None
        if not c.name.startswith("msgspec decode only"):
            recs = round(n / scale)
            bad = bad_last if scale == 1.0 else build_body(recs, overrides={recs - 1: {"quantity": "5"}})
            secs, msg, named = error_probe(c.typed, bad.raw)
            err_ms = secs * 1e3 * scale
            messages_seen.append((c.name, msg, named))
        print(
            f"{c.name:48} {_f(v_ms):>10}{extrap} {t_ms:>9.1f}{extrap} {t_ms * 1e3 / n:>7.2f} "
            f"{_f(mem):>8} {_f(err_ms):>10}{extrap}  {check}" + (f"  [{c.note}]" if c.note else "")
        )
    if any(c.subset and c.subset < n for c in cands):
        print(f"* timed on {min(c.subset or n for c in cands):,} records and scaled to {n:,}")
    print("peak MiB: tracemalloc, the Python heap only (jsonschema-rs's Rust allocations are not seen)")
    head_ms, msgs_ms, post_ms = typed_breakdown(body.raw, repeats)
    print(
        f"typed path, where the time goes: head decode (schema, messages left raw) {head_ms:.1f} ms, "
        f"messages decode {msgs_ms:.1f} ms, Python pass (UTC, multipleOf) {post_ms:.1f} ms"
    )

    print('\nThe message for a bad last record (quantity "5"; the schema says integer):')
    order = {c.name: i for i, c in enumerate(cands)}
    for name, msg, named in sorted(messages_seen, key=lambda m: order[m[0]]):
        print(f"  {name:48} {'index+field' if named else 'VAGUE':11} {msg[:150]}")

    checked = [c for c in cands if not c.name.startswith("msgspec decode only")]
    typed_ref = next((c for c in checked if c.name.startswith("typed msgspec Struct from")), None)
    print(
        f"\nEdge cases: record 1 of a 3-record body patched; how many of the {len(checked)} candidates "
        "give what JSON Schema (Draft 4) and the spec want, the others listed:"
    )
    for label, patch, expect in EDGE_CASES:
        outcomes = [(c, edge_outcome(c, patch, 1)) for c in checked]
        off = [(c, res) for c, res in outcomes if not _as_expected(res, expect)]
        print(f"  {label:52} want {expect:28} {len(outcomes) - len(off)}/{len(outcomes)}")
        for c, res in off:
            print(f"      NOT: {c.name:46} {res[:120]}")
        if typed_ref is not None and expect == "reject":
            typed_out = next(o for c, o in outcomes if c is typed_ref)
            print(f"      typed's message: {typed_out[4:130]}")
    wrong = []
    for c in checked:
        seq = _typed_rows(c.typed(build_body(3).raw)[1])[2][0]
        if seq != MAX_SEQUENCE or type(seq) is not int:
            wrong.append(f"{c.name}: {seq!r}")
    print(
        f"  {'sequence 2^63-1 (record 2) parsed exactly':52} want {MAX_SEQUENCE:<28} "
        f"{len(checked) - len(wrong)}/{len(checked)}" + "".join(f"\n      NOT: {w}" for w in wrong)
    )

    print(
        "\nmultipleOf 0.01 and float rounding: of the 100,000 values 0.00 ... 999.99 (all valid),"
        " how many each refuses"
    )
    for label, count in multiple_of_sweep().items():
        print(f"  {label:64} {count}")
    print("\nmsgspec's own datetime parsing (a field typed datetime), which forms it takes:")
    for text, verdict in msgspec_datetime_leniency():
        print(f"  {text:40} {verdict}")


def typed_breakdown(raw: bytes, repeats: int) -> tuple[float, float, float]:
    td = TypedDecoder()
    td.decode(raw)
    parts: list[list[float]] = [[], [], []]
    for _ in range(repeats):
        gc.collect()
        t0 = time.process_time()
        head = td.head_decoder.decode(raw)
        t1 = time.process_time()
        rt, decoder = td.compile(head.schema, head.key_names)
        messages = decoder.decode(head.messages)
        t2 = time.process_time()
        td._post(messages, rt)
        t3 = time.process_time()
        for part, secs in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            part.append(secs * 1e3)
    head_ms, msgs_ms, post_ms = (statistics.median(p) for p in parts)
    return head_ms, msgs_ms, post_ms


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def multiple_of_sweep(limit: int = 100_000) -> dict[str, int | str]:
    values = [f"{c // 100}.{c % 100:02d}" for c in range(limit)]
    out: dict[str, int | str] = {}
    prop_f = {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 0.01}}}
    prop_d = {"type": "object", "properties": {"n": {"type": "number", "multipleOf": Decimal("0.01")}}}
    try:
        import fastjsonschema

        fj = fastjsonschema.compile(prop_f)
        out["fastjsonschema, floats"] = sum(not _ok(fj, {"n": float(t)}) for t in values)
    except ImportError:
        out["fastjsonschema"] = "not installed"
    try:
        import jsonschema_rs

        v = jsonschema_rs.Draft4Validator(prop_f)
        out["jsonschema-rs, floats"] = sum(not v.is_valid({"n": float(t)}) for t in values)
        out["jsonschema-rs, Decimals"] = sum(not v.is_valid({"n": Decimal(t)}) for t in values)
    except ImportError:
        out["jsonschema-rs"] = "not installed"
    try:
        import jsonschema

        v = jsonschema.Draft4Validator(prop_f)
        out["jsonschema, floats"] = sum(not v.is_valid({"n": float(t)}) for t in values)
        v = jsonschema.Draft4Validator(prop_d)
        out["jsonschema, Decimals (schema parsed with Decimals too)"] = sum(
            not v.is_valid({"n": Decimal(t)}) for t in values
        )
    except ImportError:
        out["jsonschema"] = "not installed"
    s = msgspec.defstruct("S", [("n", Annotated[float, msgspec.Meta(multiple_of=0.01)])])
    dec = msgspec.json.Decoder(s)
    out["msgspec float field, Meta(multiple_of=0.01)"] = sum(
        not _ok(dec.decode, f'{{"n":{t}}}') for t in values
    )
    d01 = Decimal("0.01")
    out["ours: Decimal from the JSON text, v % Decimal('0.01')"] = sum(bool(Decimal(t) % d01) for t in values)
    return out


def _ok(fn: Callable[[Any], Any], arg: Any) -> bool:
    try:
        fn(arg)
        return True
    except Exception:
        return False


DATETIME_FORMS = [
    "2026-12-01T07:46:49.376708Z",
    "2012-08-01T14:22:32.000000Z",
    "2012-08-01T14:22:32+0000",
    "2012-08-01T14:22:32+00:00",
    "2012-08-01T14:22:32+02:00",
    "2012-08-01T14:22:32-0530",
    "2012-08-01 14:22:32",
    "2012-08-01 14:22:32Z",
    "2012-08-01T14:22:32",
    "2012-08-01t14:22:32z",
    "2012-08-01T14:22:32.1234567Z",
    "2012-08-01T14:22Z",
    "2012-08-01T14:22:32,5Z",
    "2012-08-01",
    "20120801T142232Z",
    "2012-08-01T14:22:32+02",
    "2012-08-01T14:22:32 +0000",
    "2012-08-01T14:22:60Z",
]


def msgspec_datetime_leniency() -> list[tuple[str, str]]:
    plain = msgspec.json.Decoder(dt.datetime)
    aware = msgspec.json.Decoder(Annotated[dt.datetime, msgspec.Meta(tz=True)])
    out = []
    for text in DATETIME_FORMS:
        raw = msgspec.json.encode(text)
        try:
            v = plain.decode(raw)
            naive = "  (naive; refused with Meta(tz=True))" if v.tzinfo is None else ""
            res = f"ok {v.isoformat()}{naive}"
            aware.decode(raw) if v.tzinfo else None
        except msgspec.ValidationError as e:
            try:
                res = f"REFUSED ({str(e).split(' - ')[0]}); ours: {parse_datetime(text).isoformat()}"
            except ValueError:
                res = "REFUSED; ours too"
        out.append((text, res))
    return out


if __name__ == "__main__":
    main()
