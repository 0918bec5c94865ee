"""The production warehouse: PostgreSQL through psycopg 3 and a connection pool.

One schema per client (``client_<id>``) holds its tables and, beside them, their schemas
(``_importapi_tables``, ``_importapi_columns``), so a schema change commits atomically with
the rows that caused it; the catalog lives in the schema ``importapi``
(``postgres_catalog``). The layout and SQL text are in ``postgres_sql``.

Many server processes may share one database. Each push runs in a transaction of its own on
a pooled connection, holding a transaction-scoped advisory lock on its client and each table
it writes (taken in table order): shared for a table the push fits as it is, exclusive for
one whose schema it changes. Under the lock the table's schema version is read again, so a
process never writes with a stale idea of a table's columns, and two processes never change
one table at once. Rows are written in key order, so concurrent pushes to the same keys
cannot deadlock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from operator import itemgetter
from typing import Any

import msgspec
import psycopg
from psycopg import errors as pg_errors

from importapi import schema as planning
from importapi.errors import BadRequest, Code, NotFound, StorageUnavailable
from importapi.kinds import DOUBLE_EXACT, Kind, timestamp_text
from importapi.push import Batch, Push, PushResult
from importapi.schema import Plan, Rows, TableSchema
from importapi.settings import Limits
from importapi.storage import postgres_sql as q
from importapi.storage.base import Warehouse
from importapi.storage.postgres_pool import PING_TIMEOUT, Pool
from importapi.storage.postgres_read import PostgresReads
from importapi.storage.sql import quote

log = logging.getLogger("importapi.storage")

MAX_ATTEMPTS = 8
TOUCH_TABLE_SECONDS = 1.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class _Retry(Exception):
    """The push must start again: with exclusive locks on these tables, or after a deadlock."""

    def __init__(self, exclusive: frozenset[str]) -> None:
        self.exclusive = exclusive


def _bind(kind: Kind, values: list[Any]) -> list[Any]:
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
        arrays.append(_bind(kind, column))
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


def _bound(sql: q.TableSQL, prepared: Rows) -> tuple[q.Layout | None, list[Any]]:
    """How a push's rows go to PostgreSQL: the JSON layout and its parameters (a push of
    ``JSON_ROWS_MIN`` rows or more), or None and an array per column."""
    as_json = _rows_json(sql, prepared) if len(prepared.rows) >= JSON_ROWS_MIN else None
    return as_json if as_json is not None else (None, _arrays(sql, prepared))


def _not_none(value: Any) -> bool:
    return value is not None


def _lock_key(client_id: int, table: str) -> str:
    return f"{client_id}/{table}"


class PostgresWarehouse(PostgresReads, Warehouse):
    def __init__(self, pool: Pool, limits: Limits | None = None, pool_size: int = 8) -> None:
        super().__init__(pool)
        self.limits = limits or Limits()
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="importapi-pg")
        self._tables: dict[tuple[int, str], q.TableSQL] = {}
        self._touched: dict[tuple[int, str], float] = {}

    def create_space(self, client_id: int) -> None:
        with self._connection() as conn, conn.transaction():
            for statement in q.client_ddl(client_id):
                conn.execute(statement)

    @staticmethod
    def _missing(client_id: int, table: str) -> q.TableSQL:
        raise NotFound(f"client {client_id} has no table {table!r}")

    # -- pushes -----------------------------------------------------------
    def submit(self, push: Push) -> Future[list[PushResult]]:
        if push.sandbox:
            return self._executor.submit(self._plan_only, push)
        return self._executor.submit(self._push, push)

    def _push(self, push: Push) -> list[PushResult]:
        self._upgrade(push.client_id)
        exclusive: frozenset[str] = frozenset()
        for _attempt in range(MAX_ATTEMPTS):
            try:
                # pipeline mode: BEGIN, the locks and the schema versions go in one round trip
                with self._connection() as conn, conn.pipeline():
                    return self._push_once(conn, push, exclusive)
            except _Retry as retry:
                exclusive = exclusive | retry.exclusive
        raise StorageUnavailable("the warehouse is too busy to take this push now; try again")

    def _push_once(
        self, conn: psycopg.Connection[Any], push: Push, exclusive: frozenset[str]
    ) -> list[PushResult]:
        client_id = push.client_id
        batches = sorted(push.batches, key=lambda b: b.table)  # locks in one order: no deadlock
        try:
            with conn.transaction():
                for batch in batches:
                    lock = (
                        "pg_advisory_xact_lock"
                        if batch.table in exclusive
                        else "pg_advisory_xact_lock_shared"
                    )
                    conn.execute(
                        f"SELECT {lock}(hashtextextended(%s, 0))", (_lock_key(client_id, batch.table),)
                    )
                planned = []
                for batch in push.batches:  # in the push's order: a subtable after its parent
                    sql = self._table_sql(conn, client_id, batch.table)
                    plan = planning.make_plan(
                        sql.schema if sql else None,
                        batch,
                        self.limits,
                        self._inexact(conn, client_id, batch.table),
                    )
                    planned.append((batch, sql, plan))
                wanted = frozenset(b.table for b, _sql, plan in planned if plan.changes_schema)
                if not wanted <= exclusive:
                    raise _Retry(wanted)
                written: dict[str, set[Any]] = {}
                results = {
                    b.table: self._write(conn, client_id, b, sql, plan, written) for b, sql, plan in planned
                }
        except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
            log.info("push of client %s retried: %s", client_id, exc)
            raise _Retry(exclusive) from exc
        except psycopg.OperationalError as exc:
            if not conn.broken:
                raise
            # a pooled connection the server dropped (a restart): try another. Even if this
            # one died while committing, writing the same rows again changes nothing.
            log.warning("push of client %s retried on another connection: %s", client_id, exc)
            self._pool.check()  # the others are likely dead too: drop them now, not one by one
            raise _Retry(exclusive) from exc
        return [results[b.table] for b in push.batches]

    def _write(
        self,
        conn: psycopg.Connection[Any],
        client_id: int,
        batch: Batch,
        sql: q.TableSQL | None,
        plan: Plan,
        written: dict[str, set[Any]],
    ) -> PushResult:
        """Write one batch; ``written`` collects the keys each nested batch wrote, so that a
        subtable's batch after it keeps only the rows of those parents."""
        if plan.changes_schema:
            sql = self._change_schema(conn, client_id, sql.schema if sql else None, plan)
        assert sql is not None
        rows = planning.prepare_rows(
            plan, batch, timestamp_text(dt.datetime.now(dt.UTC)) if batch.stamp else None
        )
        if batch.parent is not None:
            rows = planning.keep_children(rows, batch.parent_keys, written.get(batch.parent, set()))
        stale = rows.stale
        keys: set[Any] = set(rows.keys)
        if not rows.rows:
            inserted = 0
        elif rows.sequence is not None and rows.columns[rows.sequence] in sql.schema.columns:
            inserted, keys = self._upsert_ordered(conn, sql, rows)
            applied = [k for k in rows.point_keys if k in keys]  # the others lost to a stored row
            stale += len(rows.point_keys) - len(applied)
            rows = dataclasses.replace(rows, point_keys=applied)
        else:
            inserted = self._upsert(conn, sql, rows)
        if batch.nested:  # the rows just written lose the subtable rows they had
            written[batch.table] = keys
            if keys:
                self._drop_children(conn, client_id, sql.schema, keys)
        deleted = self._activate(conn, client_id, batch, sql, plan) if plan.activate is not None else 0
        self._touch_table(conn, client_id, batch.table)
        replaced = len(rows.point_keys) - inserted
        return PushResult(batch.table, inserted, replaced, plan.describe(), plan.kinds, stale, deleted)

    def _plan_only(self, push: Push) -> list[PushResult]:
        """The sandbox: what the push would do against the tables as they are now; writes nothing."""
        self._upgrade(push.client_id)
        results = []
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            for batch in push.batches:
                sql = self._table_sql(conn, push.client_id, batch.table)
                schema = sql.schema if sql else None
                plan = planning.make_plan(
                    schema, batch, self.limits, self._inexact(conn, push.client_id, batch.table)
                )
                rows = planning.prepare_rows(plan, batch)
                rows, lost = planning.drop_older(rows, self._sequences(conn, push.client_id, schema, rows))
                existing = self._existing(conn, push.client_id, schema, plan, rows.keys) if schema else set()
                inserted, replaced = planning.count_changes(rows.point_keys, existing)
                results.append(
                    PushResult(batch.table, inserted, replaced, plan.describe(), stale=rows.stale + lost)
                )
        return results

    def _sequences(
        self, conn: psycopg.Connection[Any], client_id: int, schema: TableSchema | None, rows: Rows
    ) -> dict[Any, Any]:
        """The stored sequence and table version of each of the rows' keys the table holds
        (for the sandbox)."""
        if rows.sequence is None or schema is None or rows.columns[rows.sequence] not in schema.columns:
            return {}
        sequence = rows.columns[rows.sequence]
        version = rows.version_name
        also = quote(version) if version in schema.columns else "NULL"
        select = q.probe_existing(client_id, schema, {}).replace(
            " FROM ", f", {quote(sequence)}, {also} FROM ", 1
        )
        width = len(schema.key_fields)
        columns = [list(rows.keys)] if width == 1 else [list(c) for c in zip(*rows.keys)]
        params = [_bind(schema.columns[k].kind, col) for k, col in zip(schema.key_fields, columns)]
        found = conn.execute(select, params, prepare=False).fetchall()
        return {(r[0] if width == 1 else tuple(r[:width])): (r[width], r[width + 1]) for r in found}

    def _inexact(self, conn: psycopg.Connection[Any], client_id: int, table: str) -> Any:
        def holds_inexact(column: str) -> bool:
            c = quote(column)
            row = conn.execute(
                f"SELECT 1 FROM {q.table_ref(client_id, table)} WHERE {c} > %s OR {c} < %s LIMIT 1",
                (DOUBLE_EXACT, -DOUBLE_EXACT),
                prepare=False,
            ).fetchone()
            return row is not None

        return holds_inexact

    def _table_sql(self, conn: psycopg.Connection[Any], client_id: int, table: str) -> q.TableSQL | None:
        """The table's statements at its current schema version (None: no such table yet)."""
        try:
            row = conn.execute(
                f"SELECT version FROM {q.client_schema(client_id)}._importapi_tables WHERE name = %s",
                (table,),
            ).fetchone()
        except pg_errors.UndefinedTable as exc:
            raise NotFound(f"client {client_id} does not exist") from exc
        if row is None:
            self._tables.pop((client_id, table), None)
            return None
        cached = self._tables.get((client_id, table))
        if cached is not None and cached.version == row[0]:
            return cached
        schema = self._load_schemas(conn, client_id, table)[table]
        sql = self._tables[(client_id, table)] = q.TableSQL(client_id, schema, row[0])
        return sql

    def _change_schema(
        self, conn: psycopg.Connection[Any], client_id: int, schema: TableSchema | None, plan: Plan
    ) -> q.TableSQL:
        now = _now()
        s, t = q.client_schema(client_id), q.table_ref(client_id, plan.table)
        if schema is None:
            created = TableSchema(plan.table, plan.key_fields, {c.name: c for c in plan.add})
            conn.execute(q.create_table(client_id, created))
            conn.execute(
                f"INSERT INTO {s}._importapi_tables (name, key_fields, created_at, last_push_at, version, parent,"
                " parent_keys) VALUES (%s, %s, %s, %s, 1, %s, %s)",
                (
                    plan.table,
                    list(plan.key_fields),
                    now,
                    now,
                    plan.parent,
                    list(plan.parent_keys) if plan.parent else None,
                ),
            )
            position = 0
        elif not plan.add and not plan.widen:
            return self._table_sql(conn, client_id, plan.table) or self._missing(client_id, plan.table)
        else:
            parts = [f"ADD COLUMN {q.column_def(c.name, c.kind, False)}" for c in plan.add]
            parts += [
                f"ALTER COLUMN {quote(name)} TYPE {q.declared_type(new)} USING {q.widen_expr(quote(name), old, new)}"
                for name, old, new in plan.widen
            ]
            try:
                with conn.transaction():
                    conn.execute(f"ALTER TABLE {t} {', '.join(parts)}")
            except pg_errors.UniqueViolation as exc:
                raise BadRequest(
                    f"table {plan.table!r}: widening a key column would make two rows share a key",
                    code=Code.KEY_WIDENING_COLLISION,
                ) from exc
            conn.execute(
                f"UPDATE {s}._importapi_tables SET version = version + 1 WHERE name = %s", (plan.table,)
            )
            for name, _old, wider in plan.widen:
                conn.execute(
                    f"UPDATE {s}._importapi_columns SET kind = %s, widened_at = %s"
                    " WHERE table_name = %s AND name = %s",
                    (wider.label, now, plan.table, name),
                )
            position = len(schema.columns)
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {s}._importapi_columns (table_name, name, kind, position, created_at, path)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (plan.table, c.name, c.kind.label, position + i, now, c.path)
                    for i, c in enumerate(plan.add)
                ],
            )
        sql = self._table_sql(conn, client_id, plan.table)
        assert sql is not None
        return sql

    def _upsert(self, conn: psycopg.Connection[Any], sql: q.TableSQL, prepared: Rows) -> int:
        """Write the rows; the number of rows that were new."""
        layout, params = _bound(sql, prepared)
        upsert = sql.upsert if layout is None else sql.upsert_json(layout)
        flags = conn.execute(upsert, params).fetchall()
        return len(flags) if sql.all_keys else sum(1 for (new,) in flags if new)

    def _upsert_ordered(
        self, conn: psycopg.Connection[Any], sql: q.TableSQL, prepared: Rows
    ) -> tuple[int, set[Any]]:
        """Write the rows that are not older than their stored row (the database decides,
        row by row, under the row's lock); how many were new, and the keys written."""
        sequence = prepared.columns[prepared.sequence or 0]
        version = prepared.version_name
        if version not in sql.schema.columns:
            version = None
        layout, params = _bound(sql, prepared)
        found = conn.execute(sql.guarded(sequence, version, layout), params).fetchall()
        width = len(sql.schema.key_fields)
        written = {r[0] if width == 1 else tuple(r[:width]) for r in found}
        return sum(1 for r in found if r[width]), written

    def _activate(
        self, conn: psycopg.Connection[Any], client_id: int, batch: Batch, sql: q.TableSQL, plan: Plan
    ) -> int:
        """Make the plan's table version the table's own, and delete the rows of older ones."""
        conn.execute(
            f"UPDATE {q.client_schema(client_id)}._importapi_tables SET table_version = %s, version = version + 1"
            " WHERE name = %s",
            (plan.activate, plan.table),
        )
        self._tables.pop((client_id, plan.table), None)  # other processes reload it: its version moved
        if batch.version is None or batch.version not in sql.schema.columns:
            return 0
        deleted = conn.execute(
            q.deleting_older(client_id, plan.table, batch.version), (plan.activate,)
        ).rowcount
        if deleted:  # their subtables' rows go with them
            schema = sql.schema
            for name, parent_keys in self._subtables(conn, client_id, plan.table):
                conn.execute(q.deleting_orphans(client_id, name, parent_keys, schema.name, schema.key_fields))
        return deleted

    def _subtables(
        self, conn: psycopg.Connection[Any], client_id: int, table: str
    ) -> list[tuple[str, tuple[str, ...]]]:
        rows = conn.execute(
            f"SELECT name, parent_keys FROM {q.client_schema(client_id)}._importapi_tables WHERE parent = %s",
            (table,),
        ).fetchall()
        return [(r[0], tuple(r[1])) for r in rows]

    def _drop_children(
        self, conn: psycopg.Connection[Any], client_id: int, parent: TableSchema, keys: set[Any]
    ) -> None:
        """Delete the rows tied to these parent keys from every subtable of the parent."""
        kinds = [parent.columns[k].kind for k in parent.key_fields]
        single = len(kinds) == 1
        columns = [list(keys)] if single else [list(c) for c in zip(*keys)]
        arrays = [_bind(kind, column) for kind, column in zip(kinds, columns)]
        for name, parent_keys in self._subtables(conn, client_id, parent.name):
            conn.execute(q.deleting_children(client_id, name, parent_keys, kinds), arrays)

    def _touch_table(self, conn: psycopg.Connection[Any], client_id: int, table: str) -> None:
        """Record the table's last push, at most once a second per process (a hot row)."""
        now = time.monotonic()
        if now - self._touched.get((client_id, table), -TOUCH_TABLE_SECONDS) < TOUCH_TABLE_SECONDS:
            return
        self._touched[(client_id, table)] = now
        conn.execute(
            f"UPDATE {q.client_schema(client_id)}._importapi_tables SET last_push_at = %s WHERE name = %s",
            (_now(), table),
        )

    def _existing(
        self, conn: psycopg.Connection[Any], client_id: int, schema: TableSchema, plan: Plan, keys: list[Any]
    ) -> set[Any]:
        widen = {name: (old, new) for name, old, new in plan.widen if name in plan.key_fields}
        sql = q.probe_existing(client_id, schema, widen)
        single = len(schema.key_fields) == 1
        columns = [list(keys)] if single else [list(c) for c in zip(*keys)]
        params = [_bind(plan.kinds[k], col) for k, col in zip(schema.key_fields, columns)]
        found = conn.execute(sql, params, prepare=False).fetchall()
        return {r[0] for r in found} if single else {tuple(r) for r in found}

    # -- reading ----------------------------------------------------------
    # -- health -----------------------------------------------------------
    def ping(self) -> None:
        with self._connection(timeout=PING_TIMEOUT) as conn:
            conn.execute("SELECT 1")

    def check_writable(self) -> None:
        with self._connection(timeout=PING_TIMEOUT) as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::boolean"
            ).fetchone()
        if row and row[0]:
            raise StorageUnavailable("the warehouse database is read-only (a standby?)")

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._pool.close()
