"""The embedded warehouse: SQLite files under one data folder.

    catalog.sqlite3        clients, hashed keys and the owner's settings
    activity.sqlite3       the console's rolling window of latest pushes and refusals (a
                           file of its own, so its frequent writes leave the catalog alone)
    client_<id>.sqlite3    one per client: its tables and their schemas (``sqlite_sql``)

Each client file has one writer (``sqlite_writer``: group commit, schema changes). This
module owns the folder, the catalog's files and the reads. All files are in WAL mode, so
readers (the command line, SQL clients) never block the writer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from importapi.errors import BadRequest, Code, NotFound, StorageUnavailable
from importapi.kinds import Kind, from_storage, to_storage
from importapi.push import Push, PushResult
from importapi.settings import SYNCHRONOUS, Limits
from importapi.storage.base import EVERY_ROW, Page, RowStream, TableInfo, Warehouse
from importapi.storage.catalog import CatalogDB, Run
from importapi.storage.sql import names, quote
from importapi.storage.sqlite_sql import (
    BUSY_TIMEOUT_MS,
    CLIENT_DDL,
    connect,
    create_table,
    error_code,
    execute_script,
    load_schemas,
    storage_error,
    upgrade,
)
from importapi.storage.sqlite_writer import ClientWriter

CATALOG_DDL = """
CREATE TABLE IF NOT EXISTS clients (
    client_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    client_id INTEGER NOT NULL REFERENCES clients (client_id),
    digest BLOB NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

ACTIVITY_DDL = """
CREATE TABLE IF NOT EXISTS activity (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    refused BOOLEAN NOT NULL,
    at TEXT NOT NULL,
    request_id TEXT NOT NULL,
    route TEXT NOT NULL,
    client_id INTEGER,
    key_id TEXT,
    table_name TEXT,
    points INTEGER NOT NULL,
    inserted INTEGER NOT NULL,
    replaced INTEGER NOT NULL,
    sandbox BOOLEAN NOT NULL,
    status INTEGER NOT NULL,
    reasons TEXT NOT NULL,
    stale INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS activity_by_kind ON activity (refused, seq);
"""

_SQLITE_READONLY = 8


VERSION_FRESH_SECONDS = 0.005
"""How long the catalog's ``data_version`` is taken as it was read: another process's change
to clients or keys is seen by requests starting at most this long after it."""


class SQLiteCatalogDB(CatalogDB):
    """The catalog in ``catalog.sqlite3`` and the activity window in ``activity.sqlite3``.

    Other processes' changes are seen through ``PRAGMA data_version`` on a connection of its
    own, which only reads the WAL index in shared memory: nothing on the request path waits."""

    def __init__(self, folder: Path, synchronous: str) -> None:
        self.folder = folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._catalog = connect(folder / "catalog.sqlite3", synchronous)
            execute_script(self._catalog, CATALOG_DDL)
            self._watch = connect(folder / "catalog.sqlite3", synchronous)
            # A log, not the warehouse: losing its last second to a power cut is acceptable.
            self._activity = connect(folder / "activity.sqlite3", "NORMAL")
            execute_script(self._activity, ACTIVITY_DDL)
            if "stale" not in {r[1] for r in self._activity.execute("PRAGMA table_info(activity)")}:
                self._activity.execute("ALTER TABLE activity ADD COLUMN stale INTEGER NOT NULL DEFAULT 0")
        except (OSError, sqlite3.Error) as exc:
            raise StorageUnavailable(f"cannot open the warehouse in {str(folder)!r}: {exc}") from exc
        self._locks = {False: threading.Lock(), True: threading.Lock()}
        self._watch_lock = threading.Lock()
        self._version, self._fresh_until, self._changes = 0, 0.0, 0

    def _conn(self, activity: bool) -> sqlite3.Connection:
        return self._activity if activity else self._catalog

    def run(
        self, sql: str, params: Sequence[Any] = (), *, many: bool = False, activity: bool = False
    ) -> list[tuple[Any, ...]]:
        with self._locks[activity]:
            conn = self._conn(activity)
            try:
                if many:
                    conn.executemany(sql, params)
                    return []
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc

    @contextmanager
    def transaction(self, *, activity: bool = False) -> Iterator[Run]:
        with self._locks[activity]:
            conn = self._conn(activity)

            def run(sql: str, params: Sequence[Any] = (), many: bool = False) -> list[tuple[Any, ...]]:
                if many:
                    conn.executemany(sql, params)
                    return []
                return conn.execute(sql, params).fetchall()

            try:
                conn.execute("BEGIN IMMEDIATE")
                yield run
                conn.execute("COMMIT")
                if not activity:  # this process's own change: seen from the next request on
                    self._changes += 1
                    self._fresh_until = 0.0
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise storage_error(exc) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def version(self) -> int:
        """``data_version``, read again once it is ``VERSION_FRESH_SECONDS`` old or this
        process has changed the catalog. Asking SQLite costs the event loop a turn of
        Python's lock, which the writer threads hold meanwhile, on every request."""
        now = time.monotonic()
        if now < self._fresh_until:
            return self._version
        changes = self._changes
        with self._watch_lock:
            (version,) = self._watch.execute("PRAGMA data_version").fetchone()
        if changes == self._changes:  # no change of this process's own while reading
            self._version, self._fresh_until = int(version), now + VERSION_FRESH_SECONDS
        return int(version)

    def announce(self, run: Run) -> None:
        """Nothing to do: every other connection's ``data_version`` changes with the commit."""

    def writable(self) -> None:
        """Take the catalog's write lock and let it go."""
        with self.transaction():
            pass

    def close(self) -> None:
        for lock, conn in (
            (self._locks[False], self._catalog),
            (self._watch_lock, self._watch),
            (self._locks[True], self._activity),
        ):
            with lock:
                conn.close()


def _stream(conn: sqlite3.Connection, cursor: sqlite3.Cursor, kinds: list[Kind]) -> Iterator[tuple[Any, ...]]:
    try:
        while chunk := cursor.fetchmany(500):
            for row in chunk:
                yield tuple(from_storage(v, k) for v, k in zip(row, kinds))
    except sqlite3.Error as exc:
        raise storage_error(exc) from exc
    finally:
        conn.close()


class SQLiteWarehouse(Warehouse):
    def __init__(
        self, folder: str | os.PathLike[str], limits: Limits | None = None, synchronous: str = "FULL"
    ) -> None:
        self.folder = Path(folder)
        self.limits = limits or Limits()
        self.synchronous = synchronous.upper()
        if self.synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self._lock = threading.Lock()
        self._writers: dict[int, ClientWriter] = {}
        self._upgraded: set[int] = set()

    def _client_path(self, client_id: int) -> Path:
        return self.folder / f"client_{client_id}.sqlite3"

    def create_space(self, client_id: int) -> None:
        try:
            conn = connect(self._client_path(client_id), self.synchronous)
            try:
                execute_script(conn, CLIENT_DDL)
                self._upgrade(conn, client_id)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    def _upgrade(self, conn: sqlite3.Connection, client_id: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            upgrade(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._upgraded.add(client_id)

    def _path(self, client_id: int) -> Path:
        """A client's file, in this release's layout (files of earlier ones are upgraded
        the first time this process opens them)."""
        path = self._client_path(client_id)
        if not path.exists():
            raise NotFound(f"client {client_id} does not exist")
        if client_id not in self._upgraded:
            try:
                conn = connect(path, self.synchronous)
                try:
                    self._upgrade(conn, client_id)
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc
        return path

    # -- pushes -------------------------------------------------------------
    def _writer(self, client_id: int) -> ClientWriter:
        writer = self._writers.get(client_id)
        if writer is None:
            with self._lock:
                writer = self._writers.get(client_id)
                if writer is None:
                    writer = ClientWriter(self._path(client_id), self.limits, self.synchronous)
                    self._writers[client_id] = writer
        return writer

    def submit(self, push: Push) -> Future[list[PushResult]]:
        return self._writer(push.client_id).submit(push)

    async def push(self, push: Push) -> list[PushResult]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[PushResult]] = loop.create_future()
        self._writer(push.client_id).submit_from_loop(push, loop, answer)
        return await answer

    # -- reading ------------------------------------------------------------
    def _reader(self, client_id: int) -> sqlite3.Connection:
        path = self._path(client_id)
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )  # read_rows' stream may move threads
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
        return conn

    def tables(self, client_id: int) -> list[TableInfo]:
        conn = self._reader(client_id)
        try:
            conn.execute("BEGIN")
            schemas = load_schemas(conn)
            pushed = dict(conn.execute("SELECT name, last_push_at FROM _importapi_tables").fetchall())
            return [
                TableInfo(
                    s, conn.execute(f"SELECT count(*) FROM {quote(s.name)}").fetchone()[0], pushed.get(s.name)
                )
                for s in sorted(schemas.values(), key=lambda s: s.name)
            ]
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc
        finally:
            conn.close()

    def query(self, client_id: int, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        conn = self._reader(client_id)
        try:
            cursor = conn.execute(sql)
            columns = [d[0] for d in cursor.description or ()]
            return columns, cursor.fetchall()
        except sqlite3.Error as exc:
            if error_code(exc) == _SQLITE_READONLY:
                raise BadRequest(
                    f"query is read-only; this statement would write ({exc})", code=Code.QUERY_READ_ONLY
                ) from exc
            raise BadRequest(f"query failed: {exc}", code=Code.QUERY_FAILED) from exc
        finally:
            conn.close()

    def read_rows(self, client_id: int, table: str, page: Page = EVERY_ROW) -> RowStream:
        conn = self._reader(client_id)
        try:
            conn.execute("BEGIN")  # one snapshot for the schema and every row
            schema = load_schemas(conn).get(table)
            if schema is None:
                raise NotFound(f"client {client_id} has no table {table!r}")
            direction = " DESC" if page.descending else ""
            order = ", ".join(quote(k) + direction for k in schema.key_fields)
            cursor = conn.execute(
                f"SELECT {names(schema.columns)} FROM {quote(table)} ORDER BY {order} LIMIT ? OFFSET ?",
                (-1 if page.limit is None else page.limit, page.offset),
            )
        except sqlite3.Error as exc:
            conn.close()
            raise storage_error(exc) from exc
        except BaseException:
            conn.close()
            raise
        kinds = [c.kind for c in schema.columns.values()]
        return list(schema.columns), _stream(conn, cursor, kinds)

    # -- copying a warehouse ----------------------------------------------
    def restore_table(self, client_id: int, info: TableInfo, rows: Iterable[Sequence[Any]]) -> int:
        schema, last_push_at = info.schema, info.last_push_at
        columns = list(schema.columns.values())
        insert = (
            f"INSERT INTO {quote(schema.name)} ({names(schema.columns)})"
            f" VALUES ({', '.join('?' for _ in columns)})"
        )
        conn = connect(self._path(client_id), self.synchronous)
        try:
            conn.execute("BEGIN IMMEDIATE")
            create_table(conn, schema.name, [(c.name, c.kind) for c in columns], schema.key_fields)
            parent_keys = json.dumps(list(schema.parent_keys)) if schema.parent else None
            conn.execute(
                "INSERT INTO _importapi_tables (name, key_fields, created_at, last_push_at, table_version, parent,"
                " parent_keys) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    schema.name,
                    json.dumps(list(schema.key_fields)),
                    schema.created_at,
                    last_push_at,
                    schema.version,
                    schema.parent,
                    parent_keys,
                ),
            )
            conn.executemany(
                "INSERT INTO _importapi_columns (table_name, name, kind, position, created_at, widened_at, path)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (schema.name, c.name, c.kind.label, i, schema.created_at, c.widened_at, c.path)
                    for i, c in enumerate(columns)
                ],
            )
            count = conn.executemany(
                insert, ([to_storage(v, c.kind) for v, c in zip(row, columns)] for row in rows)
            ).rowcount
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise storage_error(exc) from exc
        finally:
            conn.close()
        return count

    # -- health -------------------------------------------------------------
    def ping(self) -> None:
        if not os.access(self.folder, os.W_OK):
            raise StorageUnavailable(f"the data folder {str(self.folder)!r} is not writable")

    def check_writable(self) -> None:
        """Write and sync a file in the data folder."""
        self.ping()
        probe = self.folder / f".ready-{os.getpid()}-{threading.get_ident()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"ready")
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError as exc:
            raise StorageUnavailable(f"cannot write to the data folder {str(self.folder)!r}: {exc}") from exc

    def close(self) -> None:
        for writer in list(self._writers.values()):
            writer.stop()
        self._writers.clear()
