"""``make bench``: importapi against Datasette and against the storage limit, side by side.

    python -m bench.run [--seconds 8] [--rounds 2] [--growth-rows 10000000] [--quick] [--no-postgres]

For each mix (new keys ascending, new keys in random order, half replacements) it runs, in
alternation A/B/A/B, importapi (SQLite, one process), Datasette, and importapi on PostgreSQL
with 1 and with 4 processes (when PostgreSQL is reachable at IMPORTAPI_TEST_POSTGRES or
127.0.0.1:5432; each run on a new database) under wrk (2 threads, 32 connections, 100
records per request), then the same upserts in process straight into SQLite (the limit).
It reports medians of records/s acknowledged, latency at full load and at half of that rate
(open loop, in alternating rounds too, with how steady the host's CPU was meanwhile),
errors and peak memory; then a growth run into a table of --growth-rows rows.
Prints one table, writes bench/results/latest.json and compares with the previous run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from bench import limit, loadgen, postgres, targets
from bench.steadiness import Steadiness

HERE = Path(__file__).parent
MIXES = ("ascending", "random", "replace")
PREFILL = 100_000
NEW_KEYS_BASE = 10**9


def wrk(
    target: targets.Running, mix: str, seconds: int, base: int = NEW_KEYS_BASE, prefilled: int = PREFILL
) -> dict[str, float]:
    cmd = [
        "wrk",
        "-t2",
        "-c32",
        f"-d{seconds}s",
        "-s",
        str(HERE / "push.lua"),
        target.base,
        "--",
        target.path,
        target.fmt,
        mix,
        str(base),
        str(prefilled),
        target.token,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(
        r"RESULT requests=(\d+) errors=(\d+) non2xx=(\d+) duration_us=(\d+) "
        r"p50=(\d+) p95=(\d+) p99=(\d+)",
        out,
    )
    if not m:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    req, err, bad, dur, p50, p95, p99 = map(int, m.groups())
    return {
        "records_per_s": (req - bad) * 100 / (dur / 1e6),
        "errors": err + bad,
        "p50_ms": p50 / 1000,
        "p95_ms": p95 / 1000,
        "p99_ms": p99 / 1000,
    }


class MemorySampler:
    """Samples a server's resident memory once a second while a run goes on."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples, self._stop = pid, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(targets.rss_mb(self.pid))

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()


POSTGRES_SYSTEMS = ("postgresql x1", "postgresql x4")  # importapi on PostgreSQL, 1 and 4 processes


def postgres_problem() -> str | None:
    """Why the PostgreSQL rows cannot be measured here, or None."""
    import psycopg

    try:
        with psycopg.connect(postgres.ADMIN_URL, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable at {postgres.ADMIN_URL} ({' '.join(str(exc).split())})"


@contextmanager
def start(system: str) -> Iterator[targets.Running]:
    """One system on a fresh database: importapi (SQLite, 1 process), Datasette, or importapi
    on a new PostgreSQL database with ``--workers`` 1 or 4."""
    if system == "importapi":
        with targets.importapi() as target:
            yield target
    elif system == "datasette":
        with targets.datasette() as target:
            yield target
    else:
        workers = int(system.rsplit("x", 1)[1])
        with (
            postgres.fresh_warehouse("postgresql") as url,
            targets.importapi(database=url, workers=workers) as target,
        ):
            yield target


def one_run(system: str, mix: str, seconds: int) -> dict[str, Any]:
    with start(system) as target:
        if mix == "replace":
            targets.prefill(target, PREFILL)
        with MemorySampler(target.pid) as mem:
            result = wrk(target, mix, seconds)
        result["peak_rss_mb"] = targets.rss_mb(target.pid, "VmHWM")
        result["rss_samples_mb"] = [round(s, 1) for s in mem.samples]
    return result


def half_rate(system: str, mix: str, max_records_per_s: float, seconds: int) -> dict[str, float]:
    with start(system) as target:
        if mix == "replace":
            targets.prefill(target, PREFILL)
        with Steadiness(seconds) as host:
            result = loadgen.fixed_rate(
                "127.0.0.1",
                target.port,
                target.path,
                fmt=target.fmt,
                mix=mix,
                base=NEW_KEYS_BASE,
                prefilled=PREFILL,
                headers=target.headers(),
                rate=max_records_per_s / 2 / 100,
                seconds=seconds,
            )
        if host.result:
            result["host_slow_pct"] = host.result["slow_pct"]
        return result


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["runs"] = runs
    return out


def growth(rows: int, seconds: int) -> dict[str, Any]:
    """Ascending new keys into a table that already holds ``rows`` rows."""
    folder = limit.prefilled_warehouse(rows)
    try:
        with targets.importapi(folder) as target:
            result = wrk(target, "ascending", seconds, base=rows + NEW_KEYS_BASE)
            result["peak_rss_mb"] = targets.rss_mb(target.pid, "VmHWM")
        result["table_rows"] = rows
        return result
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def report(results: dict[str, Any]) -> str:
    title = (
        f"importapi benchmark, {results['when']}: wrk 2 threads / 32 connections, 100 records "
        f"per request, {results['seconds']}s runs, medians of {results['rounds']} alternating rounds"
        "\nimportapi = SQLite, 1 process; postgresql xN = importapi on PostgreSQL, N processes"
        "\nhost slow = % of the time a fixed CPU task ran 3x slower or worse during the half-rate run"
        " (the host slowing the machine's cores; bench/steadiness.py)"
    )
    header = (
        f"{'mix':10} {'system':12} {'records/s':>10} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'½-rate p50':>10} {'p95':>7} {'p99':>7} {'host slow':>9} {'errors':>6} {'peak MB':>8}"
    )
    lines = [title, "", header]
    for mix in results["mixes"]:
        r = results["mixes"][mix]
        for system in ("importapi", "datasette", "limit", *POSTGRES_SYSTEMS):
            if system not in r:
                continue
            s = r[system]
            hr = s.get("half_rate", {})
            lat = (
                f"{s['p50_ms']:7.1f} {s['p95_ms']:7.1f} {s['p99_ms']:7.1f}"
                if "p50_ms" in s
                else f"{'':7} {'':7} {'':7}"
            )
            half = (
                f"{hr['p50_ms']:10.1f} {hr['p95_ms']:7.1f} {hr['p99_ms']:7.1f}"
                if hr
                else f"{'':10} {'':7} {'':7}"
            )
            half += f" {hr['host_slow_pct']:9.1f}" if "host_slow_pct" in hr else f" {'':9}"
            peak = f"{s['peak_rss_mb']:8.0f}" if "peak_rss_mb" in s else f"{'':8}"
            errors = f"{s.get('errors', 0):6.0f}"
            name = "sqlite limit" if system == "limit" else system
            lines.append(f"{mix:10} {name:12} {s['records_per_s']:10.0f} {lat} {half} {errors} {peak}")
        lines.append(
            f"{'':10} {'ratios':12} importapi/datasette {r['ratio_peer']:.1f}x, "
            f"importapi/limit {r['ratio_limit'] * 100:.0f}%"
        )
    if "growth" in results:
        g = results["growth"]
        lines += [
            "",
            (
                f"growth: ascending into a table of {g['table_rows']:,} rows: "
                f"{g['records_per_s']:.0f} records/s, {g['ratio_empty'] * 100:.0f}% of the "
                f"empty-table rate; p99 {g['p99_ms']:.1f} ms; peak {g['peak_rss_mb']:.0f} MB"
            ),
        ]
    mem = results["mixes"]["ascending"]["importapi"]["runs"][0]["rss_samples_mb"]
    if mem:
        lines.append(
            f"memory under sustained load (importapi, ascending, MB once a second): "
            f"first {mem[0]:.0f}, last {mem[-1]:.0f}, max {max(mem):.0f}"
        )
    return "\n".join(lines)


def compare(previous: dict[str, Any], results: dict[str, Any]) -> str:
    lines = ["", "against the previous run (importapi records/s):"]
    for mix, r in results["mixes"].items():
        old = previous.get("mixes", {}).get(mix, {}).get("importapi", {}).get("records_per_s")
        if old:
            new = r["importapi"]["records_per_s"]
            lines.append(f"  {mix:10} {old:10.0f} -> {new:10.0f}  ({(new / old - 1) * 100:+.0f}%)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--half-rate-seconds", type=int, default=6)
    parser.add_argument("--growth-rows", type=int, default=10_000_000, help="0 skips the growth run")
    parser.add_argument("--mixes", default=",".join(MIXES))
    parser.add_argument("--quick", action="store_true", help="short runs, one round, no growth run")
    parser.add_argument("--no-postgres", action="store_true", help="leave out the PostgreSQL rows")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.half_rate_seconds, args.growth_rows = 4, 1, 3, 0

    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "mixes": {},
    }
    systems = ["importapi", "datasette"]
    problem = "left out (--no-postgres)" if args.no_postgres else postgres_problem()
    if problem is None:
        systems += POSTGRES_SYSTEMS
    else:
        print(f"  the PostgreSQL rows are skipped: {problem}", flush=True)
        results["postgres_skipped"] = problem
    for mix in args.mixes.split(","):
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in [*systems, "limit"]}
        for _ in range(args.rounds):
            for system in systems:
                runs[system].append(one_run(system, mix, args.seconds))
                print(f"  {mix} {system}: {runs[system][-1]['records_per_s']:.0f} records/s", flush=True)
            runs["limit"].append(limit.measure(mix, PREFILL))
        r = {system: median_of(v) for system, v in runs.items()}
        # latency at half of each system's median maximum: alternating rounds too, medians kept
        halves: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        for _ in range(args.rounds):
            for system in systems:
                halves[system].append(
                    half_rate(system, mix, r[system]["records_per_s"], args.half_rate_seconds)
                )
        for system in systems:
            r[system]["half_rate"] = median_of(halves[system])
        r["ratio_peer"] = r["importapi"]["records_per_s"] / r["datasette"]["records_per_s"]
        r["ratio_limit"] = r["importapi"]["records_per_s"] / r["limit"]["records_per_s"]
        results["mixes"][mix] = r
    if args.growth_rows and "ascending" in results["mixes"]:
        g = growth(args.growth_rows, args.seconds)
        g["ratio_empty"] = g["records_per_s"] / results["mixes"]["ascending"]["importapi"]["records_per_s"]
        results["growth"] = g

    text = report(results)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    latest = out_dir / "latest.json"
    if latest.exists():
        text += compare(json.loads(latest.read_text()), results)
        latest.replace(out_dir / "previous.json")
    latest.write_text(json.dumps(results, indent=2))
    print()
    print(text)


if __name__ == "__main__":
    main()
