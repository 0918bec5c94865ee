"""The SQL of the SQLite backend: connections, its errors, a client file's layout, and the
statements of one table.

    client_<id>.sqlite3    a client's tables, and beside them their schemas
                           (_importapi_tables, _importapi_columns), so a schema change commits
                           in the same transaction as the rows that caused it
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec

from importapi.errors import ImportApiError, ServerError, StorageUnavailable
from importapi.kinds import DOUBLE_EXACT, INT64_MAX, INT64_MIN, Kind, widen_stored
from importapi.schema import Column, Plan, TableSchema
from importapi.storage.base import utcnow
from importapi.storage.sql import column_def, column_defs, names, quote

BUSY_TIMEOUT_MS = 10_000

CLIENT_DDL = """
CREATE TABLE IF NOT EXISTS _importapi_tables (
    name TEXT PRIMARY KEY,
    key_fields TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_push_at TEXT,
    table_version INTEGER,
    parent TEXT,
    parent_keys TEXT
);
CREATE TABLE IF NOT EXISTS _importapi_columns (
    table_name TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    position INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    widened_at TEXT,
    path TEXT,
    PRIMARY KEY (table_name, name)
);
"""

# SQLite's primary result codes (the low byte of an extended code) that mean the file
# cannot be written now, rather than a fault of ours: busy or locked by another process,
# an I/O error, a full disk, a file that cannot be opened, a read-only file.
_UNAVAILABLE = {5: "busy", 6: "locked", 8: "read-only", 10: "I/O error", 13: "full", 14: "cannot be opened"}


def connect(path: Path | str, synchronous: str = "FULL", **kwargs: Any) -> sqlite3.Connection:
    conn: sqlite3.Connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, **kwargs)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _into_wal(conn)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def _into_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL. While another process holds a new file (servers starting
    together on a new warehouse), SQLite may answer "database is locked" at once: it does
    not wait where waiting could deadlock. Tried again here, for as long as the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if error_code(exc) not in (5, 6) or time.monotonic() > deadline:  # busy, locked
                raise
            time.sleep(0.005)


def error_code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code of an error (0 when the driver gives none)."""
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def storage_error(exc: sqlite3.Error) -> ImportApiError:
    """The refusal a driver error becomes: 503 when the file cannot take writes now, else 500."""
    if error_code(exc) in _UNAVAILABLE:
        return StorageUnavailable(f"the warehouse cannot take writes right now ({exc})")
    return ServerError()


def create_table(
    conn: sqlite3.Connection, name: str, columns: list[tuple[str, Kind]], key_fields: tuple[str, ...]
) -> None:
    """A table and the unique index on its key fields."""
    conn.execute(f"CREATE TABLE {quote(name)} ({column_defs('sqlite', columns, key_fields)})")
    create_key_index(conn, name, key_fields)


def create_key_index(conn: sqlite3.Connection, table: str, key_fields: tuple[str, ...]) -> None:
    conn.execute(
        f"CREATE UNIQUE INDEX {quote('_importapi_key_' + table)} ON {quote(table)} ({names(key_fields)})"
    )


def widen_function(value: Any, old: str, new: str) -> Any:
    return widen_stored(value, Kind.from_label(old), Kind.from_label(new))


def holds_inexact(conn: sqlite3.Connection, table: str, column: str) -> bool:
    """Does an integer column hold a value that a double would round?"""
    c = quote(column)
    sql = f"SELECT 1 FROM {quote(table)} WHERE {c} > ? OR {c} < ? LIMIT 1"
    return conn.execute(sql, (DOUBLE_EXACT, -DOUBLE_EXACT)).fetchone() is not None


# Doubles whose text is hardest to read back exactly: the extremes, subnormals, halfway cases.
_HARD_DOUBLES = (
    0.1,
    1 / 3,
    -2.5e-8,
    5e-324,
    2.2250738585072014e-308,
    2.225073858507201e-308,
    1.7976931348623157e308,
    9007199254740993.0,
    0.30000000000000004,
    1e23,
    8.41e21,
    4.35679e-10,
    123456789012345.67,
    -0.0,
)


def json_rows_work(conn: sqlite3.Connection) -> bool:
    """Can this SQLite take a push's rows as one JSON text (``TableSQL.upsert_rows``)?

    Binding rows one by one makes the driver take Python's lock back after every row, and
    a writer thread that must win that lock back a hundred times per push, from an event
    loop busy with requests, waits most of the time. One statement for all the rows is one
    wait. It needs SQLite 3.38 (``->>``) and a JSON reader that gives back every double
    and 64-bit integer exactly, which is checked here on the cases that go wrong first.
    """
    ints = (INT64_MIN, INT64_MAX, INT64_MIN + 1, 0)
    rows = [(v, repr(v), ints[i % 4], i % 2 == 0) for i, v in enumerate(_HARD_DOUBLES)]
    try:
        back = conn.execute(
            "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?)",
            (encode_rows(rows),),
        ).fetchall()
    except sqlite3.Error:
        return False
    return [(repr(a), b, c, d) for a, b, c, d in back] == [(b, b, c, int(d)) for _, b, c, d in rows]


encode_rows = msgspec.json.Encoder().encode


def execute_script(conn: sqlite3.Connection, script: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# What client files of earlier releases lack: (table, column, declaration).
_ADDED = (
    ("_importapi_tables", "table_version", "INTEGER"),
    ("_importapi_tables", "parent", "TEXT"),
    ("_importapi_tables", "parent_keys", "TEXT"),
    ("_importapi_columns", "path", "TEXT"),
)


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a client file made by an earlier release to this layout; nothing when it has it."""
    for table, column, declared in _ADDED:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if columns and column not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declared}")


def load_schemas(conn: sqlite3.Connection) -> dict[str, TableSchema]:
    schemas: dict[str, TableSchema] = {}
    for name, key_fields, created_at, version, parent, parent_keys in conn.execute(
        "SELECT name, key_fields, created_at, table_version, parent, parent_keys FROM _importapi_tables"
    ):
        schemas[name] = TableSchema(
            name,
            tuple(json.loads(key_fields)),
            {},
            created_at,
            version,
            parent,
            tuple(json.loads(parent_keys)) if parent_keys else (),
        )
    for table, name, kind, widened_at, path in conn.execute(
        "SELECT table_name, name, kind, widened_at, path FROM _importapi_columns ORDER BY table_name, position"
    ):
        schemas[table].columns[name] = Column(name, Kind.from_label(kind), widened_at, path)
    return schemas


class TableSQL:
    """Statements for one table at one schema, built once and reused."""

    def __init__(self, schema: TableSchema) -> None:
        t = quote(schema.name)
        cols = list(schema.columns)
        keys = list(schema.key_fields)
        col_list = names(cols)
        marks = ", ".join("?" for _ in cols)
        others = [c for c in cols if c not in schema.key_fields]
        conflict = names(keys)
        if others:
            update = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in others)
            action = f"DO UPDATE SET {update}"
        else:
            action = "DO NOTHING"
        self.columns = cols
        self.booleans = frozenset(c for c, col in schema.columns.items() if col.kind is Kind.BOOLEAN)
        """The boolean columns, whose values the writer binds as integers."""
        self.upsert = f"INSERT INTO {t} ({col_list}) VALUES ({marks}) ON CONFLICT ({conflict}) {action}"
        self._into = f"INSERT INTO {t} ({col_list})"
        self._values = (
            f"{self._into} VALUES ",
            f"({marks})",
            f" ON CONFLICT ({conflict}) {action}",
        )
        self._by_count: dict[int, str] = {}
        self._conflict = f" ON CONFLICT ({conflict}) {action}"
        self._mapped: dict[tuple[tuple[str, ...], tuple[str, ...], int], str] = {}
        self._rows_mapped: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
        self._layout = tuple(cols)
        # The same upsert taking all rows as one JSON array of arrays: one statement, one
        # step, for the whole push (see ``json_rows_work``). WHERE true: SQLite's parser
        # needs it between a SELECT and ON CONFLICT.
        values = ", ".join(f"value ->> {i}" for i in range(len(cols)))
        self.upsert_rows = (
            f"INSERT INTO {t} ({col_list}) SELECT {values} FROM json_each(?) WHERE true"
            f" ON CONFLICT ({conflict}) {action}"
        )
        # Which of a JSON array of keys the table holds (each key an array when it has several
        # fields), with whatever columns are asked for after the key's.
        key_cols = names(keys)
        if len(keys) == 1:
            where = f"{key_cols} IN (SELECT value FROM json_each(?))"
        else:
            parts = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(keys)))
            where = f"({key_cols}) IN (SELECT {parts} FROM json_each(?))"
        self._probe = (t, key_cols, where)
        self.key_width = len(keys)
        # The largest key of a table keyed by one integer field (through its key index).
        single = schema.columns.get(keys[0]) if len(keys) == 1 else None
        self.max_key = f"SELECT max({key_cols}) FROM {t}" if single and single.kind is Kind.INTEGER else None
        # A new row gets the rowid one above the table's largest, and a replaced row keeps
        # its own: so the largest rowid after an upsert less the largest before is how many
        # keys it inserted, without probing each key.
        lower = {c.lower() for c in cols}
        rowid = next((a for a in ("rowid", "_rowid_", "oid") if a not in lower), None)
        self.max_rowid = f"SELECT coalesce(max({rowid}), 0) FROM {t}" if rowid else None
        # The keys of the rows inserted after a rowid (for a group's pushes written as one).
        self.keys_after = f"SELECT {key_cols} FROM {t} WHERE {rowid} > ?" if rowid else None

    def upsert_values(self, count: int) -> str:
        """The upsert of ``count`` rows bound as values in one statement."""
        sql = self._by_count.get(count)
        if sql is None:
            head, row, tail = self._values
            sql = self._by_count[count] = head + ", ".join([row] * count) + tail
            if len(self._by_count) > 4:  # a full chunk's and a few remainders'
                self._by_count.pop(next(iter(self._by_count)))
        return sql

    def upsert_mapped(self, layout: tuple[str, ...], once: tuple[str, ...], count: int) -> str:
        """The upsert of ``count`` rows bound as values in the column order ``layout``: each
        column of the table is picked from its place in the row, a null where the rows lack
        it, or (a column in ``once``) from the statement's first values, bound once in that
        order. The rows are bound as they come, with no Python per row to put them in order;
        rows in the table's own order and nothing bound once take the plain ``upsert_values``."""
        if not once and layout == self._layout:
            return self.upsert_values(count)
        key = (layout, once, count)
        sql = self._mapped.get(key)
        if sql is None:
            at = {name: i for i, name in enumerate(layout, 1)}
            given = {name: i for i, name in enumerate(once, 1)}
            picks = ", ".join(
                f"?{given[c]}" if c in given else f"column{at[c]}" if c in at else "NULL"
                for c in self.columns
            )
            row = f"({', '.join('?' * len(layout))})"
            sql = self._mapped[key] = (
                f"{self._into} SELECT {picks} FROM (VALUES "
                f"{', '.join([row] * count)}) WHERE true{self._conflict}"
            )
            if len(self._mapped) > 4:  # a full chunk's and a few remainders'
                self._mapped.pop(next(iter(self._mapped)))
        return sql

    def upsert_rows_mapped(self, layout: tuple[str, ...], once: tuple[str, ...]) -> str:
        """``upsert_rows`` for rows in the column order ``layout``, the columns ``once`` bound
        after the rows, once each (``upsert_rows`` itself for the table's order and none)."""
        if not once and layout == self._layout:
            return self.upsert_rows
        sql = self._rows_mapped.get((layout, once))
        if sql is None:
            at = {name: i for i, name in enumerate(layout)}
            given = {name: i for i, name in enumerate(once, 2)}
            picks = ", ".join(
                f"?{given[c]}" if c in given else f"value ->> {at[c]}" if c in at else "NULL"
                for c in self.columns
            )
            sql = f"{self._into} SELECT {picks} FROM json_each(?1) WHERE true{self._conflict}"
            self._rows_mapped = {(layout, once): sql}  # one layout a table is pushed in, at a time
        return sql

    def existing(self, *also: str) -> str:
        """The keys of a JSON array of keys the table holds, each with the columns ``also``."""
        t, key_cols, where = self._probe
        return f"SELECT {', '.join([key_cols, *map(quote, also)])} FROM {t} WHERE {where}"

    def deleting_children(self, parent_keys: tuple[str, ...]) -> str:
        """Delete the rows of a subtable tied to a JSON array of parent keys."""
        t = self._probe[0]
        if len(parent_keys) == 1:
            return f"DELETE FROM {t} WHERE {quote(parent_keys[0])} IN (SELECT value FROM json_each(?))"
        parts = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(parent_keys)))
        return f"DELETE FROM {t} WHERE ({names(parent_keys)}) IN (SELECT {parts} FROM json_each(?))"

    def deleting_orphans(self, parent_keys: tuple[str, ...], parent: str, key_fields: tuple[str, ...]) -> str:
        """Delete the rows of a subtable whose parent row is gone."""
        match = " AND ".join(f"p.{quote(k)} = c.{quote(c)}" for k, c in zip(key_fields, parent_keys))
        return f"DELETE FROM {self._probe[0]} AS c WHERE NOT EXISTS (SELECT 1 FROM {quote(parent)} AS p WHERE {match})"

    def deleting_older(self, version: str) -> str:
        """Delete the rows of table versions older than the one bound (or of none)."""
        c = quote(version)
        return f"DELETE FROM {self._probe[0]} WHERE {c} < ? OR {c} IS NULL"


def change_schema(conn: sqlite3.Connection, schema: TableSchema | None, plan: Plan) -> TableSchema:
    """Make the table, add its columns and widen them as planned, in the catalog tables too;
    the table's schema after."""
    now = utcnow()
    t = quote(plan.table)
    if schema is None:
        create_table(conn, plan.table, [(c.name, c.kind) for c in plan.add], plan.key_fields)
        parent_keys = json.dumps(list(plan.parent_keys)) if plan.parent else None
        conn.execute(
            "INSERT INTO _importapi_tables (name, key_fields, created_at, parent, parent_keys) VALUES (?, ?, ?, ?, ?)",
            (plan.table, json.dumps(list(plan.key_fields)), now, plan.parent, parent_keys),
        )
        schema = TableSchema(
            plan.table, plan.key_fields, {}, now, parent=plan.parent, parent_keys=plan.parent_keys
        )
    else:
        schema = replace(schema, columns=dict(schema.columns))
        for c in plan.add:
            conn.execute(f"ALTER TABLE {t} ADD COLUMN {column_def('sqlite', c.name, c.kind)}")
    position = len(schema.columns)
    for c in plan.add:
        conn.execute(
            "INSERT INTO _importapi_columns (table_name, name, kind, position, created_at, path)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (plan.table, c.name, c.kind.label, position, now, c.path),
        )
        schema.columns[c.name] = Column(c.name, c.kind, path=c.path)
        position += 1
    if plan.widen:
        for name, _old, new in plan.widen:
            schema.columns[name] = Column(name, new, now, schema.columns[name].path)
            conn.execute(
                "UPDATE _importapi_columns SET kind = ?, widened_at = ? WHERE table_name = ? AND name = ?",
                (new.label, now, plan.table, name),
            )
        _rebuild(conn, schema, plan)
    return schema


def _rebuild(conn: sqlite3.Connection, schema: TableSchema, plan: Plan) -> None:
    """Widen columns: SQLite cannot change a column's type, so the table is rebuilt."""
    t, tmp = quote(plan.table), quote(f"_importapi_rebuild_{plan.table}")
    widened = {name: (old, new) for name, old, new in plan.widen}
    defs = column_defs("sqlite", [(c.name, c.kind) for c in schema.columns.values()], plan.key_fields)
    exprs = ", ".join(
        f"_importapi_widen({quote(c)}, '{widened[c][0].label}', '{widened[c][1].label}')"
        if c in widened
        else quote(c)
        for c in schema.columns
    )
    conn.execute(f"CREATE TABLE {tmp} ({defs})")
    conn.execute(f"INSERT INTO {tmp} ({names(schema.columns)}) SELECT {exprs} FROM {t} ORDER BY rowid")
    conn.execute(f"DROP TABLE {t}")
    conn.execute(f"ALTER TABLE {tmp} RENAME TO {t}")
    create_key_index(conn, plan.table, plan.key_fields)
