"""The storage limit: the same upserts done in process straight into SQLite, no HTTP.

The table is created by importapi's own storage (so the schema and indexes are exactly the
server's), then the server's own upsert statement runs with one transaction per 100
records, on a connection set up as the server's writer (WAL, synchronous=FULL, its page cache).
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.records import COLUMNS, ids_for, record
from importapi.push import Push
from importapi.rjmetrics.validate import validate
from importapi.storage import open_storage
from importapi.storage.sqlite_sql import TableSQL, load_schemas
from importapi.storage.sqlite_sql import connect as server_connect
from importapi.storage.sqlite_writer import WRITER_CACHE_KIB

REQUESTS = 1500


def _row(i: int) -> tuple[Any, ...]:
    r = record(i)
    return tuple(r[c] for c in COLUMNS)


def _warehouse() -> tuple[Path, Path]:
    folder = Path(tempfile.mkdtemp(prefix="bench-limit-"))
    with open_storage(str(folder)) as storage:
        storage.create_client("bench")
        storage.warehouse.submit(Push(1, [validate([{"keys": ["id"], **record(-1)}], "bench")])).result()
    return folder, folder / "client_1.sqlite3"


def connect(path: Path) -> tuple[sqlite3.Connection, str]:
    conn = server_connect(path, "FULL")  # set up as the server's: WAL, synchronous=FULL
    conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")  # and the writer's page cache
    schema = load_schemas(conn)["bench"]
    assert tuple(schema.columns) == COLUMNS, schema.columns
    return conn, TableSQL(schema).upsert


def _bulk(conn: sqlite3.Connection, sql: str, ids: range) -> None:
    conn.execute("PRAGMA synchronous = OFF")
    for start in range(ids.start, ids.stop, 100_000):
        conn.execute("BEGIN")
        conn.executemany(sql, (_row(i) for i in range(start, min(start + 100_000, ids.stop))))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA synchronous = FULL")


def upserts_per_second(conn: sqlite3.Connection, sql: str, batches: list[list[tuple[Any, ...]]]) -> float:
    """Records/s of upserting the batches, one transaction (and ``executemany``) each."""
    started = time.perf_counter()
    for rows in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    return sum(map(len, batches)) / (time.perf_counter() - started)


def measure(mix: str, prefilled: int, requests: int = REQUESTS) -> dict[str, float]:
    folder, path = _warehouse()
    try:
        conn, sql = connect(path)
        if mix == "replace":
            _bulk(conn, sql, range(prefilled))
        rng = random.Random(7)
        batches = [[_row(i) for i in ids_for(mix, n, 10**9, prefilled, rng)] for n in range(requests)]
        rate = upserts_per_second(conn, sql, batches)
        conn.close()
        return {"records_per_s": rate}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def prefilled_warehouse(rows: int) -> Path:
    """A warehouse whose table ``bench`` already holds ``rows`` rows (ids 0..rows-1)."""
    folder, path = _warehouse()
    conn, sql = connect(path)
    _bulk(conn, sql, range(rows))
    conn.close()
    return folder
