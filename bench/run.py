"""``make bench``: importapi against Datasette and against the storage limit, side by side.

    python -m bench.run [--seconds 8] [--rounds 2] [--growth-rows 10000000] [--quick] [--no-postgres]
                        [--stitch-seconds 8] [--stitch-connections 4] [--no-stitch]

For each mix (new keys ascending, new keys in random order, half replacements) it runs, in
alternation A/B/A/B, importapi (SQLite, one process), Datasette, and importapi on PostgreSQL
with 1 and with 4 processes (when PostgreSQL is reachable at IMPORTAPI_TEST_POSTGRES or
127.0.0.1:5432; each run on a new database) under wrk (2 threads, 32 connections, 100
records per request) on the RJMetrics route, then, in the same rounds, the same upserts in
process: straight into SQLite with the server's own schema and statement (the limit), and
the engines' best cases for these records (``bench/best.py``: SQLite with one B-tree,
``executemany``, one transaction per 100 records; a plain psycopg program doing importapi's
upserts on as many connections as its pool).
It reports medians of records/s acknowledged, latency at full load and at half of that rate
(open loop, in alternating rounds too, with how steady the host's CPU was meanwhile),
errors and peak memory.

Then the Stitch Import API's batch route (``bench/stitch.py``), on importapi (SQLite) and on
PostgreSQL with 1 process, alternating too: target-stitch-shaped bodies of 20,000 records
of the RJMetrics route's own six fields (the two routes compared on the same records), of
20,000 flat records of ten typed fields, and of 7,500 nested ones (an object and two arrays of five objects each), posted
over --stitch-connections connections (so that many bodies are in flight at once; the peak
memory column is the server's VmHWM after it), with records/s acknowledged (201), latency
per body, errors, a cheap request's latency meanwhile, and the batch route's records/s
against the RJMetrics route's (ascending) of the same run. Then a growth run into a table of
--growth-rows rows.
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

from bench import best, limit, loadgen, postgres, stitch, targets
from bench.steadiness import Steadiness

HERE = Path(__file__).parent
MIXES = ("ascending", "random", "replace")
PREFILL = 100_000
NEW_KEYS_BASE = 10**9
STITCH_SHAPES = {"same": "batch same", "flat": "batch", "nested": "nested"}  # bench/stitch.py's shapes
STITCH_SYSTEMS = ("importapi", "postgresql x1")


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


def one_run(system: str, mix: str, seconds: int, prefilled: int = PREFILL) -> dict[str, Any]:
    with start(system) as target:
        if mix == "replace":
            targets.prefill(target, prefilled)
        with MemorySampler(target.pid) as mem:
            result = wrk(target, mix, seconds, prefilled=prefilled)
        result["peak_rss_mb"] = targets.rss_mb(target.pid, "VmHWM")
        result["rss_samples_mb"] = [round(s, 1) for s in mem.samples]
    return result


def half_rate(
    system: str, mix: str, max_records_per_s: float, seconds: int, prefilled: int = PREFILL
) -> dict[str, float]:
    with start(system) as target:
        if mix == "replace":
            targets.prefill(target, prefilled)
        with Steadiness(seconds) as host:
            result = loadgen.fixed_rate(
                "127.0.0.1",
                target.port,
                target.path,
                fmt=target.fmt,
                mix=mix,
                base=NEW_KEYS_BASE,
                prefilled=prefilled,
                headers=target.headers(),
                rate=max_records_per_s / 2 / 100,
                seconds=seconds,
            )
        if host.result:
            result["host_slow_pct"] = host.result["slow_pct"]
            result["host_steal_pct"] = host.result["steal_pct"]
            result["host_wake_us"] = host.result["wake_p50_us"]
            result["host_flush_max_ms"] = host.result["flush_max_ms"]
        return result


def stitch_run(
    system: str, shape: str, bodies: list[bytes], seconds: int, connections: int
) -> dict[str, Any]:
    """The batch route at full load: ``connections`` connections each posting the next body as
    soon as the last is answered; the server's resident memory before, and its peak after."""
    with start(system) as target:
        idle = targets.rss_mb(target.pid)
        result = stitch.closed_loop(
            "127.0.0.1",
            target.port,
            target.key,
            bodies,
            records=stitch.RECORDS[shape],
            connections=connections,
            seconds=seconds,
        )
        result["idle_rss_mb"] = idle
        result["peak_rss_mb"] = targets.rss_mb(target.pid, "VmHWM")
    result["rows_per_s"] = result["records_per_s"] * stitch.ROWS_PER_RECORD[shape]
    return result


def measure_stitch(
    systems: list[str], rounds: int, seconds: int, connections: int, rjmetrics: dict[str, Any]
) -> dict[str, Any]:
    """Each shape on each system, in alternating rounds, on bodies built once beforehand;
    with the ratios of the batch route to the RJMetrics route (ascending, ``rjmetrics``) and
    of nested parents to flat records."""
    pools = {shape: stitch.make_bodies(shape, seconds, connections, NEW_KEYS_BASE) for shape in STITCH_SHAPES}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {
        (sh, sy): [] for sh in STITCH_SHAPES for sy in systems
    }
    for _ in range(rounds):
        for shape in STITCH_SHAPES:
            for system in systems:
                r = stitch_run(system, shape, pools[shape], seconds, connections)
                runs[shape, system].append(r)
                print(
                    f"  stitch {shape} {system}: {r['records_per_s']:.0f} records/s, "
                    f"{r['errors']:.0f} errors {r['error_sample']}".rstrip(),
                    flush=True,
                )
    out: dict[str, Any] = {
        "seconds": seconds,
        "connections": connections,
        "records_per_body": dict(stitch.RECORDS),
        "body_mb": {shape: len(pool[0]) / 1e6 for shape, pool in pools.items()},
    }
    for shape in STITCH_SHAPES:
        out[shape] = {system: median_of(runs[shape, system]) for system in systems}
    for shape, name in (("same", "ratio_rjmetrics"), ("flat", "ratio_rjmetrics_flat")):
        out[name] = {
            system: out[shape][system]["records_per_s"] / rjmetrics[system]["records_per_s"]
            for system in systems
            if system in rjmetrics
        }
    out["ratio_nested"] = {
        system: out["nested"][system]["records_per_s"] / out["flat"][system]["records_per_s"]
        for system in systems
        if out["flat"][system]["records_per_s"]
    }
    return out


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
        (folder.parent / f"{folder.name}.log").unlink(missing_ok=True)  # the server's log, beside it


ROW_ORDER = ("importapi", "datasette", "limit", "sqlite_best", *POSTGRES_SYSTEMS, "postgresql_best")
NAMES = {"limit": "sqlite limit", "sqlite_best": "sqlite best", "postgresql_best": "pg best"}


def _row(mix: str, system: str, s: dict[str, Any]) -> str:
    """One line of the table: a system's medians in one mix."""
    hr = s.get("half_rate", {})
    lat = (
        f"{s['p50_ms']:7.1f} {s['p95_ms']:7.1f} {s['p99_ms']:7.1f}"
        if "p50_ms" in s
        else f"{'':7} {'':7} {'':7}"
    )
    half = f"{hr['p50_ms']:10.1f} {hr['p95_ms']:7.1f} {hr['p99_ms']:7.1f}" if hr else f"{'':10} {'':7} {'':7}"
    half += f" {hr['host_slow_pct']:9.1f}" if "host_slow_pct" in hr else f" {'':9}"
    half += (
        f" {hr['host_steal_pct']:5.1f} {hr['host_wake_us']:7.0f} {hr['host_flush_max_ms']:9.1f}"
        if "host_flush_max_ms" in hr
        else f" {'':5} {'':7} {'':9}"
    )
    peak = f"{s['peak_rss_mb']:8.0f}" if "peak_rss_mb" in s else f"{'':8}"
    errors = f"{s.get('errors', 0):6.0f}"
    name = NAMES.get(system, system)
    return f"{mix:10} {name:12} {s['records_per_s']:10.0f} {lat} {half} {errors} {peak}"


def _percent(ratios: dict[str, float]) -> str:
    return ", ".join(f"{system} {ratio * 100:.0f}%" for system, ratio in ratios.items())


def report_stitch(st: dict[str, Any]) -> list[str]:
    """The batch route's rows and what they compare with."""
    lines = [
        _row(label, system, s) for shape, label in STITCH_SHAPES.items() for system, s in st[shape].items()
    ]
    lines.append(
        f"{'':10} {'ratios':12} batch/RJMetrics route (ascending), the same records: "
        f"{_percent(st['ratio_rjmetrics']) or '-'}; 10-field records: {_percent(st.get('ratio_rjmetrics_flat', {})) or '-'}; "
        f"nested parents/flat records: {_percent(st['ratio_nested'])}"
    )
    probes = [
        f"{system} {s['probe_p50_ms']:.0f}/{s['probe_p99_ms']:.0f}/{s['probe_max_ms']:.0f}"
        f" {s['probe_stalled_pct']:.0f}% ({label})"
        for shape, label in STITCH_SHAPES.items()
        for system, s in st[shape].items()
        if "probe_max_ms" in s
    ]
    lines.append(
        f"{'':10} {'meanwhile':12} a GET answered 405 every 25 ms, p50/p99/max ms and % of the time"
        f" waiting {stitch.STALL * 1000:.0f} ms or more: {', '.join(probes)}"
    )
    memory = [
        f"{system} {s['idle_rss_mb']:.0f} -> {s['peak_rss_mb']:.0f} ({label})"
        for shape, label in STITCH_SHAPES.items()
        for system, s in st[shape].items()
    ]
    lines.append(
        f"{'':10} {'memory':12} idle -> peak MB, {st['connections']} bodies in flight: {', '.join(memory)}"
    )
    return lines


def report(results: dict[str, Any]) -> str:
    title = (
        f"importapi benchmark, {results['when']}: wrk 2 threads / 32 connections, 100 records "
        f"per request, {results['seconds']}s runs, medians of {results['rounds']} alternating rounds"
        "\nimportapi = SQLite, 1 process; postgresql xN = importapi on PostgreSQL, N processes"
        "\nsqlite limit = the server's schema and upsert in process; sqlite best, pg best = the engine"
        " alone for the same records (one B-tree, executemany; psycopg, unnest, as many connections"
        " as importapi's pool: bench/best.py)"
        "\nhost slow = % of the time a fixed CPU task ran 3x slower or worse during the half-rate run"
        " (the host slowing the machine's cores; bench/steadiness.py); steal = % of the machine's"
        " CPU time the host took meanwhile; wake us = median round trip of a hand-over between two"
        " threads meanwhile (two wake-ups; tens of microseconds on a quiet host); flush max = the"
        " longest of the probe's own flushes to the same disk meanwhile (ten a second)"
    )
    st = results.get("stitch")
    if st:
        title += (
            f"\nbatch, nested = the Stitch route POST /v2/import/batch, {st['connections']} connections"
            f" ({st['connections']} bodies in flight), latency per body: batch same = the RJMetrics"
            f" route's records (six fields) in target-stitch's bodies of {st['records_per_body']['same']:,}"
            f" ({st['body_mb']['same']:.1f} MB), batch = "
            f"{st['records_per_body']['flat']:,} flat records per body ({st['body_mb']['flat']:.1f} MB),"
            f" nested = {st['records_per_body']['nested']:,} orders per body"
            f" ({st['body_mb']['nested']:.1f} MB; a customer object, 5 line items, 5 payments),"
            " records/s = orders/s"
        )
    header = (
        f"{'mix':10} {'system':12} {'records/s':>10} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'½-rate p50':>10} {'p95':>7} {'p99':>7} {'host slow':>9} {'steal':>5} {'wake us':>7} {'flush max':>9} {'errors':>6} {'peak MB':>8}"
    )
    lines = [title, "", header]
    for mix in results["mixes"]:
        r = results["mixes"][mix]
        lines += [_row(mix, system, r[system]) for system in ROW_ORDER if system in r]
        lines.append(
            f"{'':10} {'ratios':12} importapi/datasette {r['ratio_peer']:.1f}x, "
            f"importapi/limit {r['ratio_limit'] * 100:.0f}%"
        )
        if "ratio_sqlite_best" in r:
            pg = r.get("ratio_postgresql_best", {})
            pg_text = ", ".join(f"{system}/pg best {ratio * 100:.0f}%" for system, ratio in pg.items())
            lines.append(
                f"{'':10} {'best cases':12} importapi/sqlite best {r['ratio_sqlite_best'] * 100:.0f}%"
                + (f", {pg_text}" if pg_text else "")
            )
    if st:
        lines += report_stitch(st)
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
    ascending = results["mixes"].get("ascending")
    mem = ascending["importapi"]["runs"][0]["rss_samples_mb"] if ascending else []
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
    for shape, label in STITCH_SHAPES.items():
        old = previous.get("stitch", {}).get(shape, {}).get("importapi", {}).get("records_per_s")
        new = results.get("stitch", {}).get(shape, {}).get("importapi", {}).get("records_per_s")
        if old and new:
            lines.append(f"  {label:10} {old:10.0f} -> {new:10.0f}  ({(new / old - 1) * 100:+.0f}%)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--half-rate-seconds", type=int, default=6)
    parser.add_argument("--growth-rows", type=int, default=10_000_000, help="0 skips the growth run")
    parser.add_argument("--mixes")
    parser.add_argument("--prefill", type=int, default=PREFILL, help="rows the replace mix starts with")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of a couple of minutes: short runs, one round, no growth run, the"
        " ascending mix only unless --mixes is given",
    )
    parser.add_argument("--no-postgres", action="store_true", help="leave out the PostgreSQL rows")
    parser.add_argument("--stitch-seconds", type=int, help="the batch route's runs (default: --seconds)")
    parser.add_argument("--stitch-connections", type=int, default=4, help="bodies in flight at once")
    parser.add_argument("--no-stitch", action="store_true", help="leave out the Stitch batch route")
    args = parser.parse_args()
    best_requests = best.REQUESTS
    if args.quick:
        args.seconds, args.rounds, args.half_rate_seconds, args.growth_rows = 3, 1, 2, 0
        args.prefill, args.mixes, best_requests = 10_000, args.mixes or "ascending", 500
    args.mixes = args.mixes or ",".join(MIXES)
    stitch_seconds = args.stitch_seconds or args.seconds

    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "prefill": args.prefill,
        "mixes": {},
    }
    systems = ["importapi", "datasette"]
    problem = "left out (--no-postgres)" if args.no_postgres else postgres_problem()
    if problem is None:
        systems += POSTGRES_SYSTEMS
    else:
        print(f"  the PostgreSQL rows are skipped: {problem}", flush=True)
        results["postgres_skipped"] = problem
    in_process = ["limit", "sqlite_best"] + (["postgresql_best"] if problem is None else [])
    for mix in args.mixes.split(","):
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in [*systems, *in_process]}
        for _ in range(args.rounds):
            for system in systems:
                runs[system].append(one_run(system, mix, args.seconds, args.prefill))
                print(f"  {mix} {system}: {runs[system][-1]['records_per_s']:.0f} records/s", flush=True)
            runs["limit"].append(limit.measure(mix, args.prefill))
            runs["sqlite_best"].append(best.sqlite(mix, args.prefill, best_requests))
            if "postgresql_best" in runs:
                runs["postgresql_best"].append(best.postgres(mix, args.prefill, requests=2 * best_requests))
            print(
                "  "
                + mix
                + ", in process: "
                + ", ".join(f"{k} {runs[k][-1]['records_per_s']:.0f}" for k in in_process)
                + " records/s",
                flush=True,
            )
        r = {system: median_of(v) for system, v in runs.items()}
        # latency at half of each system's median maximum: alternating rounds too, medians kept
        halves: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        for _ in range(args.rounds):
            for system in systems:
                halves[system].append(
                    half_rate(system, mix, r[system]["records_per_s"], args.half_rate_seconds, args.prefill)
                )
        for system in systems:
            r[system]["half_rate"] = median_of(halves[system])
        r["ratio_peer"] = r["importapi"]["records_per_s"] / r["datasette"]["records_per_s"]
        r["ratio_limit"] = r["importapi"]["records_per_s"] / r["limit"]["records_per_s"]
        r["ratio_sqlite_best"] = r["importapi"]["records_per_s"] / r["sqlite_best"]["records_per_s"]
        if "postgresql_best" in r:
            r["ratio_postgresql_best"] = {
                system: r[system]["records_per_s"] / r["postgresql_best"]["records_per_s"]
                for system in POSTGRES_SYSTEMS
            }
        results["mixes"][mix] = r
    if not args.no_stitch:
        stitch_systems = [s for s in STITCH_SYSTEMS if s in systems]
        rjmetrics = results["mixes"].get("ascending", {})
        results["stitch"] = measure_stitch(
            stitch_systems, args.rounds, stitch_seconds, args.stitch_connections, rjmetrics
        )
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
