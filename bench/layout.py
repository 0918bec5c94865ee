"""SQLite table layouts for a table keyed by one integer field, measured on our records.

    python -m bench.layout [--requests 1500] [--prefill 1000000] [--rounds 2]

A table today is a rowid table plus a unique index on its key fields: a new row writes two
B-trees (the table, appended to in rowid order, and the index). The alternatives keep one:
the key as the rowid (``id INTEGER PRIMARY KEY``), or the table clustered on its key
(``WITHOUT ROWID``). Each is measured as the in-process limit is (``bench/limit.py``): the
benchmark's records (``bench/records.py``), one ``executemany`` of the upsert and one
transaction per 100 records, on a connection set up as the server's writer (WAL,
synchronous=FULL, its page cache), with keys ascending and in random order, into an empty
table and into one of ``--prefill`` rows. Layouts alternate within each round; the figure
is the median of the rounds, with its ratio to today's layout.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.limit import upserts_per_second
from bench.records import COLUMNS, ids_for, record
from importapi.storage.sqlite_sql import connect
from importapi.storage.sqlite_writer import WRITER_CACHE_KIB

_TYPES = ("INTEGER", "TEXT", "TEXT", "REAL", "INTEGER", "TEXT")
_DEFS = ", ".join(f"{c} {t}" for c, t in zip(COLUMNS, _TYPES))
LAYOUTS = {
    "rowid + index": [f"CREATE TABLE bench ({_DEFS})", "CREATE UNIQUE INDEX bench_key ON bench (id)"],
    "integer primary key": [f"CREATE TABLE bench ({_DEFS.replace('id INTEGER', 'id INTEGER PRIMARY KEY')})"],
    "without rowid": [f"CREATE TABLE bench ({_DEFS}, PRIMARY KEY (id)) WITHOUT ROWID"],
}
_SETS = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
UPSERT = (
    f"INSERT INTO bench ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    f" ON CONFLICT (id) DO UPDATE SET {_SETS}"
)


def _row(i: int) -> tuple[Any, ...]:
    r = record(i)
    return tuple(r[c] for c in COLUMNS)


def measure(layout: str, mix: str, requests: int, prefill: int) -> float:
    """Records/s of ``requests`` pushes of 100 records of ``mix`` into a table of ``layout``
    that holds ``prefill`` rows beforehand (ids 0 .. prefill-1, bulk-loaded)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-layout-"))
    try:
        conn = connect(folder / "layout.sqlite3", "FULL")
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        for statement in LAYOUTS[layout]:
            conn.execute(statement)
        if prefill:
            conn.execute("PRAGMA synchronous = OFF")
            for start in range(0, prefill, 100_000):
                conn.execute("BEGIN")
                conn.executemany(UPSERT, (_row(i) for i in range(start, min(start + 100_000, prefill))))
                conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA synchronous = FULL")
        rng = random.Random(7)
        batches = [[_row(i) for i in ids_for(mix, n, 10**9, prefill, rng)] for n in range(requests)]
        rate = upserts_per_second(conn, UPSERT, batches)
        conn.close()
        return rate
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1500, help="pushes of 100 records per run")
    parser.add_argument("--prefill", type=int, default=1_000_000, help="rows already in the larger table")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cases = [(mix, prefill) for prefill in (0, args.prefill) for mix in ("ascending", "random")]
    runs: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(args.rounds):
        for mix, prefill in cases:
            for layout in LAYOUTS:
                rate = measure(layout, mix, args.requests, prefill)
                runs.setdefault((layout, mix, prefill), []).append(rate)
                print(f"  {layout} {mix} into {prefill:,} rows: {rate:,.0f} records/s", flush=True)
    print(f"\n{'keys':10} {'table holds':>12} {'layout':20} {'records/s':>10} {'vs rowid + index':>17}")
    for mix, prefill in cases:
        ours = statistics.median(runs["rowid + index", mix, prefill])
        for layout in LAYOUTS:
            rate = statistics.median(runs[layout, mix, prefill])
            print(f"{mix:10} {prefill:>12,} {layout:20} {rate:>10,.0f} {rate / ours:>16.2f}x")
    print(f"\nsqlite {sqlite3.sqlite_version}, synchronous=FULL, {args.requests} pushes of 100 per run")


if __name__ == "__main__":
    main()
