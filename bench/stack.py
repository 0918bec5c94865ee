"""Which HTTP server and JSON library carry the hot path best: a POST of 100 records.

    python -m bench.stack [--seconds 8] [--rounds 2]

Part 1 decodes one 100-record body with each JSON library. Part 2 starts
``importapi serve`` on each HTTP server in turn (fresh warehouse each run), drives it with
wrk over loopback (2 threads, 32 connections, new ascending keys), alternating A/B/A/B,
and prints medians: records per second acknowledged and latency percentiles.
"""

from __future__ import annotations

import argparse
import json
import statistics
import timeit
from pathlib import Path

from bench import run, targets

HERE = Path(__file__).parent


def sample_body(n: int = 100) -> bytes:
    return json.dumps(
        [
            {
                "keys": ["id"],
                "id": i,
                "name": f"customer {i}",
                "email": f"user{i}@example.com",
                "amount": i + 0.25,
                "active": i % 2 == 0,
                "created_at": "2024-05-01 12:34:56",
                "visits": i % 97,
            }
            for i in range(n)
        ]
    ).encode()


def json_figures() -> list[tuple[str, float, str]]:
    import msgspec
    import orjson

    body = sample_body()
    big = b'{"n": 123456789012345678901234567890}'
    rows = []
    for name, fn in [
        ("json (stdlib)", json.loads),
        ("orjson", orjson.loads),
        ("msgspec", msgspec.json.Decoder().decode),
    ]:
        n = 2000
        secs = min(timeit.repeat(lambda fn=fn: fn(body), number=n, repeat=5)) / n
        exact = fn(big)["n"] == 123456789012345678901234567890
        rows.append((name, secs * 1e6, "exact" if exact else "ROUNDED to a double"))
    return rows


def run_server(server: str, seconds: int, order: str) -> dict[str, float]:
    env = {"IMPORTAPI_SERVER": server, "IMPORTAPI_ACCESS_LOG": "0"}
    with targets.importapi(env=env) as target:
        return run.wrk(target, order, seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--order", default="ascending", choices=["ascending", "random"])
    parser.add_argument("--servers", default="uvicorn,granian")
    args = parser.parse_args()

    print("JSON decode of one 100-record body (15 KB):")
    for name, us, big in json_figures():
        print(f"  {name:15} {us:8.1f} us   integers beyond 64 bits: {big}")

    servers = args.servers.split(",")
    results: dict[str, list[dict[str, float]]] = {s: [] for s in servers}
    for _ in range(args.rounds):
        for s in servers:
            results[s].append(run_server(s, args.seconds, args.order))
    print(
        f"\nPOST of 100 records, {args.order} keys, wrk 2 threads / 32 connections, "
        f"{args.seconds}s x {args.rounds} rounds (medians):"
    )
    print(f"  {'server':10} {'records/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for s, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"  {s:10} {med['records_per_s']:10.0f} {med['p50_ms']:8.2f} {med['p95_ms']:8.2f} "
            f"{med['p99_ms']:8.2f} {med['errors']:7.0f}"
        )


if __name__ == "__main__":
    main()
