"""The push and validate routes' body: an array of records, several tables allowed.

    [{"client_id": 1, "table_name": "customers", "sequence": 1565880017, "action": "upsert",
      "key_names": ["id"], "table_version": 3, "data": {"id": 1, "name": "Finn"}}]

JSON or Transit. Types come from the values, as on the RJMetrics routes (Transit brings
instants, exact decimals and big integers typed). ``switch_view`` (the Java client's)
activates the record's ``table_version``. The request is all or nothing across its tables.
A record of another client than the key's is a 403; records that disagree among themselves
(client ids, a table's key names) or lack what a record needs are a 422.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from importapi.body import holds_nul
from importapi.errors import BadRequest, Code, Detail, Forbidden, Unprocessable
from importapi.push import Push
from importapi.settings import Limits
from importapi.stitch.records import MAX_RECORDS, Builder, table_name

_ACTIONS = ("upsert", "switch_view")


def read_records(body: Any, client_id: int, *, sandbox: bool, received: dt.datetime, limits: Limits) -> Push:
    """The push an array of records asks for."""
    if type(body) is not list:
        raise BadRequest("An array of records is expected", code=Code.RECORDS_EXPECTED)
    if not 1 <= len(body) <= MAX_RECORDS:
        raise BadRequest(
            f"An array of 1 to {MAX_RECORDS} records is expected, not {len(body)}", code=Code.RECORDS_EXPECTED
        )
    _same_client(body, client_id)
    problems: list[Detail] = []
    builders: dict[str, Builder] = {}
    activate: dict[str, int] = {}
    for i, record in enumerate(body):
        fields = _fields(i, record, problems)
        if fields is None:
            continue
        table, action, sequence, keys, version, data = fields
        builder = builders.get(table)
        if builder is None:
            builder = builders[table] = Builder(table, keys, limits.max_depth, received, problems)
        elif action == "upsert" and keys != _declared(builder):
            problems.append(
                Detail(
                    Code.KEY_NAMES_DIFFER,
                    f"key_names {list(keys)} differ from {list(_declared(builder))}"
                    f" named by an earlier record of table {table!r}",
                    i,
                    "key_names",
                )
            )
            continue
        if action == "switch_view":
            if version is None:
                problems.append(
                    Detail(Code.RECORD_INVALID, "switch_view needs a table_version", i, "table_version")
                )
            else:
                activate[table] = max(version, activate.get(table, version))
            continue
        builder.add(i, data, sequence, version, None, None)
    batches = [batch for t, b in builders.items() for batch in b.batches(activate.get(t), {})]
    if problems:  # the batches are made first: making them checks the arrays' elements
        raise Unprocessable(details=problems)
    return Push(client_id, batches, sandbox)


def _declared(builder: Builder) -> tuple[str, ...]:
    return () if builder.append_only else builder.key_fields


def _same_client(records: Iterable[Any], client_id: int) -> None:
    ids: set[int] = set()
    for record in records:
        cid = record.get("client_id") if isinstance(record, dict) else None
        if type(cid) is not int:
            raise Unprocessable("every record needs its client_id, an integer", code=Code.RECORD_INVALID)
        ids.add(cid)
    if client_id not in ids:
        raise Forbidden(f"Access token is not associated with this client (records of client {min(ids)}).")
    if len(ids) > 1:
        raise Unprocessable(f"the records name several clients: {sorted(ids)}", code=Code.CLIENT_IDS_DIFFER)


Fields = tuple[str, str, int, tuple[str, ...], int | None, Any]


class _Bad(ValueError):
    def __init__(self, text: str, name: str | None = None) -> None:
        super().__init__(text)
        self.name = name


def _fields(i: int, record: Any, problems: list[Detail]) -> Fields | None:
    """(table, action, sequence, key names, table version, data) of a record, or None (and
    the problem said) when it lacks what a record needs."""
    try:
        fields = _record(record)
    except _Bad as bad:
        problems.append(Detail(Code.RECORD_INVALID, str(bad), i, bad.name))
        return None
    if holds_nul(fields[-1]):
        text = "a string holds the character U+0000 (NUL), which the warehouse cannot store"
        problems.append(Detail(Code.TEXT_HAS_NUL, text, i))
        return None
    return fields


def _record(record: Any) -> Fields:
    if type(record) is not dict:
        raise _Bad("a record must be an object")
    action = record.get("action")
    if action not in _ACTIONS:
        raise _Bad(f"action must be one of {', '.join(_ACTIONS)}, not {action!r}", "action")
    raw_table = record.get("table_name")
    if type(raw_table) is not str or not raw_table:
        raise _Bad("table_name must be a table's name", "table_name")
    try:
        table = table_name(raw_table)
    except BadRequest as exc:
        raise _Bad(exc.details[0].message, "table_name") from None
    sequence = record.get("sequence")
    if type(sequence) is not int or not 0 <= sequence < 2**63:
        raise _Bad("sequence must be an integer from 0 to 2^63-1", "sequence")
    version = record.get("table_version")
    if version is not None and type(version) is not int:
        raise _Bad("table_version must be an integer", "table_version")
    keys = record.get("key_names") or []
    if type(keys) is not list or not all(type(k) is str and k for k in keys) or len(set(keys)) != len(keys):
        raise _Bad("key_names must be a list of distinct field names", "key_names")
    data = record.get("data")
    if action == "upsert" and type(data) is not dict:
        raise _Bad("data must be an object", "data")
    return table, action, sequence, tuple(keys), version, data
