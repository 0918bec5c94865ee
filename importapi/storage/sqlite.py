"""The embedded warehouse: SQLite files under one data folder.

    catalog.sqlite3        clients, hashed keys and the owner's settings
    activity.sqlite3       the console's rolling window of latest pushes and refusals (a
                           file of its own, so its frequent writes leave the catalog alone)
    client_<id>.sqlite3    one per client: its tables, plus the schema metadata
                           (_importapi_tables, _importapi_columns) kept in the same file so a
                           schema change commits atomically with the rows that caused it

Each client file has one writer (``sqlite_writer``: group commit, schema changes). This
module owns the folder, the catalog and the reads. All files are in WAL mode, so readers
(the command line, SQL clients) never block the writer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from importapi import apikeys
from importapi.errors import BadRequest, NotFound, StorageUnavailable
from importapi.kinds import Kind, from_storage, to_storage
from importapi.records import Batch, Limits
from importapi.schema import TableSchema
from importapi.storage.base import (
    Activity,
    CatalogDump,
    ClientInfo,
    KeyInfo,
    PushResult,
    Storage,
    StoredKey,
    TableInfo,
    utcnow,
)
from importapi.storage.sqlite_writer import (
    BUSY_TIMEOUT_MS,
    SQL_TYPES,
    ClientWriter,
    connect,
    execute_script,
    load_schemas,
    quote,
    storage_error,
)

log = logging.getLogger("importapi.storage")

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
    reasons TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS activity_by_kind ON activity (refused, seq);
"""
_ACTIVITY_COLUMNS = (
    "at, request_id, route, client_id, key_id, table_name, points, inserted, replaced, sandbox,"
    " status, reasons"
)

CLIENT_DDL = """
CREATE TABLE IF NOT EXISTS _importapi_tables (
    name TEXT PRIMARY KEY,
    key_fields TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_push_at TEXT
);
CREATE TABLE IF NOT EXISTS _importapi_columns (
    table_name TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    position INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    widened_at TEXT,
    PRIMARY KEY (table_name, name)
);
"""


def _stream(conn: sqlite3.Connection, cursor: sqlite3.Cursor, kinds: list[Kind]) -> Iterator[tuple[Any, ...]]:
    try:
        while chunk := cursor.fetchmany(500):
            for row in chunk:
                yield tuple(from_storage(v, k) for v, k in zip(row, kinds))
    except sqlite3.Error as exc:
        raise storage_error(exc) from exc
    finally:
        conn.close()


class SQLiteStorage(Storage):
    def __init__(self, folder: str | os.PathLike[str], limits: Limits | None = None,
                 synchronous: str = "FULL") -> None:
        self.folder = Path(folder)
        self.limits = limits or Limits()
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._catalog = connect(self.folder / "catalog.sqlite3", self.synchronous)
            execute_script(self._catalog, CATALOG_DDL)
            # A log, not the warehouse: losing its last second to a power cut is acceptable.
            self._activity = connect(self.folder / "activity.sqlite3", "NORMAL")
            execute_script(self._activity, ACTIVITY_DDL)
        except (OSError, sqlite3.Error) as exc:
            raise StorageUnavailable(f"cannot open the warehouse in {str(self.folder)!r}: {exc}") from exc
        self._lock = threading.Lock()
        self._activity_lock = threading.Lock()
        self._writers: dict[int, ClientWriter] = {}
        self._local_changes = 0

    def _client_path(self, client_id: int) -> Path:
        return self.folder / f"client_{client_id}.sqlite3"

    def _catalog_call(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._catalog.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc

    # -- clients and keys -------------------------------------------------
    def create_client(self, name: str, client_id: int | None = None) -> ClientInfo:
        now = utcnow()
        with self._lock:
            try:
                rows = self._catalog.execute(
                    "INSERT INTO clients (client_id, name, created_at) VALUES (?, ?, ?) RETURNING client_id",
                    (client_id, name, now),
                ).fetchall()
            except sqlite3.IntegrityError as exc:
                raise BadRequest(f"client {client_id} already exists") from exc
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc
        info = ClientInfo(rows[0][0], name, now)
        conn = connect(self._client_path(info.client_id), self.synchronous)
        try:
            execute_script(conn, CLIENT_DDL)
        finally:
            conn.close()
        return info

    def get_client(self, client_id: int) -> ClientInfo | None:
        rows = self._catalog_call(
            "SELECT client_id, name, created_at FROM clients WHERE client_id = ?", (client_id,)
        )
        return ClientInfo(*rows[0]) if rows else None

    def list_clients(self) -> list[ClientInfo]:
        rows = self._catalog_call("SELECT client_id, name, created_at FROM clients ORDER BY client_id")
        return [ClientInfo(*r) for r in rows]

    def _require_client(self, client_id: int) -> None:
        if self.get_client(client_id) is None:
            raise NotFound(f"client {client_id} does not exist")

    def create_key(self, client_id: int) -> tuple[KeyInfo, str]:
        self._require_client(client_id)
        key = apikeys.new_key()
        now = utcnow()
        self._catalog_call(
            "INSERT INTO api_keys (key_id, client_id, digest, created_at) VALUES (?, ?, ?, ?)",
            (key.key_id, client_id, key.digest, now),
        )
        return KeyInfo(key.key_id, client_id, now, None, None), key.api_key

    def list_keys(self, client_id: int) -> list[KeyInfo]:
        self._require_client(client_id)
        rows = self._catalog_call(
            "SELECT key_id, client_id, created_at, last_used_at, revoked_at FROM api_keys"
            " WHERE client_id = ? ORDER BY created_at, key_id",
            (client_id,),
        )
        return [KeyInfo(*r) for r in rows]

    def revoke_key(self, key_id: str) -> KeyInfo:
        rows = self._catalog_call(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?"
            " RETURNING key_id, client_id, created_at, last_used_at, revoked_at",
            (utcnow(), key_id),
        )
        if not rows:
            raise NotFound(f"key {key_id!r} does not exist")
        self._local_changes += 1
        return KeyInfo(*rows[0])

    def find_key(self, key_id: str) -> StoredKey | None:
        rows = self._catalog_call(
            "SELECT key_id, client_id, digest, revoked_at IS NOT NULL FROM api_keys WHERE key_id = ?",
            (key_id,),
        )
        return StoredKey(rows[0][0], rows[0][1], rows[0][2], bool(rows[0][3])) if rows else None

    def touch_keys(self, last_used: dict[str, str]) -> None:
        with self._lock:
            try:
                self._catalog.execute("BEGIN IMMEDIATE")
                self._catalog.executemany(
                    "UPDATE api_keys SET last_used_at = ? WHERE key_id = ?",
                    [(ts, key_id) for key_id, ts in last_used.items()],
                )
                self._catalog.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._catalog.in_transaction:
                    self._catalog.execute("ROLLBACK")
                raise storage_error(exc) from exc

    def catalog_version(self) -> int:
        (version,) = self._catalog_call("PRAGMA data_version")[0]
        return int(version) + self._local_changes

    # -- data -------------------------------------------------------------
    def _writer(self, client_id: int) -> ClientWriter:
        writer = self._writers.get(client_id)
        if writer is None:
            with self._lock:
                writer = self._writers.get(client_id)
                if writer is None:
                    path = self._client_path(client_id)
                    if not path.exists():
                        raise NotFound(f"client {client_id} has no warehouse file")
                    writer = ClientWriter(path, self.limits, self.synchronous)
                    self._writers[client_id] = writer
        return writer

    def submit(self, client_id: int, batch: Batch, *, sandbox: bool = False) -> Future[PushResult]:
        return self._writer(client_id).submit(batch, sandbox)

    async def push(self, client_id: int, batch: Batch, *, sandbox: bool = False) -> PushResult:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[PushResult] = loop.create_future()
        self._writer(client_id).submit_from_loop(batch, sandbox, loop, answer)
        return await answer

    def _reader(self, client_id: int) -> sqlite3.Connection:
        self._require_client(client_id)
        path = self._client_path(client_id)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)  # read_rows' stream may move threads
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
                TableInfo(s, conn.execute(f"SELECT count(*) FROM {quote(s.name)}").fetchone()[0],
                          pushed.get(s.name))
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
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise BadRequest(f"query is read-only; this statement would write ({exc})") from exc
            raise BadRequest(f"query failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise BadRequest(f"query failed: {exc}") from exc
        finally:
            conn.close()

    def read_rows(
        self, client_id: int, table: str, *, descending: bool = False, offset: int = 0,
        limit: int | None = None,
    ) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
        conn = self._reader(client_id)
        try:
            conn.execute("BEGIN")  # one snapshot for the schema and every row
            schema = load_schemas(conn).get(table)
            if schema is None:
                raise NotFound(f"client {client_id} has no table {table!r}")
            direction = " DESC" if descending else ""
            order = ", ".join(quote(k) + direction for k in schema.key_fields)
            cursor = conn.execute(
                f"SELECT {', '.join(quote(c) for c in schema.columns)} FROM {quote(table)}"
                f" ORDER BY {order} LIMIT ? OFFSET ?",
                (-1 if limit is None else limit, offset),
            )
        except sqlite3.Error as exc:
            conn.close()
            raise storage_error(exc) from exc
        except BaseException:
            conn.close()
            raise
        kinds = [c.kind for c in schema.columns.values()]
        return list(schema.columns), _stream(conn, cursor, kinds)

    # -- the console --------------------------------------------------------
    def get_setting(self, name: str) -> str | None:
        rows = self._catalog_call("SELECT value FROM settings WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def set_setting(self, name: str, value: str, *, replace: bool = True) -> str:
        action = "DO UPDATE SET value = excluded.value" if replace else "DO NOTHING"
        self._catalog_call(f"INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) {action}",
                           (name, value))
        stored = self.get_setting(name)
        assert stored is not None
        return stored

    def record_activity(self, events: Sequence[Activity], keep: int) -> None:
        rows = [
            (e.refused, e.at, e.request_id, e.route, e.client_id, e.key_id, e.table, e.points,
             e.inserted, e.replaced, e.sandbox, e.status, json.dumps(list(e.reasons)))
            for e in events
        ]
        prune = ("DELETE FROM activity WHERE refused = ? AND seq <= (SELECT seq FROM activity"
                 " WHERE refused = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)")
        with self._activity_lock:
            conn = self._activity
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(f"INSERT INTO activity (refused, {_ACTIVITY_COLUMNS}) VALUES"
                                 " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                for refused in {bool(r[0]) for r in rows}:
                    conn.execute(prune, (refused, refused, keep))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise storage_error(exc) from exc

    def recent_activity(self, limit: int, *, refused: bool) -> list[Activity]:
        with self._activity_lock:
            try:
                rows = self._activity.execute(
                    f"SELECT {_ACTIVITY_COLUMNS} FROM activity WHERE refused = ? ORDER BY seq DESC LIMIT ?",
                    (refused, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc
        return [
            Activity(at, rid, route, cid, key_id, table, points, inserted, replaced, bool(sandbox),
                     status, tuple(json.loads(reasons)))
            for at, rid, route, cid, key_id, table, points, inserted, replaced, sandbox, status, reasons
            in rows
        ]

    # -- copying a warehouse ----------------------------------------------
    def export_catalog(self) -> CatalogDump:
        keys = self._catalog_call("SELECT key_id, client_id, created_at, last_used_at, revoked_at, digest"
                                  " FROM api_keys ORDER BY created_at, key_id")
        settings = self._catalog_call("SELECT name, value FROM settings ORDER BY name")
        return CatalogDump(self.list_clients(), [(KeyInfo(*r[:5]), bytes(r[5])) for r in keys],
                           {str(n): str(v) for n, v in settings})

    def restore_catalog(self, dump: CatalogDump) -> None:
        if self.list_clients():
            raise BadRequest("the target warehouse already has clients; copy needs an empty one")
        for c in dump.clients:
            self._catalog_call("INSERT INTO clients (client_id, name, created_at) VALUES (?, ?, ?)",
                               (c.client_id, c.name, c.created_at))
            conn = connect(self._client_path(c.client_id), self.synchronous)
            try:
                execute_script(conn, CLIENT_DDL)
            finally:
                conn.close()
        for k, digest in dump.keys:
            self._catalog_call(
                "INSERT INTO api_keys (key_id, client_id, digest, created_at, last_used_at, revoked_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (k.key_id, k.client_id, digest, k.created_at, k.last_used_at, k.revoked_at),
            )
        for name, value in dump.settings.items():
            self.set_setting(name, value)
        self._local_changes += 1

    def restore_table(self, client_id: int, schema: TableSchema, rows: Iterable[Sequence[Any]],
                      last_push_at: str | None = None) -> int:
        self._require_client(client_id)
        t, keys = quote(schema.name), ", ".join(quote(k) for k in schema.key_fields)
        columns = list(schema.columns.values())
        defs = ", ".join(f"{quote(c.name)} {SQL_TYPES[c.kind]}"
                         + (" NOT NULL" if c.name in schema.key_fields else "") for c in columns)
        insert = (f"INSERT INTO {t} ({', '.join(quote(c.name) for c in columns)})"
                  f" VALUES ({', '.join('?' for _ in columns)})")
        conn = connect(self._client_path(client_id), self.synchronous)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"CREATE TABLE {t} ({defs})")
            conn.execute(f"CREATE UNIQUE INDEX {quote('_importapi_key_' + schema.name)} ON {t} ({keys})")
            conn.execute("INSERT INTO _importapi_tables (name, key_fields, created_at, last_push_at)"
                         " VALUES (?, ?, ?, ?)",
                         (schema.name, json.dumps(list(schema.key_fields)), schema.created_at, last_push_at))
            conn.executemany(
                "INSERT INTO _importapi_columns (table_name, name, kind, position, created_at, widened_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(schema.name, c.name, c.kind.label, i, schema.created_at, c.widened_at)
                 for i, c in enumerate(columns)],
            )
            count = conn.executemany(insert, (
                [to_storage(v, c.kind) for v, c in zip(row, columns)] for row in rows
            )).rowcount
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise storage_error(exc) from exc
        finally:
            conn.close()
        return count

    def ping(self) -> None:
        self._catalog_call("SELECT 1")
        if not os.access(self.folder, os.W_OK):
            raise StorageUnavailable(f"the data folder {str(self.folder)!r} is not writable")

    def check_writable(self) -> None:
        """Write and sync a file in the data folder, and take the catalog's write lock."""
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
        with self._lock:
            try:
                self._catalog.execute("BEGIN IMMEDIATE")
                self._catalog.execute("ROLLBACK")
            except sqlite3.Error as exc:
                if self._catalog.in_transaction:
                    self._catalog.execute("ROLLBACK")
                raise storage_error(exc) from exc

    def close(self) -> None:
        for writer in list(self._writers.values()):
            writer.stop()
        self._writers.clear()
        with self._lock:
            self._catalog.close()
        with self._activity_lock:
            self._activity.close()
