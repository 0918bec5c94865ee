"""The statements of a push on PostgreSQL, on a connection inside the push's transaction:
a table's statements at its schema version, schema changes, upserts (plain, or ordered by
sequence), activations of a table version and the rows
of subtables tied to their parents.

``PostgresWrites`` is the part of ``PostgresWarehouse`` that writes; the warehouse decides
which pushes share a transaction, takes their locks, and retries (``postgres``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from importapi import schema as planning
from importapi.errors import BadRequest, Code, NotFound
from importapi.kinds import DOUBLE_EXACT, timestamp_text
from importapi.push import Batch, PushResult
from importapi.schema import Plan, Rows, TableSchema
from importapi.storage import postgres_sql as q
from importapi.storage.postgres_pool import Pool
from importapi.storage.postgres_read import PostgresReads
from importapi.storage.postgres_rows import bind, bound
from importapi.storage.sql import quote

TOUCH_TABLE_SECONDS = 1.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class PostgresWrites(PostgresReads):
    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self._tables: dict[tuple[int, str], q.TableSQL] = {}
        """Each table's statements at the schema version last seen."""
        self._touched: dict[tuple[int, str], float] = {}

    @staticmethod
    def _missing(client_id: int, table: str) -> q.TableSQL:
        raise NotFound(f"client {client_id} has no table {table!r}")

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
            row = conn.execute(q.version_of(client_id), (table,)).fetchone()
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
                " parent_keys) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    plan.table,
                    list(plan.key_fields),
                    now,
                    now,
                    q.new_version(),
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
                f"UPDATE {s}._importapi_tables SET version = %s WHERE name = %s",
                (q.new_version(), plan.table),
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
        layout, params = bound(sql, prepared)
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
        layout, params = bound(sql, prepared)
        found = conn.execute(sql.guarded(sequence, version, layout), params).fetchall()
        width = len(sql.schema.key_fields)
        written = {r[0] if width == 1 else tuple(r[:width]) for r in found}
        return sum(1 for r in found if r[width]), written

    def _activate(
        self, conn: psycopg.Connection[Any], client_id: int, batch: Batch, sql: q.TableSQL, plan: Plan
    ) -> int:
        """Make the plan's table version the table's own, and delete the rows of older ones."""
        conn.execute(
            f"UPDATE {q.client_schema(client_id)}._importapi_tables SET table_version = %s, version = %s"
            " WHERE name = %s",
            (plan.activate, q.new_version(), plan.table),
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
        arrays = [bind(kind, column) for kind, column in zip(kinds, columns)]
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
