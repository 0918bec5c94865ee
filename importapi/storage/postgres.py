"""The production warehouse: PostgreSQL through psycopg 3 and a connection pool.

One schema per client (``client_<id>``) holds its tables and, beside them, their schemas
(``_importapi_tables``, ``_importapi_columns``), so a schema change commits atomically with
the rows that caused it; the catalog lives in the schema ``importapi``
(``postgres_catalog``). The layout and SQL text are in ``postgres_sql``, the statements of
a push in ``postgres_write``.

Many server processes may share one database. Pushes queue per process (``jobs.Groups``):
the pushes of one client waiting when a pooled connection comes free share its next
transaction, answered once it commits. A transaction holds a transaction-scoped advisory
lock on its client and each table it writes (taken in table order): shared for a table the
pushes fit as it is, exclusive for one whose schema they change. Under the lock the
table's schema version is read again, so a process never writes with a stale idea of a
table's columns, and two processes never change one table at once. Rows are written in
key order, so concurrent pushes to the same keys cannot deadlock.

The usual group, plain rows into one table whose statements the process holds, goes in one
round trip (``_at_once``): planned before the transaction, written by one statement that
checks the schema version under the lock. Any other goes the careful way: in one
transaction, each push in a savepoint of its own (``_group``), or alone (``_push``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq

from importapi import schema as planning
from importapi.errors import ImportApiError, NotFound, StorageUnavailable
from importapi.push import Push, PushResult
from importapi.schema import Plan, Rows, TableSchema
from importapi.settings import Limits
from importapi.storage import postgres_sql as q
from importapi.storage.base import Warehouse
from importapi.storage.jobs import Groups, Job, Outcome, answer
from importapi.storage.postgres_pool import PING_TIMEOUT, Pool
from importapi.storage.postgres_rows import bind, bound
from importapi.storage.postgres_write import PostgresWrites
from importapi.storage.sql import quote

log = logging.getLogger("importapi.storage")
T = TypeVar("T")

MAX_ATTEMPTS = 8
MAX_GROUP = 64
"""The most pushes one transaction takes (``jobs.Groups``)..."""
MAX_GROUP_ROWS = 20_000
"""... and the most rows, unless one push has more."""
SECOND_GROUP_ROWS = 1600
"""While a client's transaction runs, another of its own starts once this many rows wait."""


class _Retry(Exception):
    """The push must start again: with exclusive locks on these tables, or after a deadlock."""

    def __init__(self, exclusive: frozenset[str]) -> None:
        self.exclusive = exclusive


def _lock_key(client_id: int, table: str) -> str:
    return f"{client_id}/{table}"


class PostgresWarehouse(PostgresWrites, Warehouse):
    def __init__(self, pool: Pool, limits: Limits | None = None, pool_size: int = 8) -> None:
        super().__init__(pool)
        self.limits = limits or Limits()
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="importapi-pg")
        self._groups = Groups(
            self._executor,
            self._apply_group,
            running=pool_size,
            most=MAX_GROUP,
            most_rows=MAX_GROUP_ROWS,
            second_rows=SECOND_GROUP_ROWS,
        )

    def create_space(self, client_id: int) -> None:
        with self._connection() as conn, conn.transaction():
            for statement in q.client_ddl(client_id):
                conn.execute(statement)

    # -- pushes -----------------------------------------------------------
    def submit(self, push: Push) -> Future[list[PushResult]]:
        if push.sandbox:
            return self._executor.submit(self._plan_only, push)
        future: Future[list[PushResult]] = Future()
        self._groups.put(Job(push, future))
        return future

    async def push(self, push: Push) -> list[PushResult]:
        if push.sandbox:
            return await asyncio.wrap_future(self._executor.submit(self._plan_only, push))
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[list[PushResult]] = loop.create_future()
        self._groups.put(Job(push, None, loop, answered))
        return await answered

    def _apply_group(self, group: list[Job]) -> None:
        """Apply queued pushes of one client: several in one transaction, answered after its
        commit; one at a time when they cannot commit together."""
        try:
            outcomes = self._at_once(group)
        except (StorageUnavailable, NotFound) as exc:  # the group's own: no database, no client
            outcomes = [(job, exc) for job in group]
        if outcomes is None and len(group) > 1:
            outcomes = self._group(group)
        if outcomes is None:
            outcomes = [(job, self._alone(job.push)) for job in group]
        answer(outcomes)

    def _alone(self, push: Push) -> Outcome:
        try:
            return self._push(push)
        except Exception as exc:  # noqa: BLE001 - the push's answer, as it would have been raised to it
            return exc

    def _push(self, push: Push) -> list[PushResult]:
        self._upgrade(push.client_id)
        return self._transaction(
            push.client_id,
            [b.table for b in push.batches],
            lambda conn, exclusive: self._apply(conn, push, exclusive),
        )

    def _transaction(
        self, client_id: int, tables: list[str], work: Callable[[psycopg.Connection[Any], frozenset[str]], T]
    ) -> T:
        """``work`` in a transaction holding the tables' locks, started again (with exclusive
        locks where it asks for them, ``_Retry``) after a deadlock, a serialization failure
        or a connection the server dropped. Pipeline mode: BEGIN, the locks and the schema
        versions go in one round trip."""
        exclusive: frozenset[str] = frozenset()
        for _attempt in range(MAX_ATTEMPTS):
            try:
                with self._connection() as conn, conn.pipeline():
                    try:
                        with conn.transaction():
                            self._lock(conn, client_id, tables, exclusive)
                            return work(conn, exclusive)
                    except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                        log.info("push of client %s retried: %s", client_id, exc)
                        raise _Retry(exclusive) from exc
                    except psycopg.OperationalError as exc:
                        if not conn.broken:
                            raise
                        # a pooled connection the server dropped (a restart): try another. Even
                        # if this one died while committing, writing the same rows again changes
                        # nothing.
                        log.warning("push of client %s retried on another connection: %s", client_id, exc)
                        self._pool.check()  # the others are likely dead too: drop them now
                        raise _Retry(exclusive) from exc
            except _Retry as retry:
                exclusive = exclusive | retry.exclusive
        raise StorageUnavailable("the warehouse is too busy to take this push now; try again")

    def _at_once(self, group: list[Job]) -> list[tuple[Job, Outcome]] | None:
        """The usual case, in one round trip: pushes of plain rows into one table whose
        statements this process holds, planned before the transaction against the schema
        they were made for and written by one statement that checks, under the table's
        lock, that the schema is still that one. None: not this case, or the schema moved
        (another process changed the table), and the careful way applies."""
        first = group[0].push
        table = first.batches[0].table if first.batches else ""
        client_id = first.client_id
        sql = self._tables.get((client_id, table))
        if sql is None or (len(group) > 1 and not sql.keys_come_back):
            return None
        run: list[tuple[Job, Plan, Rows]] = []
        for job in group:
            if not job.push.joins(table):
                return None
            batch = job.push.batches[0]
            try:
                plan = planning.make_plan(sql.schema, batch, self.limits)
            except ImportApiError:
                return None
            rows = planning.prepare_rows(plan, batch)
            if (
                plan.changes_schema
                or rows.constants
                or not rows.rows
                or (run and rows.columns != run[0][2].columns)
            ):
                return None
            run.append((job, plan, rows))
        by_key: dict[Any, Any] = {}
        for _job, _plan, rows in run:  # a key in several pushes: the last push's row
            by_key.update(zip(rows.keys, rows.rows))
        merged = Rows(run[0][2].columns, list(by_key.values()), list(by_key), [])
        layout, params = bound(sql, merged)
        self._upgrade(client_id)
        with self._connection() as conn:
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    self._lock(conn, client_id, [table], frozenset())
                    version = conn.execute(sql.current_version, (table,))
                    found = conn.execute(sql.upsert_new(layout), [*params, table, sql.version])
                    self._touch_table(conn, client_id, table)
                    conn.execute("COMMIT")
            except psycopg.Error:
                log.info("pushes of client %s go the careful way", client_id, exc_info=True)
                if not conn.broken and conn.info.transaction_status != pq.TransactionStatus.IDLE:
                    with suppress(psycopg.Error):  # else the pool resets the connection
                        conn.rollback()
                return None
            row = version.fetchone()
            if row is None or row[0] != sql.version:  # nothing written: the schema moved
                self._tables.pop((client_id, table), None)
                return None
            keys = found.fetchall()
        if len(run) == 1:  # a push alone: the keys it inserted need not be compared
            counts = [len(keys)]
        else:
            new = {r[0] for r in keys} if len(sql.key_positions) == 1 else set(keys)
            counts = planning.inserted_each([rows.keys for _job, _plan, rows in run], new)
        return [
            (job, [PushResult(table, n, len(rows.point_keys) - n, plan.describe(), plan.kinds, rows.stale)])
            for (job, plan, rows), n in zip(run, counts)
        ]

    def _group(self, group: list[Job]) -> list[tuple[Job, Outcome]] | None:
        """The group's pushes in one transaction, each in a savepoint of its own: a refused
        push leaves the others. None: the group failed as a whole (a database error), and
        its pushes go one at a time."""
        client_id = group[0].push.client_id
        tables = [b.table for job in group for b in job.push.batches]
        try:
            self._upgrade(client_id)
            return self._transaction(
                client_id,
                tables,
                lambda conn, exclusive: [(job, self._in_group(conn, job.push, exclusive)) for job in group],
            )
        except (StorageUnavailable, NotFound) as exc:  # the group's own: no database, no client
            return [(job, exc) for job in group]
        except Exception:
            log.info(
                "a group of %d pushes of client %s goes one at a time", len(group), client_id, exc_info=True
            )
        return None

    def _in_group(self, conn: psycopg.Connection[Any], push: Push, exclusive: frozenset[str]) -> Outcome:
        """One push of a group, all or nothing within it: a savepoint."""
        try:
            with conn.transaction():
                return self._apply(conn, push, exclusive)
        except ImportApiError as exc:
            return exc

    @staticmethod
    def _lock(
        conn: psycopg.Connection[Any], client_id: int, tables: list[str], exclusive: frozenset[str]
    ) -> None:
        """The advisory lock of each table, in name order: no deadlock between pushes."""
        for table in sorted(set(tables)):
            lock = "pg_advisory_xact_lock" if table in exclusive else "pg_advisory_xact_lock_shared"
            conn.execute(f"SELECT {lock}(hashtextextended(%s, 0))", (_lock_key(client_id, table),))

    def _apply(
        self, conn: psycopg.Connection[Any], push: Push, exclusive: frozenset[str]
    ) -> list[PushResult]:
        """Plan every batch of the push, then write them, under the locks taken."""
        client_id = push.client_id
        planned = []
        for batch in push.batches:  # in the push's order: a subtable after its parent
            sql = self._table_sql(conn, client_id, batch.table)
            plan = planning.make_plan(
                sql.schema if sql else None, batch, self.limits, self._inexact(conn, client_id, batch.table)
            )
            planned.append((batch, sql, plan))
        wanted = frozenset(b.table for b, _sql, plan in planned if plan.changes_schema)
        if not wanted <= exclusive:
            raise _Retry(wanted)
        written: dict[str, set[Any]] = {}
        results = {b.table: self._write(conn, client_id, b, sql, plan, written) for b, sql, plan in planned}
        return [results[b.table] for b in push.batches]

    def _plan_only(self, push: Push) -> list[PushResult]:
        """The sandbox: what the push would do against the tables as they are now; writes nothing."""
        self._upgrade(push.client_id)
        results = []
        with self._connection() as conn, conn.transaction():
            # one snapshot: with no lock taken, a table's version and its columns must be
            # read as of one moment, or the statements kept for that version could be wrong
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
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
        params = [bind(schema.columns[k].kind, col) for k, col in zip(schema.key_fields, columns)]
        found = conn.execute(select, params, prepare=False).fetchall()
        return {(r[0] if width == 1 else tuple(r[:width])): (r[width], r[width + 1]) for r in found}

    def _existing(
        self, conn: psycopg.Connection[Any], client_id: int, schema: TableSchema, plan: Plan, keys: list[Any]
    ) -> set[Any]:
        widen = {name: (old, new) for name, old, new in plan.widen if name in plan.key_fields}
        sql = q.probe_existing(client_id, schema, widen)
        single = len(schema.key_fields) == 1
        columns = [list(keys)] if single else [list(c) for c in zip(*keys)]
        params = [bind(plan.kinds[k], col) for k, col in zip(schema.key_fields, columns)]
        found = conn.execute(sql, params, prepare=False).fetchall()
        return {r[0] for r in found} if single else {tuple(r) for r in found}

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
