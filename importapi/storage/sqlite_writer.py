"""The writer of one client's SQLite file: group commit, schema changes, upserts.

Pushes queue up for the file's one writer thread, which applies them together in one
transaction; a push that changes a table runs in a SAVEPOINT of its own, so a refused push
rolls back alone, and every push is answered only after the transaction holding it has
committed and its commit is on disk. Two more threads look after the WAL
(``sqlite_wal``): one flushes it to disk after each commit and then answers the pushes, the
other copies it back into the file (checkpoints), so the writer waits for neither.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import queue
import sqlite3
import threading
from concurrent.futures import Future
from itertools import chain
from pathlib import Path
from typing import Any

from importapi.errors import BadRequest, Code, ImportApiError, ServerError, StorageUnavailable
from importapi.kinds import timestamp_text, widen_stored
from importapi.push import Batch, Push, PushResult
from importapi.schema import (
    Plan,
    Rows,
    TableSchema,
    all_above,
    count_changes,
    drop_older,
    inserted_each,
    keep_children,
    make_plan,
    prepare_rows,
)
from importapi.settings import Limits
from importapi.storage.base import utcnow
from importapi.storage.jobs import Job, Outcome, Results, answer
from importapi.storage.sqlite_sql import (
    TableSQL,
    change_schema,
    connect,
    encode_rows,
    holds_inexact,
    json_rows_work,
    load_schemas,
    storage_error,
    widen_function,
)
from importapi.storage.sqlite_wal import Checkpointer, Flusher, checkpoint

log = logging.getLogger("importapi.storage")

MAX_GROUP = 64
# Past this rowid SQLite may pick new rowids at random instead of one above the largest.
_ROWIDS_IN_ORDER = 2**62
# The writer's page cache (SQLite's default is 2 MiB): the key index of a table taking keys
# in random order outgrows 2 MiB at about 150,000 rows, and then every upsert reads its pages
# back. 16 MiB per client file being written to; +6% records/s with random keys (A/B).
WRITER_CACHE_KIB = 16384
# A boolean is bound as the integer SQLite stores for it: the module binds an int at once,
# but looks a bool up among its adapters first, about a third of a six-field row's binding.
# (Any other value maps to itself: a boolean column holds only booleans and nulls.)
_AS_INT = {True: 1, False: 0}.get


class ClientWriter:
    """The single writer of one client's file; applies queued pushes by group commit."""

    def __init__(self, path: Path, limits: Limits, synchronous: str) -> None:
        self.path = path
        self.limits = limits
        self.synchronous = synchronous
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.schemas: dict[str, TableSchema] = {}
        self.sql: dict[str, TableSQL] = {}
        self.schema_version = -1
        self.pushed: set[str] = set()  # tables written by the group in progress
        self.written: dict[str, set[Any]] = {}  # the keys each table's batch wrote, in the push in progress
        self.last_rowid: dict[str, int] = {}  # each table's largest rowid, within the group in progress
        self.stamped: dict[str, str] = {}  # the last push time written (committed) for each table
        self.json_rows = False  # rows go to SQLite as one JSON text (json_rows_work)
        self.max_values = 999  # bound values per statement (SQLite's own limit, read when connecting)
        self.checkpointer = Checkpointer(path, synchronous)
        # FULL: commits flushed by the Flusher, off this thread (EXTRA keeps SQLite's own)
        self.flusher = Flusher(path) if synchronous == "FULL" else None
        self.thread = threading.Thread(target=self._run, name=f"writer-{path.stem}", daemon=True)
        self.thread.start()

    def submit(self, push: Push) -> Future[Results]:
        future: Future[Results] = Future()
        self.jobs.put(Job(push, future))
        return future

    def submit_from_loop(
        self, push: Push, loop: asyncio.AbstractEventLoop, answer: asyncio.Future[Results]
    ) -> None:
        """``submit`` for an event loop: ``answer`` is resolved on ``loop``."""
        self.jobs.put(Job(push, None, loop, answer))

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=30)
        self.checkpointer.stop()

    # -- the writer thread --------------------------------------------------
    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            job = self.jobs.get()
            if job is None:
                break
            group = [job]
            while len(group) < MAX_GROUP:
                try:
                    nxt = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.jobs.put(None)
                    break
                group.append(nxt)
            try:
                if conn is None:
                    conn = connect(self.path, "NORMAL" if self.flusher else self.synchronous)
                    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's job
                    conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
                    conn.create_function("_importapi_widen", 3, widen_function, deterministic=True)
                    self.json_rows = json_rows_work(conn)
                    self.max_values = min(32766, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
                if self.checkpointer.caught_up.is_set():
                    self._finish_checkpoint(conn)
                self._apply_group(conn, group)
                self.checkpointer.poke()
            except Exception as exc:  # the writer must outlive any one group
                log.exception("storage error on %s", self.path.name)
                error = storage_error(exc) if isinstance(exc, sqlite3.Error) else ServerError()
                answer([(j, error) for j in group])
                self._forget()
        if self.flusher is not None:
            self.flusher.stop()  # the last commits on disk and answered, before the file closes
        if conn is not None:
            conn.close()

    def _finish_checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy back the frames committed while the background checkpoint ran. Nothing else
        commits meanwhile (with one server process this thread is the file's only writer), so
        the WAL ends fully copied and the next commit starts it again from its first frame
        instead of appending to it."""
        self.checkpointer.caught_up.clear()
        try:
            checkpoint(conn)
        except sqlite3.Error:
            log.warning("checkpoint of %s failed; the next one will retry", self.path.name, exc_info=True)

    def _forget(self) -> None:
        self.schemas, self.sql, self.schema_version = {}, {}, -1

    def _refresh(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        if version != self.schema_version:
            self.schemas = load_schemas(conn)
            self.sql = {}
            self.schema_version = version

    def _apply_group(self, conn: sqlite3.Connection, group: list[Job]) -> None:
        """One transaction for the group. Each statement here costs the thread a wait for
        Python's lock when it ends, so a group runs as few as it can."""
        conn.execute("BEGIN IMMEDIATE")
        results: list[tuple[Job, Outcome]] = []
        stamps: dict[str, str] = {}
        try:
            self._refresh(conn)
            self.pushed.clear()
            self.last_rowid.clear()
            version = self.schema_version
            n = 0
            while n < len(group):
                merged = self._apply_together(conn, group, n)
                if merged:
                    results.extend(merged)
                    n += len(merged)
                else:
                    results.append((group[n], self._apply_one(conn, group[n], n)))
                    n += 1
            now = utcnow()
            for table in self.pushed:  # the time of the last push, to the second
                if self.stamped.get(table) != now:
                    conn.execute("UPDATE _importapi_tables SET last_push_at = ? WHERE name = ?", (now, table))
                    stamps[table] = now
            if self.schema_version != version:  # this group changed a table
                self.schema_version = conn.execute("PRAGMA schema_version").fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.stamped.clear()
            raise
        self.stamped.update(stamps)
        self._acknowledge(results)

    def _acknowledge(self, results: list[tuple[Job, Outcome]]) -> None:
        """Answer a committed group's pushes, once the commit is on disk: flushed here when no
        other push waits and no flush is under way (one hand-over less), else by the flusher
        while this thread goes on. A flush under way can take the disk's worst time (seen:
        a second): this thread waiting behind it would leave every push that comes meanwhile
        unwritten, to be applied only once it ends."""
        if self.flusher is None:
            answer(results)
            return

        def then(error: OSError | None) -> None:
            if error is None:
                answer(results)
            else:
                refusal = StorageUnavailable(f"the warehouse could not write to disk ({error})")
                answer([(job, refusal) for job, _outcome in results])

        if self.jobs.empty() and not self.flusher.flushing():
            then(self.flusher.flush_now())
        else:
            self.flusher.after_flush(then)

    def _apply_together(
        self, conn: sqlite3.Connection, group: list[Job], start: int
    ) -> list[tuple[Job, Outcome]]:
        """The group's pushes from ``start`` on that upsert plain rows into the same table
        (no schema change, no sequences, no subtables), written by one statement: the
        thread waits for Python's lock once after it, not once per push. Empty: none."""
        first = group[start].push
        table = first.batches[0].table if first.batches else ""
        if not first.joins(table) or table not in self.schemas:
            return []
        sql = self._statements(self.schemas[table])
        before = self._largest_rowid(conn, table, sql)
        if before is None:
            return []  # inserted keys are counted a push at a time (``_upsert``)
        run: list[tuple[Job, Plan, Rows]] = []
        layout = None
        for job in group[start:]:
            if not job.push.joins(table):
                break
            batch = job.push.batches[0]
            try:
                _batch, plan, rows = self._plan(conn, batch)
            except ImportApiError:
                break
            if (
                plan.changes_schema
                or rows.constants
                or not rows.rows
                or (layout is not None and tuple(rows.columns) != layout)
            ):
                break
            layout = tuple(rows.columns)
            run.append((job, plan, rows))
        if not run or layout is None:
            return []
        rows_of = [rows for _job, _plan, rows in run]
        merged = Rows(list(layout), list(chain.from_iterable(r.rows for r in rows_of)), [], [])
        self._write(conn, sql, merged, together=len(run) > 1)
        assert sql.max_rowid is not None
        (after,) = conn.execute(sql.max_rowid).fetchone()
        self.last_rowid[table] = after
        self.pushed.add(table)
        counts = self._inserted_each(conn, sql, [r.keys for r in rows_of], before, after)
        return [
            (job, [PushResult(table, n, len(rows.point_keys) - n, plan.describe(), plan.kinds, rows.stale)])
            for (job, plan, rows), n in zip(run, counts)
        ]

    @staticmethod
    def _inserted_each(
        conn: sqlite3.Connection, sql: TableSQL, keys: list[list[Any]], before: int, after: int
    ) -> list[int]:
        """How many keys each push inserted, its pushes written in order by one upsert that
        took the table's largest rowid from ``before`` to ``after``."""
        if len(keys) == 1 or after == before:
            return [int(after - before)] + [0] * (len(keys) - 1)
        distinct: set[Any] = set().union(*keys)
        if after - before == len(distinct):  # every key new
            return inserted_each(keys, distinct)
        assert sql.keys_after is not None
        found = conn.execute(sql.keys_after, (before,)).fetchall()
        return inserted_each(keys, {r[0] for r in found} if sql.key_width == 1 else set(found))

    def _apply_one(self, conn: sqlite3.Connection, job: Job, n: int) -> Outcome:
        push = job.push
        self.written = {}
        try:
            planned = [self._plan(conn, batch) for batch in push.batches]
            if push.sandbox:
                return [self._sandbox(conn, batch, plan, rows) for batch, plan, rows in planned]
        except ImportApiError as exc:
            return exc
        if not any(plan.changes_schema for _batch, plan, _rows in planned):
            return [self._write_batch(conn, batch, plan, rows) for batch, plan, rows in planned]
        # A change can still be refused here (widening a key column can make two rows share
        # a key): the push rolls back alone, in a savepoint of its own.
        conn.execute(f"SAVEPOINT push{n}")
        results = []
        table = ""
        try:
            for batch, plan, rows in planned:
                table = batch.table
                if plan.changes_schema:
                    self._change_schema(conn, self.schemas.get(batch.table), plan)
                    self.schema_version = -2  # changed by this group: read again before COMMIT
                    self.last_rowid.pop(batch.table, None)
                results.append(self._write_batch(conn, batch, plan, rows))
        except sqlite3.IntegrityError as exc:
            conn.execute(f"ROLLBACK TO push{n}")
            conn.execute(f"RELEASE push{n}")
            self.schema_version = -1
            self._refresh(conn)
            for batch in push.batches:
                self.last_rowid.pop(batch.table, None)
            return BadRequest(
                f"table {table!r}: widening a key column would make two rows share a key ({exc})",
                code=Code.KEY_WIDENING_COLLISION,
            )
        conn.execute(f"RELEASE push{n}")
        return results

    def _plan(self, conn: sqlite3.Connection, batch: Batch) -> tuple[Batch, Plan, Rows]:
        schema = self.schemas.get(batch.table)
        plan = make_plan(schema, batch, self.limits, lambda column: holds_inexact(conn, batch.table, column))
        now = timestamp_text(dt.datetime.now(dt.UTC)) if batch.stamp else None
        return batch, plan, prepare_rows(plan, batch, now)

    def _sandbox(self, conn: sqlite3.Connection, batch: Batch, plan: Plan, rows: Rows) -> PushResult:
        schema = self.schemas.get(batch.table)
        rows, stale = self._drop_older(conn, schema, plan, rows)
        existing = self._existing(conn, schema, plan, rows.keys)
        inserted, replaced = count_changes(rows.point_keys, existing)
        return PushResult(batch.table, inserted, replaced, plan.describe(), stale=rows.stale + stale)

    def _write_batch(self, conn: sqlite3.Connection, batch: Batch, plan: Plan, rows: Rows) -> PushResult:
        schema = self.schemas[batch.table]
        sql = self._statements(schema)
        rows, stale = self._drop_older(conn, schema, plan, rows)
        if batch.parent is not None:  # a subtable: only the rows of parents written
            rows = keep_children(rows, batch.parent_keys, self.written.get(batch.parent, set()))
        inserted = self._upsert(conn, sql, schema, plan, rows) if rows.rows else 0
        if batch.nested:  # the rows just written lose the subtable rows they had
            self.written[batch.table] = set(rows.keys)
            self._for_subtables(
                conn,
                batch.table,
                lambda s, sub: (
                    (s.deleting_children(sub.parent_keys), (encode_rows(rows.keys),)) if rows.keys else None
                ),
            )
        deleted = 0
        if plan.activate is not None and batch.version is not None:
            conn.execute(
                "UPDATE _importapi_tables SET table_version = ? WHERE name = ?", (plan.activate, plan.table)
            )
            schema.version = plan.activate
            if batch.version in schema.columns:
                deleted = conn.execute(sql.deleting_older(batch.version), (plan.activate,)).rowcount
                self.last_rowid.pop(batch.table, None)  # the largest may be among them
            if deleted:  # their subtables' rows go with them
                self._for_subtables(
                    conn,
                    batch.table,
                    lambda s, sub: (s.deleting_orphans(sub.parent_keys, schema.name, schema.key_fields), ()),
                )
        self.pushed.add(batch.table)
        replaced = len(rows.point_keys) - inserted
        return PushResult(
            batch.table, inserted, replaced, plan.describe(), plan.kinds, rows.stale + stale, deleted
        )

    def _for_subtables(self, conn: sqlite3.Connection, table: str, statement: Any) -> None:
        """Run, on each subtable of ``table``, the statement ``statement(its SQL, its schema)``
        gives (as ``(sql, params)``, or None for nothing)."""
        for sub in list(self.schemas.values()):
            if sub.parent == table:
                made = statement(self._statements(sub), sub)
                if made is not None:
                    conn.execute(*made)
                    self.last_rowid.pop(sub.name, None)  # rows deleted: the largest rowid may be among them

    def _drop_older(
        self, conn: sqlite3.Connection, schema: TableSchema | None, plan: Plan, rows: Rows
    ) -> tuple[Rows, int]:
        """Leave out the rows the stored ones win over (``schema.replaces``). This writer
        holds the file's write lock: nothing changes between this read and the write."""
        if rows.sequence is None or schema is None or plan.create or not rows.rows:
            return rows, 0
        sequence = rows.columns[rows.sequence]
        version = rows.version_name or sequence
        if sequence not in schema.columns or version not in schema.columns:
            return rows, 0
        sql = self._statements(schema)
        if sql.max_key is not None and all_above(rows.keys, conn.execute(sql.max_key).fetchone()[0]):
            return rows, 0  # every key is new: no stored row to win over one
        probe = sql.existing(sequence, version)
        found = conn.execute(probe, (encode_rows(rows.keys),)).fetchall()
        width = len(schema.key_fields)
        stored = {(r[0] if width == 1 else tuple(r[:width])): (r[width], r[width + 1]) for r in found}
        if rows.version_name is None:
            stored = {k: (s, None) for k, (s, _) in stored.items()}
        return drop_older(rows, stored)

    def _upsert(
        self, conn: sqlite3.Connection, sql: TableSQL, schema: TableSchema | None, plan: Plan, rows: Rows
    ) -> int:
        """Write the rows; return how many distinct keys were new (data points inserted)."""
        table = plan.table
        before = self._largest_rowid(conn, table, sql)
        if before is None:  # inserts cannot be counted by rowid: probe
            existing = self._existing(conn, schema, plan, rows.keys)
            self._write(conn, sql, rows)
            self.last_rowid.pop(table, None)
            return count_changes(rows.point_keys, existing)[0]
        self._write(conn, sql, rows)
        assert sql.max_rowid is not None
        (after,) = conn.execute(sql.max_rowid).fetchone()
        self.last_rowid[table] = after
        return int(after - before)

    def _largest_rowid(self, conn: sqlite3.Connection, table: str, sql: TableSQL) -> int | None:
        """The table's largest rowid in the group in progress (read once, then kept up to
        date); None when rowids cannot count inserts: every rowid alias is a column, or
        rowids may no longer come in order."""
        if sql.max_rowid is None:
            return None
        before = self.last_rowid.get(table)
        if before is None:
            (before,) = conn.execute(sql.max_rowid).fetchone()
            self.last_rowid[table] = before
        return None if before >= _ROWIDS_IN_ORDER else int(before)

    def _write(self, conn: sqlite3.Connection, sql: TableSQL, rows: Rows, together: bool = False) -> None:
        """A push's rows in statements of ``max_values`` bound values each (SQLite's limit;
        SQLite 3.40 parses a JSON row again for each of its columns, so wide rows by the
        thousand go faster bound), and the rows left over, fewer than one such statement
        takes, as one JSON text: every statement text stays prepared in the connection's
        cache (128 of them, a bound one about a megabyte for a thousand rows), so bound
        statements are of one size only and the JSON one serves every number of rows. A
        group's pushes written ``together`` go as one JSON text whatever their number.
        Without JSON (an SQLite older than 3.38) every row is bound."""
        layout = tuple(rows.columns)
        width = len(layout)
        # the statement picks the table's columns from the rows, in whatever order they come,
        # and binds the columns of one value for all the rows once
        given = [(c, v) for c, v in rows.constants.items() if c in sql.columns]
        names, once = tuple(c for c, _ in given), [v for _, v in given]
        per = max(1, (self.max_values - len(once)) // width)
        bound = len(rows.rows) if not self.json_rows else 0 if together else len(rows.rows) // per * per
        flags = [len(once) + j for j, c in enumerate(layout) if c in sql.booleans]
        for start in range(0, bound, per):
            chunk = rows.rows[start : start + per]
            values = [*once, *chain.from_iterable(chunk)]
            for at in flags:  # a column's values: every width-th from its place, in C
                column = values[at::width]
                values[at::width] = map(_AS_INT, column, column)
            conn.execute(sql.upsert_mapped(layout, names, len(chunk)), values)
        if bound < len(rows.rows):
            rest = rows.rows[bound:] if bound else rows.rows
            conn.execute(sql.upsert_rows_mapped(layout, names), (encode_rows(rest), *once))

    def _statements(self, schema: TableSchema) -> TableSQL:
        sql = self.sql.get(schema.name)
        if sql is None:
            sql = self.sql[schema.name] = TableSQL(schema)
        return sql

    def _existing(
        self, conn: sqlite3.Connection, schema: TableSchema | None, plan: Plan, keys: list[Any]
    ) -> set[Any]:
        """Which of these keys the table already holds, as values of the planned key kinds."""
        if schema is None or not keys:
            return set()
        sql = self._statements(schema)
        single = sql.key_width == 1
        found: list[Any] = conn.execute(sql.existing(), (encode_rows(keys),)).fetchall()
        widened = {name: (old, new) for name, old, new in plan.widen if name in plan.key_fields}
        if widened:
            kinds = [widened.get(k) for k in schema.key_fields]
            found = [
                tuple(v if w is None else widen_stored(v, *w) for v, w in zip(row, kinds)) for row in found
            ]
        return {row[0] for row in found} if single else set(found)

    def _change_schema(self, conn: sqlite3.Connection, schema: TableSchema | None, plan: Plan) -> None:
        schema = change_schema(conn, schema, plan)
        self.schemas[plan.table] = schema
        self.sql.pop(plan.table, None)
        self._statements(schema)
