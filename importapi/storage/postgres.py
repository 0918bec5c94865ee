"""The production warehouse: PostgreSQL through psycopg 3 and a connection pool.

One schema per client (``client_<id>``) holds its tables and, beside them, their schemas
(``_importapi_tables``, ``_importapi_columns``), so a schema change commits atomically with
the rows that caused it; the catalog (clients, hashed keys, settings, activity) lives in the
schema ``importapi``. The layout and SQL text are in ``postgres_sql``.

Many server processes may share one database. Each push runs in a transaction of its own on
a pooled connection, holding a transaction-scoped advisory lock on its client and table:
shared for a push that fits the table as it is, exclusive for one that changes its schema.
Under the lock the table's schema version is read again, so a process never writes with a
stale idea of a table's columns, and two processes never change one table at once. Rows
are written in key order, so concurrent pushes to the same keys cannot deadlock.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool, PoolTimeout

from importapi import apikeys
from importapi.errors import BadRequest, NotFound, ServerError, StorageUnavailable
from importapi.kinds import DOUBLE_EXACT, Kind, from_storage, to_storage
from importapi.records import Batch, Limits
from importapi.schema import Column, Plan, TableSchema, count_changes, make_plan, prepare_rows
from importapi.storage import postgres_sql as q
from importapi.storage.base import (
    Activity,
    CatalogDump,
    ClientInfo,
    KeyInfo,
    PushResult,
    Storage,
    StoredKey,
    TableInfo,
)

log = logging.getLogger("importapi.storage")

POOL_TIMEOUT = 30.0
PING_TIMEOUT = 5.0
MAX_ATTEMPTS = 8
TOUCH_TABLE_SECONDS = 1.0
CATALOG_LOCK = 0x1A7A0001  # advisory lock key for catalog changes (client ids, bootstrap)


class _Text(Loader):
    """numeric and json come back as their text, as SQLite stores them: exact, and printable."""

    def load(self, data: Any) -> str:
        return bytes(data).decode()


def _configure(conn: psycopg.Connection[Any]) -> None:
    for name in ("numeric", "json", "jsonb"):
        conn.adapters.register_loader(name, _Text)


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _stamp(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class _Retry(Exception):
    """The push must start again: with the exclusive lock, or after a deadlock."""

    def __init__(self, exclusive: bool) -> None:
        self.exclusive = exclusive


def _bind(kind: Kind, values: list[Any]) -> list[Any]:
    # prepare_rows may hand a boolean column 0/1; PostgreSQL has no bigint -> boolean cast
    if kind is Kind.BOOLEAN:
        return [None if v is None else bool(v) for v in values]
    return values


def _lock_key(client_id: int, table: str) -> str:
    return f"{client_id}/{table}"


class PostgresStorage(Storage):
    def __init__(self, url: str, limits: Limits | None = None, pool_size: int = 8) -> None:
        self.limits = limits or Limits()
        try:  # one plain connection first: its error says what is wrong (the pool's would not)
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as exc:
            detail = " ".join(str(exc).split())
            raise StorageUnavailable(f"cannot connect to the warehouse database: {detail}") from exc
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs={"autocommit": True},
            configure=_configure, open=False, name="importapi", timeout=POOL_TIMEOUT,
        )
        try:
            self._pool.open(wait=True, timeout=10)
        except PoolTimeout as exc:
            self._pool.close()
            raise StorageUnavailable(f"cannot connect to the warehouse database: {exc}") from exc
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="importapi-pg")
        self._tables: dict[tuple[int, str], q.TableSQL] = {}
        self._touched: dict[tuple[int, str], float] = {}
        try:
            self._bootstrap()
        except BaseException:
            self.close()
            raise

    @contextmanager
    def _connection(self, timeout: float = POOL_TIMEOUT) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; driver errors leave as the contract's errors."""
        try:
            with self._pool.connection(timeout=timeout) as conn:
                yield conn
        except PoolTimeout as exc:
            raise StorageUnavailable(f"the warehouse database cannot be reached ({exc})") from exc
        except psycopg.OperationalError as exc:
            log.warning("warehouse database error: %s", exc)
            raise StorageUnavailable(f"the warehouse database cannot take writes right now ({exc})") from exc
        except psycopg.Error as exc:
            log.exception("warehouse database error")
            raise ServerError() from exc

    def _bootstrap(self) -> None:
        with self._connection() as conn:
            ready = conn.execute(
                "SELECT to_regclass('importapi.catalog_state') IS NOT NULL"
                " AND to_regprocedure('importapi.float_text(double precision)') IS NOT NULL"
            ).fetchone()
            if ready and ready[0]:
                return
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (CATALOG_LOCK,))
                    for statement in q.CATALOG_DDL:
                        conn.execute(statement)
            except psycopg.Error as exc:
                detail = " ".join(str(exc).split())
                raise StorageUnavailable(f"cannot set up the warehouse in this database: {detail}") from exc

    def _bump_catalog(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("UPDATE importapi.catalog_state SET version = version + 1")

    # -- clients and keys -------------------------------------------------
    def create_client(self, name: str, client_id: int | None = None) -> ClientInfo:
        now = _now()
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CATALOG_LOCK,))
            if client_id is None:
                row = conn.execute("SELECT coalesce(max(client_id), 0) + 1 FROM importapi.clients").fetchone()
                assert row is not None
                client_id = int(row[0])
            elif conn.execute("SELECT 1 FROM importapi.clients WHERE client_id = %s", (client_id,)).fetchone():
                raise BadRequest(f"client {client_id} already exists")
            conn.execute("INSERT INTO importapi.clients (client_id, name, created_at) VALUES (%s, %s, %s)",
                         (client_id, name, now))
            for statement in q.client_ddl(client_id):
                conn.execute(statement)
            self._bump_catalog(conn)
        return ClientInfo(client_id, name, _iso(now) or "")

    def _clients(self, where: str = "", params: tuple[Any, ...] = ()) -> list[ClientInfo]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT client_id, name, created_at FROM importapi.clients {where} ORDER BY client_id", params
            ).fetchall()
        return [ClientInfo(r[0], r[1], _iso(r[2]) or "") for r in rows]

    def get_client(self, client_id: int) -> ClientInfo | None:
        found = self._clients("WHERE client_id = %s", (client_id,))
        return found[0] if found else None

    def list_clients(self) -> list[ClientInfo]:
        return self._clients()

    def _require_client(self, client_id: int) -> None:
        if self.get_client(client_id) is None:
            raise NotFound(f"client {client_id} does not exist")

    def create_key(self, client_id: int) -> tuple[KeyInfo, str]:
        self._require_client(client_id)
        key = apikeys.new_key()
        now = _now()
        with self._connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO importapi.api_keys (key_id, client_id, digest, created_at) VALUES (%s, %s, %s, %s)",
                (key.key_id, client_id, key.digest, now),
            )
            self._bump_catalog(conn)
        return KeyInfo(key.key_id, client_id, _iso(now) or "", None, None), key.api_key

    _KEY_COLUMNS = "key_id, client_id, created_at, last_used_at, revoked_at"

    @staticmethod
    def _key_info(row: Sequence[Any]) -> KeyInfo:
        return KeyInfo(row[0], row[1], _iso(row[2]) or "", _iso(row[3]), _iso(row[4]))

    def list_keys(self, client_id: int) -> list[KeyInfo]:
        self._require_client(client_id)
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {self._KEY_COLUMNS} FROM importapi.api_keys WHERE client_id = %s"
                " ORDER BY created_at, key_id", (client_id,),
            ).fetchall()
        return [self._key_info(r) for r in rows]

    def revoke_key(self, key_id: str) -> KeyInfo:
        with self._connection() as conn, conn.transaction():
            row = conn.execute(
                "UPDATE importapi.api_keys SET revoked_at = coalesce(revoked_at, %s) WHERE key_id = %s"
                f" RETURNING {self._KEY_COLUMNS}", (_now(), key_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"key {key_id!r} does not exist")
            self._bump_catalog(conn)
        return self._key_info(row)

    def find_key(self, key_id: str) -> StoredKey | None:
        with self._connection(timeout=PING_TIMEOUT) as conn:
            row = conn.execute(
                "SELECT key_id, client_id, digest, revoked_at IS NOT NULL FROM importapi.api_keys"
                " WHERE key_id = %s", (key_id,),
            ).fetchone()
        return StoredKey(row[0], row[1], bytes(row[2]), bool(row[3])) if row else None

    def touch_keys(self, last_used: dict[str, str]) -> None:
        with self._connection() as conn, conn.cursor() as cur:
            cur.executemany(
                "UPDATE importapi.api_keys SET last_used_at = %s WHERE key_id = %s",
                [(_stamp(ts), key_id) for key_id, ts in last_used.items()],
            )

    def catalog_version(self) -> int:
        # asked on the request path, on the server's event loop: wait briefly, not a pool's while
        with self._connection(timeout=PING_TIMEOUT) as conn:
            row = conn.execute("SELECT version FROM importapi.catalog_state").fetchone()
        return int(row[0]) if row else 0

    # -- pushes -----------------------------------------------------------
    def submit(self, client_id: int, batch: Batch, *, sandbox: bool = False) -> Future[PushResult]:
        if sandbox:
            return self._executor.submit(self._plan_only, client_id, batch)
        return self._executor.submit(self._push, client_id, batch)

    def _push(self, client_id: int, batch: Batch) -> PushResult:
        exclusive = False
        for _attempt in range(MAX_ATTEMPTS):
            try:
                # pipeline mode: BEGIN, the lock and the schema version go in one round trip
                with self._connection() as conn, conn.pipeline():
                    return self._push_once(conn, client_id, batch, exclusive)
            except _Retry as retry:
                exclusive = exclusive or retry.exclusive
        raise StorageUnavailable("the warehouse is too busy to take this push now; try again")

    def _push_once(self, conn: psycopg.Connection[Any], client_id: int, batch: Batch,
                   exclusive: bool) -> PushResult:
        try:
            with conn.transaction():
                lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
                conn.execute(f"SELECT {lock}(hashtextextended(%s, 0))", (_lock_key(client_id, batch.table),))
                sql = self._table_sql(conn, client_id, batch.table)
                schema = sql.schema if sql else None
                plan = make_plan(schema, batch, self.limits, self._inexact(conn, client_id, batch.table))
                if plan.changes_schema:
                    if not exclusive:
                        raise _Retry(exclusive=True)
                    sql = self._change_schema(conn, client_id, schema, plan)
                assert sql is not None
                rows = prepare_rows(plan, batch)
                inserted = self._upsert(conn, sql, rows.columns, rows.rows, rows.keys)
                self._touch_table(conn, client_id, batch.table)
        except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
            log.info("push to %s/%s retried: %s", client_id, batch.table, exc)
            raise _Retry(exclusive=exclusive) from exc
        except psycopg.OperationalError as exc:
            if not conn.broken:
                raise
            # a pooled connection the server dropped (a restart): try another. Even if this
            # one died while committing, writing the same rows again changes nothing.
            log.warning("push to %s/%s retried on another connection: %s", client_id, batch.table, exc)
            self._pool.check()  # the others are likely dead too: drop them now, not one by one
            raise _Retry(exclusive=exclusive) from exc
        return PushResult(batch.table, inserted, len(rows.point_keys) - inserted, plan.describe(), plan.kinds)

    def _plan_only(self, client_id: int, batch: Batch) -> PushResult:
        """The sandbox: what the push would do against the table as it is now; writes nothing."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            sql = self._table_sql(conn, client_id, batch.table)
            schema = sql.schema if sql else None
            plan = make_plan(schema, batch, self.limits, self._inexact(conn, client_id, batch.table))
            rows = prepare_rows(plan, batch)
            existing = self._existing(conn, client_id, schema, plan, rows.keys) if schema else set()
        inserted, replaced = count_changes(rows.point_keys, existing)
        return PushResult(batch.table, inserted, replaced, plan.describe())

    def _inexact(self, conn: psycopg.Connection[Any], client_id: int, table: str) -> Any:
        def holds_inexact(column: str) -> bool:
            c = q.quote(column)
            row = conn.execute(
                f"SELECT 1 FROM {q.table_ref(client_id, table)} WHERE {c} > %s OR {c} < %s LIMIT 1",
                (DOUBLE_EXACT, -DOUBLE_EXACT), prepare=False,
            ).fetchone()
            return row is not None

        return holds_inexact

    def _table_sql(self, conn: psycopg.Connection[Any], client_id: int, table: str) -> q.TableSQL | None:
        """The table's statements at its current schema version (None: no such table yet)."""
        try:
            row = conn.execute(
                f"SELECT version FROM {q.client_schema(client_id)}._importapi_tables WHERE name = %s", (table,)
            ).fetchone()
        except pg_errors.UndefinedTable as exc:
            raise NotFound(f"client {client_id} has no warehouse schema") from exc
        if row is None:
            self._tables.pop((client_id, table), None)
            return None
        cached = self._tables.get((client_id, table))
        if cached is not None and cached.version == row[0]:
            return cached
        schema = self._load_schemas(conn, client_id, table)[table]
        sql = self._tables[(client_id, table)] = q.TableSQL(client_id, schema, row[0])
        return sql

    def _load_schemas(self, conn: psycopg.Connection[Any], client_id: int,
                      table: str | None = None) -> dict[str, TableSchema]:
        s = q.client_schema(client_id)
        where, params = ("WHERE name = %s", (table,)) if table else ("", ())
        schemas = {
            name: TableSchema(name, tuple(keys), {}, _iso(created) or "")
            for name, keys, created in conn.execute(
                f"SELECT name, key_fields, created_at FROM {s}._importapi_tables {where}", params
            )
        }
        where = "WHERE table_name = %s" if table else ""
        for table_name, name, kind, widened in conn.execute(
            f"SELECT table_name, name, kind, widened_at FROM {s}._importapi_columns {where}"
            " ORDER BY table_name, position", params,
        ):
            schemas[table_name].columns[name] = Column(name, Kind.from_label(kind), _iso(widened))
        return schemas

    def _change_schema(self, conn: psycopg.Connection[Any], client_id: int, schema: TableSchema | None,
                       plan: Plan) -> q.TableSQL:
        now = _now()
        s, t = q.client_schema(client_id), q.table_ref(client_id, plan.table)
        if schema is None:
            created = TableSchema(plan.table, plan.key_fields, {c.name: c for c in plan.add})
            conn.execute(q.create_table(client_id, created))
            conn.execute(
                f"INSERT INTO {s}._importapi_tables (name, key_fields, created_at, last_push_at, version)"
                " VALUES (%s, %s, %s, %s, 1)", (plan.table, list(plan.key_fields), now, now),
            )
            position = 0
        else:
            parts = [f"ADD COLUMN {q.column_def(c.name, c.kind, False)}" for c in plan.add]
            parts += [
                f"ALTER COLUMN {q.quote(name)} TYPE {q.declared_type(new)} USING {q.widen_expr(q.quote(name), old, new)}"
                for name, old, new in plan.widen
            ]
            try:
                with conn.transaction():
                    conn.execute(f"ALTER TABLE {t} {', '.join(parts)}")
            except pg_errors.UniqueViolation as exc:
                raise BadRequest(
                    f"table {plan.table!r}: widening a key column would make two rows share a key"
                ) from exc
            conn.execute(f"UPDATE {s}._importapi_tables SET version = version + 1 WHERE name = %s",
                         (plan.table,))
            for name, _old, wider in plan.widen:
                conn.execute(
                    f"UPDATE {s}._importapi_columns SET kind = %s, widened_at = %s"
                    " WHERE table_name = %s AND name = %s", (wider.label, now, plan.table, name),
                )
            position = len(schema.columns)
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {s}._importapi_columns (table_name, name, kind, position, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(plan.table, c.name, c.kind.label, position + i, now) for i, c in enumerate(plan.add)],
            )
        sql = self._table_sql(conn, client_id, plan.table)
        assert sql is not None
        return sql

    def _upsert(self, conn: psycopg.Connection[Any], sql: q.TableSQL, columns: list[str],
                rows: list[Sequence[Any]], keys: list[Any]) -> int:
        """Write the rows in key order (concurrent pushes then lock rows in one order and
        cannot deadlock); the number of rows that were new."""
        try:
            order = sorted(range(len(rows)), key=keys.__getitem__)
        except TypeError:
            order = sorted(range(len(rows)), key=lambda i: repr(keys[i]))
        where = {name: j for j, name in enumerate(columns)}
        arrays = []
        for name, kind in zip(sql.columns, sql.kinds):
            j = where.get(name)
            arrays.append(_bind(kind, [None] * len(rows) if j is None else [rows[i][j] for i in order]))
        flags = conn.execute(sql.upsert, arrays).fetchall()
        return len(flags) if sql.all_keys else sum(1 for (new,) in flags if new)

    def _touch_table(self, conn: psycopg.Connection[Any], client_id: int, table: str) -> None:
        """Record the table's last push, at most once a second per process (a hot row)."""
        now = time.monotonic()
        if now - self._touched.get((client_id, table), -TOUCH_TABLE_SECONDS) < TOUCH_TABLE_SECONDS:
            return
        self._touched[(client_id, table)] = now
        conn.execute(f"UPDATE {q.client_schema(client_id)}._importapi_tables SET last_push_at = %s"
                     " WHERE name = %s", (_now(), table))

    def _existing(self, conn: psycopg.Connection[Any], client_id: int, schema: TableSchema, plan: Plan,
                  keys: list[Any]) -> set[Any]:
        widen = {name: (old, new) for name, old, new in plan.widen if name in plan.key_fields}
        sql = q.probe_existing(client_id, schema, widen)
        single = len(schema.key_fields) == 1
        columns = [list(keys)] if single else [list(c) for c in zip(*keys)]
        params = [_bind(plan.kinds[k], col) for k, col in zip(schema.key_fields, columns)]
        found = conn.execute(sql, params, prepare=False).fetchall()
        return {r[0] for r in found} if single else {tuple(r) for r in found}

    # -- reading ----------------------------------------------------------
    def tables(self, client_id: int) -> list[TableInfo]:
        self._require_client(client_id)
        s = q.client_schema(client_id)
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            schemas = self._load_schemas(conn, client_id)
            pushed = dict(conn.execute(f"SELECT name, last_push_at FROM {s}._importapi_tables").fetchall())
            infos = []
            for name in sorted(schemas):
                row = conn.execute(f"SELECT count(*) FROM {q.table_ref(client_id, name)}").fetchone()
                infos.append(TableInfo(schemas[name], int(row[0]) if row else 0, _iso(pushed.get(name))))
        return infos

    def query(self, client_id: int, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        self._require_client(client_id)
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(f"SET LOCAL search_path = {q.client_schema(client_id)}")
            try:
                with conn.transaction():
                    # stream() runs the SQL through the extended protocol, which takes exactly
                    # one statement: no "COMMIT; ..." can leave the read-only transaction
                    found = [tuple(r) for r in cur.stream(sql.encode())]
                    return [d.name for d in cur.description or ()], found
            except pg_errors.ReadOnlySqlTransaction as exc:
                raise BadRequest(f"query is read-only; this statement would write ({exc})") from exc
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise BadRequest(f"query failed: {exc}") from exc

    def read_rows(
        self, client_id: int, table: str, *, descending: bool = False, offset: int = 0,
        limit: int | None = None,
    ) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
        self._require_client(client_id)
        conn = self._getconn()
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            schema = self._load_schemas(conn, client_id, table).get(table)
            if schema is None:
                raise NotFound(f"client {client_id} has no table {table!r}")
        except BaseException as exc:
            self._putconn(conn)
            if isinstance(exc, psycopg.Error):
                raise StorageUnavailable(f"cannot read table {table!r} ({exc})") from exc
            raise
        direction = " DESC" if descending else ""
        order = ", ".join(q.quote(k) + direction for k in schema.key_fields)
        select = (f"SELECT {', '.join(q.quote(c) for c in schema.columns)} FROM {q.table_ref(client_id, table)}"
                  f" ORDER BY {order} LIMIT %s OFFSET %s")
        kinds = [c.kind for c in schema.columns.values()]
        released = threading.Event()

        def release() -> None:  # once: when the rows are read, or dropped unread
            if not released.is_set():
                released.set()
                self._putconn(conn)

        rows = self._stream(conn, select, (limit, offset), kinds, release)
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

    def _stream(self, conn: psycopg.Connection[Any], select: str, params: tuple[Any, ...],
                kinds: list[Kind], release: Callable[[], None]) -> Iterator[tuple[Any, ...]]:
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

    # -- the console --------------------------------------------------------
    def get_setting(self, name: str) -> str | None:
        with self._connection() as conn:
            row = conn.execute("SELECT value FROM importapi.settings WHERE name = %s", (name,)).fetchone()
        return str(row[0]) if row else None

    def set_setting(self, name: str, value: str, *, replace: bool = True) -> str:
        action = "DO UPDATE SET value = EXCLUDED.value" if replace else "DO NOTHING"
        with self._connection() as conn:
            conn.execute(f"INSERT INTO importapi.settings (name, value) VALUES (%s, %s) ON CONFLICT (name) {action}",
                         (name, value))
        stored = self.get_setting(name)
        assert stored is not None
        return stored

    _ACTIVITY = ("at, request_id, route, client_id, key_id, table_name, points, inserted, replaced,"
                 " sandbox, status, reasons")

    def record_activity(self, events: Sequence[Activity], keep: int) -> None:
        rows = [
            (e.refused, e.at, e.request_id, e.route, e.client_id, e.key_id, e.table, e.points,
             e.inserted, e.replaced, e.sandbox, e.status, msgspec.json.encode(list(e.reasons)).decode())
            for e in events
        ]
        prune = ("DELETE FROM importapi.activity WHERE refused = %s AND seq <= (SELECT seq FROM"
                 " importapi.activity WHERE refused = %s ORDER BY seq DESC LIMIT 1 OFFSET %s)")
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(f"INSERT INTO importapi.activity (refused, {self._ACTIVITY}) VALUES"
                            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
            for refused in {bool(r[0]) for r in rows}:
                cur.execute(prune, (refused, refused, keep))

    def recent_activity(self, limit: int, *, refused: bool) -> list[Activity]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {self._ACTIVITY} FROM importapi.activity WHERE refused = %s ORDER BY seq DESC LIMIT %s",
                (refused, limit),
            ).fetchall()
        return [
            Activity(at, rid, route, cid, key_id, table, points, inserted, replaced, bool(sandbox), status,
                     tuple(msgspec.json.decode(reasons)))
            for at, rid, route, cid, key_id, table, points, inserted, replaced, sandbox, status, reasons
            in rows
        ]

    # -- copying a warehouse ----------------------------------------------
    def export_catalog(self) -> CatalogDump:
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            clients = conn.execute("SELECT client_id, name, created_at FROM importapi.clients"
                                   " ORDER BY client_id").fetchall()
            keys = conn.execute(f"SELECT {self._KEY_COLUMNS}, digest FROM importapi.api_keys"
                                " ORDER BY created_at, key_id").fetchall()
            settings = conn.execute("SELECT name, value FROM importapi.settings ORDER BY name").fetchall()
        return CatalogDump(
            [ClientInfo(r[0], r[1], _iso(r[2]) or "") for r in clients],
            [(self._key_info(r), bytes(r[5])) for r in keys],
            dict(settings),
        )

    def restore_catalog(self, dump: CatalogDump) -> None:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CATALOG_LOCK,))
            if conn.execute("SELECT 1 FROM importapi.clients LIMIT 1").fetchone():
                raise BadRequest("the target warehouse already has clients; copy needs an empty one")
            for c in dump.clients:
                conn.execute("INSERT INTO importapi.clients (client_id, name, created_at) VALUES (%s, %s, %s)",
                             (c.client_id, c.name, _stamp(c.created_at)))
                for statement in q.client_ddl(c.client_id):
                    conn.execute(statement)
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO importapi.api_keys (key_id, client_id, digest, created_at, last_used_at,"
                    " revoked_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    [(k.key_id, k.client_id, digest, _stamp(k.created_at), _stamp(k.last_used_at),
                      _stamp(k.revoked_at)) for k, digest in dump.keys],
                )
                cur.executemany("INSERT INTO importapi.settings (name, value) VALUES (%s, %s)"
                                " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                                list(dump.settings.items()))
            self._bump_catalog(conn)

    def restore_table(self, client_id: int, schema: TableSchema, rows: Iterable[Sequence[Any]],
                      last_push_at: str | None = None) -> int:
        s = q.client_schema(client_id)
        kinds = [c.kind for c in schema.columns.values()]
        count = 0
        with self._connection() as conn, conn.transaction():
            conn.execute(q.create_table(client_id, schema))
            conn.execute(
                f"INSERT INTO {s}._importapi_tables (name, key_fields, created_at, last_push_at, version)"
                " VALUES (%s, %s, %s, %s, 1)",
                (schema.name, list(schema.key_fields), _stamp(schema.created_at), _stamp(last_push_at)),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {s}._importapi_columns (table_name, name, kind, position, created_at,"
                    " widened_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    [(schema.name, c.name, c.kind.label, i, _stamp(schema.created_at), _stamp(c.widened_at))
                     for i, c in enumerate(schema.columns.values())],
                )
                columns = ", ".join(q.quote(c) for c in schema.columns)
                with cur.copy(f"COPY {q.table_ref(client_id, schema.name)} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row([
                            None if v is None else (bool(v) if k is Kind.BOOLEAN else to_storage(v, k))
                            for v, k in zip(row, kinds)
                        ])
                        count += 1
        return count

    # -- health -----------------------------------------------------------
    def ping(self) -> None:
        with self._connection(timeout=PING_TIMEOUT) as conn:
            conn.execute("SELECT 1")

    def check_writable(self) -> None:
        with self._connection(timeout=PING_TIMEOUT) as conn:
            row = conn.execute("SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::boolean"
                               ).fetchone()
        if row and row[0]:
            raise StorageUnavailable("the warehouse database is read-only (a standby?)")

    def close(self) -> None:
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=True)
        self._pool.close()
