"""Records per second into PostgreSQL through the HTTP API, with 1 and with 4 server processes.

    python -m bench.postgres [--seconds 10] [--rounds 2] [--mix ascending,random]
                             [--workers 1,4] [--backends postgresql,sqlite]

Each run gets a fresh warehouse (a new PostgreSQL database next to the test one, at
IMPORTAPI_TEST_POSTGRES or 127.0.0.1:5432; or a new SQLite folder, for comparison), a client
and a key made with the command line, and ``importapi serve --workers N``. wrk then posts
bodies of 100 records (bench/push.lua: six fields of mixed types; new keys in ascending or
random order) over 32 connections for the given time. Runs alternate (A/B/A/B) and the
medians are printed: records acknowledged (201) per second, latency percentiles, errors.
The load generator shares the machine's cores with the servers and the database.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

HERE = Path(__file__).parent
ADMIN_URL = os.environ.get("IMPORTAPI_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def fresh_warehouse(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="importapi-bench-"))
        try:
            yield f"sqlite:///{folder}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    name = f"importapi_bench_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rpartition("/")[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cli(*args: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "IMPORTAPI_DATABASE"}
    out = subprocess.run(
        [sys.executable, "-m", "importapi", *args], capture_output=True, text=True, check=True, env=env
    ).stdout
    return dict(json.loads(out))


def run_once(backend: str, workers: int, mix: str, seconds: int) -> dict[str, float]:
    with fresh_warehouse(backend) as database:
        cli("clients", "create", "bench", "--json", "--database", database)
        key = cli("keys", "create", "1", "--json", "--database", database)["api_key"]
        port = 19000 + os.getpid() % 1000
        env = {**os.environ, "IMPORTAPI_ACCESS_LOG": "0"}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "importapi",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--database",
                database,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.1)
            path = f"/v2/client/1/table/bench/data?apikey={key}"
            # a short warm-up creates the table and fills each worker's connection pool
            subprocess.run(
                [
                    "wrk",
                    "-t2",
                    "-c8",
                    "-d2s",
                    "-s",
                    str(HERE / "push.lua"),
                    base,
                    "--",
                    path,
                    "importapi",
                    mix,
                    str(10**12),
                ],
                capture_output=True,
                check=True,
            )
            out = subprocess.run(
                [
                    "wrk",
                    "-t2",
                    "-c32",
                    f"-d{seconds}s",
                    "-s",
                    str(HERE / "push.lua"),
                    base,
                    "--",
                    path,
                    "importapi",
                    mix,
                    "0",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    m = re.search(
        r"RESULT requests=(\d+) errors=(\d+) non2xx=(\d+) duration_us=(\d+) "
        r"p50=(\d+) p95=(\d+) p99=(\d+)",
        out,
    )
    assert m, out
    req, err, bad, dur, p50, p95, p99 = map(int, m.groups())
    return {
        "records_per_s": (req - bad) * 100 / (dur / 1e6),
        "errors": err + bad,
        "p50_ms": p50 / 1000,
        "p95_ms": p95 / 1000,
        "p99_ms": p99 / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mix", default="ascending,random")
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--backends", default="postgresql")
    args = parser.parse_args()
    configs = [
        (b, int(w), m)
        for b in args.backends.split(",")
        for m in args.mix.split(",")
        for w in args.workers.split(",")
    ]
    results: dict[tuple[str, int, str], list[dict[str, float]]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for c in configs:
            results[c].append(run_once(c[0], c[1], c[2], args.seconds))
    print(
        f"POST of 100 records, wrk 2 threads / 32 connections, {args.seconds}s x {args.rounds} rounds "
        f"(medians), {os.cpu_count()} cores shared by wrk, the servers and the database:"
    )
    print(
        f"  {'backend':10} {'keys':10} {'processes':>9} {'records/s':>10} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'errors':>7}"
    )
    for (backend, workers, mix), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"  {backend:10} {mix:10} {workers:9d} {med['records_per_s']:10.0f} {med['p50_ms']:8.2f} "
            f"{med['p95_ms']:8.2f} {med['p99_ms']:8.2f} {med['errors']:7.0f}"
        )


if __name__ == "__main__":
    main()
