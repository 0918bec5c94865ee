"""Singer messages, as a tap writes them to its standard output, for the target-stitch tests.

A stream is a list of messages (SCHEMA, RECORD, ACTIVATE_VERSION, STATE), written one JSON
object a line by ``jsonl``. Numbers are written exactly as given: a ``Decimal("12.50")`` is
``12.50`` on the line, as taps write a ``numeric(10,2)``.
"""

from __future__ import annotations

from typing import Any

import msgspec

Message = dict[str, Any]

_encode = msgspec.json.Encoder(decimal_format="number").encode

INTEGER: dict[str, Any] = {"type": "integer"}
TEXT: dict[str, Any] = {"type": ["null", "string"]}
NUMBER: dict[str, Any] = {"type": ["null", "number"]}
CENTS: dict[str, Any] = {"type": ["null", "number"], "multipleOf": 0.01}
"""A ``DECIMAL(10,2)`` column, as tap-mysql and tap-postgres describe it."""
BOOLEAN: dict[str, Any] = {"type": ["null", "boolean"]}
DATE_TIME: dict[str, Any] = {"type": ["null", "string"], "format": "date-time"}
DATE: dict[str, Any] = {"type": ["null", "string"], "format": "date"}
OBJECT: dict[str, Any] = {
    "type": ["null", "object"],
    "properties": {"city": {"type": ["null", "string"]}, "zip": {"type": ["null", "string"]}},
}
ARRAY: dict[str, Any] = {"type": ["null", "array"], "items": {"type": "string"}}


def schema(
    stream: str,
    properties: dict[str, Any],
    key_properties: list[str] | None,
    bookmark_properties: list[str] | None = None,
) -> Message:
    """``key_properties`` ``[]`` or ``None``: an append-only stream."""
    message: Message = {
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"type": "object", "properties": properties},
        "key_properties": key_properties,
    }
    if bookmark_properties is not None:
        message["bookmark_properties"] = bookmark_properties
    return message


def record(
    stream: str, data: dict[str, Any], *, version: int | None = None, time_extracted: str | None = None
) -> Message:
    message: Message = {"type": "RECORD", "stream": stream, "record": data}
    if version is not None:
        message["version"] = version
    if time_extracted is not None:
        message["time_extracted"] = time_extracted
    return message


def activate_version(stream: str, version: int) -> Message:
    return {"type": "ACTIVATE_VERSION", "stream": stream, "version": version}


def state(value: dict[str, Any]) -> Message:
    return {"type": "STATE", "value": value}


def bookmark(stream: str, **values: Any) -> dict[str, Any]:
    """A STATE value with one stream's bookmark, as singer-python's taps write it."""
    return {"bookmarks": {stream: values}, "currently_syncing": None}


def full_table_sync(
    stream: str,
    properties: dict[str, Any],
    key_properties: list[str],
    rows: list[dict[str, Any]],
    *,
    version: int,
    first: bool,
    time_extracted: str | None = None,
) -> list[Message]:
    """A full-table sync as tap-postgres and tap-mysql send it: ACTIVATE_VERSION before the
    records on the first sync only (the table appears at once), and after them always."""
    messages = [schema(stream, properties, key_properties)]
    if first:
        messages.append(activate_version(stream, version))
    messages += [record(stream, r, version=version, time_extracted=time_extracted) for r in rows]
    messages.append(activate_version(stream, version))
    messages.append(state(bookmark(stream, version=version)))
    return messages


def jsonl(messages: list[Message]) -> bytes:
    return b"".join(_encode(m) + b"\n" for m in messages)
