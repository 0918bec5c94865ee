"""How a push's rows travel to PostgreSQL: an array per column, or one JSON text.

Both put the rows in key order, so concurrent pushes lock rows in one order and cannot
deadlock.
"""

from __future__ import annotations

import math
import re
from operator import itemgetter
from typing import Any

import msgspec

from importapi.kinds import Kind
from importapi.schema import Rows
from importapi.storage import postgres_sql as q


def bind(kind: Kind, values: list[Any]) -> list[Any]:
    # prepare_rows may hand a boolean column 0/1; PostgreSQL has no bigint -> boolean cast
    if kind is Kind.BOOLEAN:
        return [None if v is None else bool(v) for v in values]
    return values


def _key_order(prepared: Rows) -> list[int]:
    """The rows' positions in key order: concurrent pushes then lock rows in one order and
    cannot deadlock."""
    keys = prepared.keys
    try:
        return sorted(range(len(keys)), key=keys.__getitem__)
    except TypeError:
        return sorted(range(len(keys)), key=lambda i: repr(keys[i]))


def _arrays(sql: q.TableSQL, prepared: Rows) -> list[list[Any]]:
    """One array per column of the table, the rows in key order (``_key_order``); a column
    the rows lack is all nulls."""
    columns, rows = prepared.columns, prepared.rows
    order = _key_order(prepared)
    where = {name: j for j, name in enumerate(columns)}
    constants = prepared.constants
    arrays = []
    for name, kind in zip(sql.columns, sql.kinds):
        j = where.get(name)
        if name in constants:
            column = [constants[name]] * len(rows)
        else:
            column = [None] * len(rows) if j is None else [rows[i][j] for i in order]
        arrays.append(bind(kind, column))
    return arrays


JSON_ROWS_MIN = 10
"""A push of this many rows or more is bound as one JSON text (``TableSQL.from_json``):
PostgreSQL reads it in C, where an array per column costs psycopg Python per value (on the
RJMetrics route's pushes of 100, +12% records/s on one process, A/B in 6 rounds)."""
_encode = msgspec.json.Encoder().encode
_NEGATIVE_ZERO = re.compile(rb"-0\.0(?![0-9])")


def _rows_json(sql: q.TableSQL, prepared: Rows) -> tuple[q.Layout, list[Any]] | None:
    """The rows in key order as one JSON text, with the layout and the parameters to bind;
    None when a value would not come back from jsonb as it is (a double's -0.0, NaN or an
    infinity): those go as arrays."""
    rows = prepared.rows
    where = {name: j for j, name in enumerate(prepared.columns)}
    for name, kind in zip(sql.columns, sql.kinds):
        j = where.get(name)
        if (
            kind is Kind.DOUBLE
            and j is not None
            and not all(map(math.isfinite, filter(_not_none, map(itemgetter(j), rows))))
        ):
            return None
    text = _encode([rows[i] for i in _key_order(prepared)])
    if _NEGATIVE_ZERO.search(text):
        return None
    once = tuple(c for c in sql.columns if c in prepared.constants)
    return (tuple(prepared.columns), once), [*(prepared.constants[c] for c in once), text.decode()]


def bound(sql: q.TableSQL, prepared: Rows) -> tuple[q.Layout | None, list[Any]]:
    """How a push's rows go to PostgreSQL: the JSON layout and its parameters (a push of
    ``JSON_ROWS_MIN`` rows or more), or None and an array per column."""
    as_json = _rows_json(sql, prepared) if len(prepared.rows) >= JSON_ROWS_MIN else None
    return as_json if as_json is not None else (None, _arrays(sql, prepared))


def _not_none(value: Any) -> bool:
    return value is not None
