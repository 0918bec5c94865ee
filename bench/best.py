"""The engines' best cases for the benchmark's records: what SQLite and PostgreSQL do alone.

- ``sqlite``: in process, one B-tree (``id INTEGER PRIMARY KEY`` and the five other typed
  columns, nothing else), ``executemany`` of ``INSERT ... ON CONFLICT (id) DO UPDATE``, one
  transaction per 100 records, WAL with the server's ``synchronous`` setting
  (``IMPORTAPI_SQLITE_SYNCHRONOUS``, FULL by default) and SQLite's default page cache.
- ``postgres``: a plain psycopg program doing the upserts importapi does on PostgreSQL: per
  100 records (rows in key order, one per key) ``INSERT ... SELECT * FROM unnest(%b::...[])
  ON CONFLICT (id) DO UPDATE SET ... RETURNING xmax = 0``, each committed, on as many
  connections as importapi's pool (``IMPORTAPI_POOL_SIZE``, 8 by default), one thread each,
  into a table of the column types importapi gives these records, on a new database.

The same records and mixes as everywhere in the benchmark (``bench/records.py``), built
before the clock starts; records/s is records over the time from the first to the last
commit.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.limit import upserts_per_second
from bench.records import COLUMNS, ids_for, record

REQUESTS = 1500  # of 100 records: as the in-process limit (bench/limit.py)
COLUMN_TYPES = (
    "bigint NOT NULL",
    'text COLLATE "C"',
    'text COLLATE "C"',
    "double precision",
    "boolean",
    'text COLLATE "C"',
)
ARRAY_TYPES = ("bigint", "text", "text", "double precision", "boolean", "text")


def synchronous() -> str:
    return os.environ.get("IMPORTAPI_SQLITE_SYNCHRONOUS", "").upper() or "FULL"


def pool_size() -> int:
    return int(os.environ.get("IMPORTAPI_POOL_SIZE", "") or 8)


def _row(i: int) -> tuple[Any, ...]:
    r = record(i)
    return tuple(r[c] for c in COLUMNS)


def _batches(mix: str, prefilled: int, requests: int) -> list[list[tuple[Any, ...]]]:
    rng = random.Random(7)
    return [[_row(i) for i in ids_for(mix, n, 10**9, prefilled, rng)] for n in range(requests)]


def _upsert(placeholders: str) -> str:
    sets = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
    return f"INSERT INTO bench ({', '.join(COLUMNS)}) {placeholders} ON CONFLICT (id) DO UPDATE SET {sets}"


def sqlite(mix: str, prefilled: int, requests: int = REQUESTS) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="bench-best-"))
    try:
        conn = sqlite3.connect(folder / "best.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(
            "CREATE TABLE bench (id INTEGER PRIMARY KEY, name TEXT, email TEXT, amount REAL,"
            " active BOOLEAN, created_at TEXT)"
        )
        sql = _upsert(f"VALUES ({', '.join('?' for _ in COLUMNS)})")
        if mix == "replace":
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute("BEGIN")
            conn.executemany(sql, (_row(i) for i in range(prefilled)))
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute(f"PRAGMA synchronous = {synchronous()}")
        rate = upserts_per_second(conn, sql, _batches(mix, prefilled, requests))
        conn.close()
        return {"records_per_s": rate}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """One array per column, one row per key (the last), in key order, as importapi binds them."""
    one = {r[0]: r for r in rows}
    ordered = [one[k] for k in sorted(one)]
    return [list(col) for col in zip(*ordered)]


def postgres(
    mix: str, prefilled: int, connections: int | None = None, requests: int = 2 * REQUESTS
) -> dict[str, float]:
    import psycopg

    from bench.postgres import fresh_warehouse

    connections = connections or pool_size()
    arrays = ", ".join(f"%b::{t}[]" for t in ARRAY_TYPES)
    sql = _upsert(f"SELECT * FROM unnest({arrays})") + " RETURNING xmax = 0"
    with fresh_warehouse("postgresql") as url:
        with psycopg.connect(url, autocommit=True) as admin:
            defs = ", ".join(f"{c} {t}" for c, t in zip(COLUMNS, COLUMN_TYPES))
            admin.execute(f"CREATE TABLE bench ({defs}, PRIMARY KEY (id))")
            if mix == "replace":
                rows = [_row(i) for i in range(prefilled)]
                for start in range(0, prefilled, 10_000):
                    admin.execute(sql, _columns(rows[start : start + 10_000]))
                admin.execute("VACUUM ANALYZE bench")
        work = [_columns(rows) for rows in _batches(mix, prefilled, requests)]
        conns = [psycopg.connect(url) for _ in range(connections)]
        for conn in conns:  # the statement prepared on every connection, as a pool's would be
            conn.prepare_threshold = 0
        lock = threading.Lock()
        pending = iter(work)
        retries = 0

        def worker(conn: psycopg.Connection[Any]) -> None:
            nonlocal retries
            while True:
                with lock:
                    params = next(pending, None)
                if params is None:
                    return
                while True:
                    try:
                        conn.execute(sql, params).fetchall()
                        conn.commit()
                        break
                    except psycopg.errors.DeadlockDetected:
                        conn.rollback()
                        with lock:
                            retries += 1

        threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        for conn in conns:
            conn.close()
    return {"records_per_s": requests * 100 / elapsed, "connections": connections, "retries": retries}
