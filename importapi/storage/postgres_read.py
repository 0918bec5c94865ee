"""Reading the PostgreSQL warehouse: table schemas, rows, read-only queries, and copies in.

``PostgresReads`` is the part of ``PostgresWarehouse`` that reads (and ``restore_table``,
which writes a table whole); it also brings a client schema of an earlier release to this
layout. Rows stream from a server-side cursor on a connection of their own, given back to
the pool once read or dropped.
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from importapi.errors import BadRequest, Code, NotFound, StorageUnavailable
from importapi.kinds import Kind, from_storage, timestamp_text, to_storage
from importapi.schema import Column, TableSchema
from importapi.storage import postgres_sql as q
from importapi.storage.base import EVERY_ROW, Page, RowStream, TableInfo
from importapi.storage.postgres_pool import POOL_TIMEOUT, Pool, iso, pooled, stamp
from importapi.storage.sql import names, quote


def _as_text(value: Any) -> Any:
    """Instants and dates as SQLite holds them (ISO 8601 text, UTC): the same answer to the
    same query on both backends, and printable as JSON."""
    if isinstance(value, dt.datetime):
        return timestamp_text(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


class PostgresReads:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._upgraded: set[int] = set()

    def _connection(self, timeout: float = POOL_TIMEOUT) -> Any:
        return pooled(self._pool, timeout)

    def _require_space(self, conn: psycopg.Connection[Any], client_id: int) -> None:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{q.client_schema(client_id)}._importapi_tables",)
        ).fetchone()
        if not (row and row[0]):
            raise NotFound(f"client {client_id} does not exist")

    def _upgrade(self, client_id: int) -> None:
        """Bring a client schema made by an earlier release to this layout, once per process."""
        if client_id in self._upgraded:
            return
        with self._connection() as conn:
            row = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL, EXISTS (SELECT 1 FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = '_importapi_columns' AND column_name = 'path')",
                (f"{q.client_schema(client_id)}._importapi_tables", f"client_{client_id}"),
            ).fetchone()
            if row is None or not row[0]:
                return  # no such client (yet): whoever asked learns it from what it does next
            if not row[1]:
                for statement in q.upgrade(client_id):
                    conn.execute(statement)
        self._upgraded.add(client_id)

    def _load_schemas(
        self, conn: psycopg.Connection[Any], client_id: int, table: str | None = None
    ) -> dict[str, TableSchema]:
        s = q.client_schema(client_id)
        where, params = ("WHERE name = %s", (table,)) if table else ("", ())
        schemas = {
            name: TableSchema(
                name, tuple(keys), {}, iso(created) or "", version, parent, tuple(parent_keys or ())
            )
            for name, keys, created, version, parent, parent_keys in conn.execute(
                f"SELECT name, key_fields, created_at, table_version, parent, parent_keys"
                f" FROM {s}._importapi_tables {where}",
                params,
            )
        }
        where = "WHERE table_name = %s" if table else ""
        for table_name, name, kind, widened, path in conn.execute(
            f"SELECT table_name, name, kind, widened_at, path FROM {s}._importapi_columns {where}"
            " ORDER BY table_name, position",
            params,
        ):
            schemas[table_name].columns[name] = Column(name, Kind.from_label(kind), iso(widened), path)
        return schemas

    def tables(self, client_id: int) -> list[TableInfo]:
        self._upgrade(client_id)
        s = q.client_schema(client_id)
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self._require_space(conn, client_id)
            schemas = self._load_schemas(conn, client_id)
            pushed = dict(conn.execute(f"SELECT name, last_push_at FROM {s}._importapi_tables").fetchall())
            infos = []
            for name in sorted(schemas):
                row = conn.execute(f"SELECT count(*) FROM {q.table_ref(client_id, name)}").fetchone()
                infos.append(TableInfo(schemas[name], int(row[0]) if row else 0, iso(pushed.get(name))))
        return infos

    def query(self, client_id: int, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            self._require_space(conn, client_id)
            cur.execute(f"SET LOCAL search_path = {q.client_schema(client_id)}")
            try:
                with conn.transaction():
                    # stream() runs the SQL through the extended protocol, which takes exactly
                    # one statement: no "COMMIT; ..." can leave the read-only transaction
                    found = [tuple(map(_as_text, r)) for r in cur.stream(sql.encode())]
                    return [d.name for d in cur.description or ()], found
            except pg_errors.ReadOnlySqlTransaction as exc:
                raise BadRequest(
                    f"query is read-only; this statement would write ({exc})", code=Code.QUERY_READ_ONLY
                ) from exc
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise BadRequest(f"query failed: {exc}", code=Code.QUERY_FAILED) from exc

    def read_rows(self, client_id: int, table: str, page: Page = EVERY_ROW) -> RowStream:
        self._upgrade(client_id)
        conn = self._getconn()
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self._require_space(conn, client_id)
            schema = self._load_schemas(conn, client_id, table).get(table)
            if schema is None:
                raise NotFound(f"client {client_id} has no table {table!r}")
        except BaseException as exc:
            self._putconn(conn)
            if isinstance(exc, psycopg.Error):
                raise StorageUnavailable(f"cannot read table {table!r} ({exc})") from exc
            raise
        direction = " DESC" if page.descending else ""
        order = ", ".join(quote(k) + direction for k in schema.key_fields)
        select = (
            f"SELECT {names(schema.columns)} FROM {q.table_ref(client_id, table)}"
            f" ORDER BY {order} LIMIT %s OFFSET %s"
        )
        kinds = [c.kind for c in schema.columns.values()]
        released = threading.Event()

        def release() -> None:  # once: when the rows are read, or dropped unread
            if not released.is_set():
                released.set()
                self._putconn(conn)

        rows = self._stream(conn, select, (page.limit, page.offset), kinds, release)
        weakref.finalize(rows, release)
        return list(schema.columns), rows

    def _getconn(self) -> psycopg.Connection[Any]:
        try:
            return self._pool.getconn(timeout=POOL_TIMEOUT)
        except PoolTimeout as exc:
            raise StorageUnavailable(f"the warehouse database cannot be reached ({exc})") from exc

    def _putconn(self, conn: psycopg.Connection[Any]) -> None:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        self._pool.putconn(conn)

    def _stream(
        self,
        conn: psycopg.Connection[Any],
        select: str,
        params: tuple[Any, ...],
        kinds: list[Kind],
        release: Callable[[], None],
    ) -> Iterator[tuple[Any, ...]]:
        try:
            with conn.cursor(name="importapi_rows") as cur:
                cur.execute(select, params)
                while chunk := cur.fetchmany(1000):
                    for row in chunk:
                        yield tuple(from_storage(v, k) for v, k in zip(row, kinds))
        except psycopg.Error as exc:
            raise StorageUnavailable(f"reading rows failed ({exc})") from exc
        finally:
            release()

    def restore_table(self, client_id: int, info: TableInfo, rows: Iterable[Sequence[Any]]) -> int:
        schema, last_push_at = info.schema, info.last_push_at
        s = q.client_schema(client_id)
        kinds = [c.kind for c in schema.columns.values()]
        count = 0
        with self._connection() as conn, conn.transaction():
            conn.execute(q.create_table(client_id, schema))
            conn.execute(
                f"INSERT INTO {s}._importapi_tables (name, key_fields, created_at, last_push_at, version,"
                " table_version, parent, parent_keys) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    schema.name,
                    list(schema.key_fields),
                    stamp(schema.created_at),
                    stamp(last_push_at),
                    q.new_version(),
                    schema.version,
                    schema.parent,
                    list(schema.parent_keys) if schema.parent else None,
                ),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {s}._importapi_columns (table_name, name, kind, position, created_at,"
                    " widened_at, path) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            schema.name,
                            c.name,
                            c.kind.label,
                            i,
                            stamp(schema.created_at),
                            stamp(c.widened_at),
                            c.path,
                        )
                        for i, c in enumerate(schema.columns.values())
                    ],
                )
                columns = names(schema.columns)
                with cur.copy(f"COPY {q.table_ref(client_id, schema.name)} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(
                            [
                                None if v is None else (bool(v) if k is Kind.BOOLEAN else to_storage(v, k))
                                for v, k in zip(row, kinds)
                            ]
                        )
                        count += 1
        return count
