"""The batch route's body: one table, a JSON Schema, up to 20,000 messages, made a ``Push``.

    {"table_name": "orders", "schema": {...}, "key_names": ["id"], "table_version": 7,
     "bookmark_names": ["updated_at"],
     "messages": [{"action": "activate_version", "sequence": 1},
                  {"action": "upsert", "sequence": 2, "time_extracted": "...", "data": {...}}]}

Every message is checked before anything is stored; the first problems are refused
together (400), naming the record and the field. A batch's activations all concern its
``table_version``: the records of the batch are applied, then that version is made the
table's (rows of older versions deleted), which is what applying the messages one by one
in order would leave.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from importapi.body import decode_json, holds_nul
from importapi.errors import BadRequest, Code, Detail
from importapi.push import Push
from importapi.settings import Limits
from importapi.stitch import jsonschema
from importapi.stitch.records import MAX_RECORDS, Builder, table_name

_KEYS = ("table_name", "schema", "key_names", "table_version", "bookmark_names", "messages")
_REQUIRED = ("table_name", "schema", "messages")
_JSON_TYPES = {
    str: "String",
    int: "Integer",
    bool: "Boolean",
    list: "JSONArray",
    dict: "JSONObject",
    float: "Number",
    type(None): "Null",
}


def _invalid(text: str) -> BadRequest:
    return BadRequest(text, code=Code.BATCH_INVALID)


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), "Number")


def _expect(body: Mapping[str, Any], name: str, types: tuple[type, ...], label: str, nullable: bool) -> Any:
    value = body.get(name)
    if value is None and nullable:
        return None
    if type(value) not in types:
        raise _invalid(f"#/{name}: expected type: {label}, found: {_type_name(value)}")
    return value


def _head(body: Any) -> tuple[str, Any, tuple[str, ...], int | None, list[Any]]:
    if not isinstance(body, dict):
        raise _invalid(f"#: expected type: JSONObject, found: {_type_name(body)}")
    for name in body:
        if name not in _KEYS:
            raise _invalid(f"#: extraneous key [{name}] is not permitted")
    for name in _REQUIRED:
        if name not in body:
            raise _invalid(f"#: required key [{name}] not found")
    raw_table = _expect(body, "table_name", (str,), "String", False)
    schema = _expect(body, "schema", (dict,), "JSONObject", False)
    keys = _expect(body, "key_names", (list,), "JSONArray", True) or []
    if not all(type(k) is str and k for k in keys) or len(set(keys)) != len(keys):
        raise _invalid("#/key_names: expected distinct field names")
    version = _expect(body, "table_version", (int,), "Integer", True)
    _expect(body, "bookmark_names", (list,), "JSONArray", True)
    messages = _expect(body, "messages", (list,), "JSONArray", False)
    if not 1 <= len(messages) <= MAX_RECORDS:
        raise _invalid(f"#/messages: expected 1 to {MAX_RECORDS} messages, found {len(messages)}")
    return raw_table, schema, tuple(keys), version, messages


def read_batch(raw: bytes, client_id: int, *, sandbox: bool, received: dt.datetime, limits: Limits) -> Push:
    """The push a batch body asks for, or a 400 naming what is wrong."""
    body = decode_json(raw, exact=b'"multipleOf"' in raw, points=False)
    raw_table, schema, keys, version, messages = _head(body)
    table = table_name(raw_table)
    try:
        fields = jsonschema.properties(schema)
    except jsonschema.Unreadable as exc:
        raise BadRequest(f"Request failed validation:#/schema: {exc}", code=Code.SCHEMA_UNREADABLE) from None
    problems: list[Detail] = []
    builder = Builder(table, keys, limits.max_depth, received, problems, exact=False)
    activate = False
    for i, message in enumerate(messages):
        action, sequence, data, extracted = _message(i, message, problems)
        if action == "activate_version":
            activate = True
        elif action == "upsert" and data is not None and sequence is not None:
            builder.add(i, data, sequence, version, extracted, fields)
    if activate and version is None:
        problems.append(Detail(Code.BATCH_INVALID, "#: activate_version needs the batch's table_version"))
    declared = {name: kind for name, ft in fields.items() if (kind := ft.kind) is not None}
    batches = builder.batches(version if activate else None, declared)  # checks array elements
    if problems:
        raise BadRequest(details=problems)
    return Push(client_id, batches, sandbox)


def _message(i: int, message: Any, problems: list[Detail]) -> tuple[str, int | None, Any, dt.datetime | None]:
    def bad(text: str) -> tuple[str, None, None, None]:
        problems.append(Detail(Code.BATCH_INVALID, f"#/messages/{i}: {text}", i))
        return "", None, None, None

    if type(message) is not dict:
        return bad(f"expected type: JSONObject, found: {_type_name(message)}")
    action = message.get("action")
    if action not in ("upsert", "activate_version"):
        return bad(f"action must be upsert or activate_version, not {action!r}")
    sequence = message.get("sequence")
    if type(sequence) is not int or not 0 <= sequence < 2**63:
        return bad("sequence must be an integer from 0 to 2^63-1")
    if action == "activate_version":
        return action, sequence, None, None
    data = message.get("data")
    if type(data) is not dict:
        return bad(f"data: expected type: JSONObject, found: {_type_name(data)}")
    if holds_nul(data):
        problems.append(
            Detail(
                Code.TEXT_HAS_NUL,
                "a string holds the character U+0000 (NUL), which the warehouse cannot store",
                i,
            )
        )
        return "", None, None, None
    extracted = message.get("time_extracted")
    if extracted is None:
        return action, sequence, data, None
    if type(extracted) is not str:
        return bad(f"time_extracted: expected type: String, found: {_type_name(extracted)}")
    try:
        return action, sequence, data, jsonschema.parse_datetime(extracted)
    except ValueError as exc:
        return bad(f"time_extracted: {exc}")
