"""The writer of one client's SQLite file: group commit, schema changes, upserts.

Pushes queue up for the file's one writer thread, which applies them together in one
transaction, each in a SAVEPOINT of its own: a refused push rolls back alone, and every push
is answered only after the transaction holding it has committed. A second thread copies the
WAL back into the file (checkpoints), so a commit never waits for that. Also here: the one
function that quotes identifiers, and the SQLite type of each column kind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from importapi.errors import BadRequest, ImportApiError, ServerError, StorageUnavailable
from importapi.kinds import DOUBLE_EXACT, INT64_MAX, INT64_MIN, Kind, widen_stored
from importapi.records import Batch, Limits
from importapi.schema import Column, Plan, Rows, TableSchema, count_changes, make_plan, prepare_rows
from importapi.storage.base import PushResult, utcnow

log = logging.getLogger("importapi.storage")

SQL_TYPES = {
    Kind.BOOLEAN: "BOOLEAN",
    Kind.INTEGER: "INTEGER",
    Kind.DOUBLE: "REAL",
    Kind.DECIMAL: "TEXT",
    Kind.TEXT: "TEXT",
    Kind.JSON: "TEXT",
}
MAX_GROUP = 64
# Past this rowid SQLite may pick new rowids at random instead of one above the largest.
_ROWIDS_IN_ORDER = 2**62
BUSY_TIMEOUT_MS = 10_000
# Once the WAL holds this many frames (32 MiB of 4 KiB pages), the writer finishes the next
# background checkpoint so that the WAL starts over (see _Checkpointer); below it, the WAL
# is left to grow and the writer spends nothing on checkpoints.
RESTART_WAL_FRAMES = 8192
# The writer's page cache (SQLite's default is 2 MiB): the key index of a table taking keys
# in random order outgrows 2 MiB at about 150,000 rows, and then every upsert reads its pages
# back. 16 MiB per client file being written to; +6% records/s with random keys (A/B).
WRITER_CACHE_KIB = 16384


def quote(name: str) -> str:
    """The one place identifiers are quoted: every name is a quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def connect(path: Path | str, synchronous: str = "FULL", **kwargs: Any) -> sqlite3.Connection:
    conn: sqlite3.Connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, **kwargs)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def storage_error(exc: sqlite3.Error) -> ImportApiError:
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and any(
        w in text for w in ("locked", "busy", "disk", "full", "unable to open", "readonly")
    ):
        return StorageUnavailable(f"the warehouse cannot take writes right now ({exc})")
    return ServerError()


def _widen_function(value: Any, old: str, new: str) -> Any:
    return widen_stored(value, Kind.from_label(old), Kind.from_label(new))


def _holds_inexact(conn: sqlite3.Connection, table: str, column: str) -> bool:
    """Does an integer column hold a value that a double would round?"""
    c = quote(column)
    sql = f"SELECT 1 FROM {quote(table)} WHERE {c} > ? OR {c} < ? LIMIT 1"
    return conn.execute(sql, (DOUBLE_EXACT, -DOUBLE_EXACT)).fetchone() is not None


# Doubles whose text is hardest to read back exactly: the extremes, subnormals, halfway cases.
_HARD_DOUBLES = (0.1, 1 / 3, -2.5e-8, 5e-324, 2.2250738585072014e-308, 2.225073858507201e-308,
                 1.7976931348623157e308, 9007199254740993.0, 0.30000000000000004, 1e23, 8.41e21,
                 4.35679e-10, 123456789012345.67, -0.0)


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
        back = conn.execute("SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?)",
                            (encode_rows(rows),)).fetchall()
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


def load_schemas(conn: sqlite3.Connection) -> dict[str, TableSchema]:
    schemas: dict[str, TableSchema] = {}
    for name, key_fields, created_at in conn.execute(
        "SELECT name, key_fields, created_at FROM _importapi_tables"
    ):
        schemas[name] = TableSchema(name, tuple(json.loads(key_fields)), {}, created_at)
    for table, name, kind, widened_at in conn.execute(
        "SELECT table_name, name, kind, widened_at FROM _importapi_columns ORDER BY table_name, position"
    ):
        schemas[table].columns[name] = Column(name, Kind.from_label(kind), widened_at)
    return schemas


@dataclass
class _Job:
    """A queued push, answered through a thread's future or an event loop's."""

    batch: Batch
    sandbox: bool
    future: Future[PushResult] | None
    loop: asyncio.AbstractEventLoop | None = None
    answer: asyncio.Future[PushResult] | None = None


def _deliver(outcomes: list[tuple[asyncio.Future[PushResult], PushResult | BaseException]]) -> None:
    """On the event loop: answer every push of a group at once."""
    for answer, outcome in outcomes:
        if answer.done():  # the request was cancelled (its client went away)
            continue
        if isinstance(outcome, BaseException):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)


def _answer(jobs: list[tuple[_Job, PushResult | BaseException]]) -> None:
    """Resolve each job's future; pushes from event loops with one call per loop, not one
    wake-up and hand-over per push."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[PushResult], PushResult | BaseException]]] = {}
    for job, outcome in jobs:
        if job.loop is not None and job.answer is not None:
            by_loop.setdefault(job.loop, []).append((job.answer, outcome))
        elif job.future is not None and not job.future.done():
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
    for loop, outcomes in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver, outcomes)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


class TableSQL:
    """Statements for one table at one schema, built once and reused."""

    def __init__(self, schema: TableSchema, max_points: int) -> None:
        t = quote(schema.name)
        cols = list(schema.columns)
        keys = list(schema.key_fields)
        col_list = ", ".join(quote(c) for c in cols)
        marks = ", ".join("?" for _ in cols)
        others = [c for c in cols if c not in schema.key_fields]
        conflict = ", ".join(quote(k) for k in keys)
        if others:
            update = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in others)
            action = f"DO UPDATE SET {update}"
        else:
            action = "DO NOTHING"
        self.columns = cols
        self.upsert = f"INSERT INTO {t} ({col_list}) VALUES ({marks}) ON CONFLICT ({conflict}) {action}"
        # The same upsert taking all rows as one JSON array of arrays: one statement, one
        # step, for the whole push (see ``json_rows_work``). WHERE true: SQLite's parser
        # needs it between a SELECT and ON CONFLICT.
        values = ", ".join(f"value ->> {i}" for i in range(len(cols)))
        self.upsert_rows = (f"INSERT INTO {t} ({col_list}) SELECT {values} FROM json_each(?) WHERE true"
                            f" ON CONFLICT ({conflict}) {action}")
        key_cols = ", ".join(quote(k) for k in keys)
        if len(keys) == 1:
            probe = ", ".join("?" for _ in range(max_points))
            self.existing = f"SELECT {key_cols} FROM {t} WHERE {key_cols} IN ({probe})"
        else:
            row = "(" + ", ".join("?" for _ in keys) + ")"
            probe = ", ".join(row for _ in range(max_points))
            self.existing = f"SELECT {key_cols} FROM {t} WHERE ({key_cols}) IN (VALUES {probe})"
        self.key_width = len(keys)
        self.max_points = max_points
        # A new row gets the rowid one above the table's largest, and a replaced row keeps
        # its own: so the largest rowid after an upsert less the largest before is how many
        # keys it inserted, without probing each key.
        lower = {c.lower() for c in cols}
        rowid = next((a for a in ("rowid", "_rowid_", "oid") if a not in lower), None)
        self.max_rowid = f"SELECT coalesce(max({rowid}), 0) FROM {t}" if rowid else None


class _Checkpointer:
    """Copies the WAL back into the database file in the background.

    The writer turns SQLite's automatic checkpoint off, so a commit never pays for copying
    pages; this thread runs a PASSIVE checkpoint (which never blocks the writer) at most
    every ``interval`` seconds while commits keep coming. The WAL starts again from its first
    frame only once every frame in it has been copied back: a writer that never pauses commits
    more frames while each checkpoint runs, so once the WAL holds ``RESTART_WAL_FRAMES``,
    ``caught_up`` asks the writer to copy that short tail itself
    (``ClientWriter._finish_checkpoint``); without it the WAL only grows.
    """

    def __init__(self, path: Path, synchronous: str, interval: float = 0.5) -> None:
        self.path, self.synchronous, self.interval = path, synchronous, interval
        self.dirty = threading.Event()
        self.stopping = threading.Event()
        self.caught_up = threading.Event()  # the WAL has grown long: the writer finishes a checkpoint
        self.thread = threading.Thread(target=self._run, name=f"checkpoint-{path.stem}", daemon=True)
        self.thread.start()

    def poke(self) -> None:
        self.dirty.set()

    def stop(self) -> None:
        self.stopping.set()
        self.dirty.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self.stopping.is_set():
            self.dirty.wait()
            self.dirty.clear()
            try:
                conn = conn or connect(self.path, self.synchronous)
                _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames >= RESTART_WAL_FRAMES:
                    self.caught_up.set()
            except sqlite3.Error:
                log.warning("checkpoint of %s failed; the next one will retry", self.path.name,
                            exc_info=True)
            self.stopping.wait(self.interval)
        if conn is not None:
            conn.close()


class ClientWriter:
    """The single writer of one client's file; applies queued pushes by group commit."""

    def __init__(self, path: Path, limits: Limits, synchronous: str) -> None:
        self.path = path
        self.limits = limits
        self.synchronous = synchronous
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.schemas: dict[str, TableSchema] = {}
        self.sql: dict[str, TableSQL] = {}
        self.schema_version = -1
        self.pushed: set[str] = set()  # tables written by the group in progress
        self.last_rowid: dict[str, int] = {}  # each table's largest rowid, within the group in progress
        self.stamped: dict[str, str] = {}  # the last push time written (committed) for each table
        self.json_rows = False  # rows go to SQLite as one JSON text (json_rows_work)
        self.checkpointer = _Checkpointer(path, synchronous)
        self.thread = threading.Thread(target=self._run, name=f"writer-{path.stem}", daemon=True)
        self.thread.start()

    def submit(self, batch: Batch, sandbox: bool) -> Future[PushResult]:
        future: Future[PushResult] = Future()
        self.jobs.put(_Job(batch, sandbox, future))
        return future

    def submit_from_loop(self, batch: Batch, sandbox: bool, loop: asyncio.AbstractEventLoop,
                         answer: asyncio.Future[PushResult]) -> None:
        """``submit`` for an event loop: ``answer`` is resolved on ``loop``."""
        self.jobs.put(_Job(batch, sandbox, None, loop, answer))

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
                    conn = connect(self.path, self.synchronous)
                    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's job
                    conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
                    conn.create_function("_importapi_widen", 3, _widen_function, deterministic=True)
                    self.json_rows = json_rows_work(conn)
                if self.checkpointer.caught_up.is_set():
                    self._finish_checkpoint(conn)
                self._apply_group(conn, group)
                self.checkpointer.poke()
            except Exception as exc:  # the writer must outlive any one group
                log.exception("storage error on %s", self.path.name)
                error = storage_error(exc) if isinstance(exc, sqlite3.Error) else ServerError()
                _answer([(j, error) for j in group])
                self._forget()
        if conn is not None:
            conn.close()

    def _finish_checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy back the frames committed while the background checkpoint ran. Nothing else
        commits meanwhile (with one server process this thread is the file's only writer), so
        the WAL ends fully copied and the next commit starts it again from its first frame
        instead of appending to it."""
        self.checkpointer.caught_up.clear()
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
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

    def _apply_group(self, conn: sqlite3.Connection, group: list[_Job]) -> None:
        """One transaction for the group. Each statement here costs the thread a wait for
        Python's lock when it ends, so a group runs as few as it can."""
        conn.execute("BEGIN IMMEDIATE")
        results: list[tuple[_Job, PushResult | BaseException]] = []
        stamps: dict[str, str] = {}
        try:
            self._refresh(conn)
            self.pushed.clear()
            self.last_rowid.clear()
            version = self.schema_version
            for n, job in enumerate(group):
                results.append((job, self._apply_one(conn, job, n)))
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
        _answer(results)

    def _apply_one(self, conn: sqlite3.Connection, job: _Job, n: int) -> PushResult | BaseException:
        batch = job.batch
        try:
            schema = self.schemas.get(batch.table)
            plan = make_plan(schema, batch, self.limits,
                             lambda column: _holds_inexact(conn, batch.table, column))
            rows = prepare_rows(plan, batch)
            if job.sandbox:
                existing = self._existing(conn, schema, plan, rows.keys)
                inserted, replaced = count_changes(rows.point_keys, existing)
                return PushResult(batch.table, inserted, replaced, plan.describe())
        except ImportApiError as exc:
            return exc
        if plan.changes_schema:
            # A change can still be refused here (widening a key column can make two rows
            # share a key): it rolls back alone, in a savepoint of its own.
            conn.execute(f"SAVEPOINT push{n}")
            try:
                self._change_schema(conn, schema, plan)
                self.schema_version = -2  # changed by this group: read again before COMMIT
            except sqlite3.IntegrityError as exc:
                conn.execute(f"ROLLBACK TO push{n}")
                conn.execute(f"RELEASE push{n}")
                self.schema_version = -1
                self._refresh(conn)
                self.last_rowid.pop(batch.table, None)
                return BadRequest(
                    f"table {batch.table!r}: widening a key column would make two rows share a key ({exc})"
                )
            conn.execute(f"RELEASE push{n}")
            self.last_rowid.pop(batch.table, None)
        inserted = self._upsert(conn, self._statements(self.schemas[batch.table]), schema, plan, rows)
        self.pushed.add(batch.table)
        return PushResult(batch.table, inserted, len(batch.points) - inserted, plan.describe(), plan.kinds)

    def _upsert(self, conn: sqlite3.Connection, sql: TableSQL, schema: TableSchema | None,
                plan: Plan, rows: Rows) -> int:
        """Write the rows; return how many distinct keys were new (data points inserted)."""
        table = plan.table
        before = self.last_rowid.get(table)
        if before is None and sql.max_rowid is not None:
            (before,) = conn.execute(sql.max_rowid).fetchone()
        if sql.max_rowid is None or before is None or before >= _ROWIDS_IN_ORDER:
            # every rowid alias is a column, or rowids may no longer come in order: probe
            existing = self._existing(conn, schema, plan, rows.keys)
            self._write(conn, sql, rows)
            self.last_rowid.pop(table, None)
            return count_changes(rows.point_keys, existing)[0]
        self._write(conn, sql, rows)
        (after,) = conn.execute(sql.max_rowid).fetchone()
        self.last_rowid[table] = after
        return int(after - before)

    def _write(self, conn: sqlite3.Connection, sql: TableSQL, rows: Rows) -> None:
        if self.json_rows:
            conn.execute(sql.upsert_rows, (encode_rows(rows.rows),))
        else:
            conn.executemany(sql.upsert, rows.rows)

    def _statements(self, schema: TableSchema) -> TableSQL:
        sql = self.sql.get(schema.name)
        if sql is None:
            sql = self.sql[schema.name] = TableSQL(schema, self.limits.max_points)
        return sql

    def _existing(
        self, conn: sqlite3.Connection, schema: TableSchema | None, plan: Plan, keys: list[Any]
    ) -> set[Any]:
        """Which of these keys the table already holds, as values of the planned key kinds."""
        if schema is None:
            return set()
        sql = self._statements(schema)
        single = sql.key_width == 1
        params: list[Any] = list(keys) if single else [v for key in keys for v in key]
        params.extend([None] * (sql.max_points * sql.key_width - len(params)))
        found: list[Any] = conn.execute(sql.existing, params).fetchall()
        widened = {name: (old, new) for name, old, new in plan.widen if name in plan.key_fields}
        if widened:
            kinds = [widened.get(k) for k in schema.key_fields]
            found = [
                tuple(v if w is None else widen_stored(v, *w) for v, w in zip(row, kinds))
                for row in found
            ]
        return {row[0] for row in found} if single else set(found)

    def _change_schema(self, conn: sqlite3.Connection, schema: TableSchema | None, plan: Plan) -> None:
        now = utcnow()
        t = quote(plan.table)
        if schema is None:
            defs = ", ".join(
                f"{quote(c.name)} {SQL_TYPES[c.kind]}" + (" NOT NULL" if c.name in plan.key_fields else "")
                for c in plan.add
            )
            conn.execute(f"CREATE TABLE {t} ({defs})")
            self._create_key_index(conn, plan)
            conn.execute(
                "INSERT INTO _importapi_tables (name, key_fields, created_at) VALUES (?, ?, ?)",
                (plan.table, json.dumps(list(plan.key_fields)), now),
            )
            schema = TableSchema(plan.table, plan.key_fields, {}, now)
        else:
            schema = TableSchema(schema.name, schema.key_fields, dict(schema.columns), schema.created_at)
            for c in plan.add:
                conn.execute(f"ALTER TABLE {t} ADD COLUMN {quote(c.name)} {SQL_TYPES[c.kind]}")
        position = len(schema.columns)
        for c in plan.add:
            conn.execute(
                "INSERT INTO _importapi_columns (table_name, name, kind, position, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (plan.table, c.name, c.kind.label, position, now),
            )
            schema.columns[c.name] = Column(c.name, c.kind)
            position += 1
        if plan.widen:
            for name, _old, new in plan.widen:
                schema.columns[name] = Column(name, new, now)
                conn.execute(
                    "UPDATE _importapi_columns SET kind = ?, widened_at = ? WHERE table_name = ? AND name = ?",
                    (new.label, now, plan.table, name),
                )
            self._rebuild(conn, schema, plan)
        self.schemas[plan.table] = schema
        self.sql.pop(plan.table, None)
        self._statements(schema)

    def _create_key_index(self, conn: sqlite3.Connection, plan: Plan) -> None:
        keys = ", ".join(quote(k) for k in plan.key_fields)
        index = quote(f"_importapi_key_{plan.table}")
        conn.execute(f"CREATE UNIQUE INDEX {index} ON {quote(plan.table)} ({keys})")

    def _rebuild(self, conn: sqlite3.Connection, schema: TableSchema, plan: Plan) -> None:
        """Widen columns: SQLite cannot change a column's type, so the table is rebuilt."""
        t, tmp = quote(plan.table), quote(f"_importapi_rebuild_{plan.table}")
        widened = {name: (old, new) for name, old, new in plan.widen}
        defs = ", ".join(
            f"{quote(c.name)} {SQL_TYPES[c.kind]}" + (" NOT NULL" if c.name in plan.key_fields else "")
            for c in schema.columns.values()
        )
        cols = ", ".join(quote(c) for c in schema.columns)
        exprs = ", ".join(
            f"_importapi_widen({quote(c)}, '{widened[c][0].label}', '{widened[c][1].label}')"
            if c in widened
            else quote(c)
            for c in schema.columns
        )
        conn.execute(f"CREATE TABLE {tmp} ({defs})")
        conn.execute(f"INSERT INTO {tmp} ({cols}) SELECT {exprs} FROM {t} ORDER BY rowid")
        conn.execute(f"DROP TABLE {t}")
        conn.execute(f"ALTER TABLE {tmp} RENAME TO {t}")
        self._create_key_index(conn, plan)
