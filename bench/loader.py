"""The loader's records per second, and the client's memory while it streams.

    python -m bench.loader [--lines 1000000] [--stream 200000] [--concurrency 4]

Writes a JSON Lines file of ``--lines`` records (~150 bytes each) into a temporary folder,
starts the real server (``importapi serve``, SQLite, default durability) on a free port,
and runs ``importapi push`` on the file in a pseudo-terminal, so the live progress bar is
drawn as a user would see it; prints its last frame, the summary, the rows the warehouse
holds afterwards, the wall time and records per second, and the loader's CPU time.

Then, in a fresh process, ``Client.push_data`` streams ``--stream`` records from a
generator to the same server and reports the peak of Python allocations (tracemalloc)
and the growth of the process's peak RSS while it did.

The machine is shared: figures move with whatever else runs; note the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import targets


def write_jsonl(path: Path, lines: int) -> int:
    with path.open("w") as f:
        for start in range(0, lines, 10_000):
            f.write(
                "".join(
                    f'{{"id": {i}, "name": "customer {i}", "email": "user{i}@example.com", '
                    f'"amount": {i + 0.25}, "active": {"true" if i % 2 else "false"}, '
                    f'"created_at": "2024-05-01 12:34:56"}}\n'
                    for i in range(start, min(start + 10_000, lines))
                )
            )
    return path.stat().st_size


def push_in_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str, float, float]:
    """Run ``argv`` with a pseudo-terminal as stdout and stderr; its exit code, its screen
    output, wall seconds and CPU seconds (user + system)."""
    import pty

    main, child = pty.openpty()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=child, stderr=child, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    code = proc.wait()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return code, b"".join(chunks).decode("utf-8", "replace"), wall, cpu


def last_frame(screen: str) -> str:
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    frames = [line.strip() for line in re.split(r"[\r\n]", plain) if "records/s" in line and "━" in line]
    return frames[-1] if frames else "(no progress bar drawn)"


MEMORY_CHILD = """
import json, sys, tracemalloc
from importapi.client import Client

base, key, n, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def vm(name):
    for line in open("/proc/self/status"):
        if line.startswith(name):
            return int(line.split()[1]) * 1024
    return 0

def records():
    for i in range(n):
        yield {"keys": ["id"], "id": i, "name": f"customer {i}", "email": f"user{i}@example.com",
               "amount": i + 0.25, "active": i % 2 == 0, "created_at": "2024-05-01 12:34:56"}

with Client(1, key, url=base, concurrency=concurrency) as client:
    client.authenticate()
    rss_before = vm("VmHWM")
    tracemalloc.start()
    summary = client.push_data("streamed", records())
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
print(json.dumps({"summary": summary.as_dict(), "traced_peak": traced_peak,
                  "rss_peak_growth": vm("VmHWM") - rss_before, "rss_peak": vm("VmHWM")}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--stream", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="importapi-bench-loader-"))
    path = folder / "records.jsonl"
    size = write_jsonl(path, args.lines)
    print(f"input: {args.lines:,} lines, {size / 1e6:,.1f} MB of JSON Lines in {folder}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (shared)")
    try:
        with targets.importapi(folder / "warehouse") as target:
            base, key = target.base, target.key
            env = {
                **os.environ,
                "IMPORTAPI_API_KEY": key,
                "IMPORTAPI_URL": base,
                "TERM": "xterm-256color",
                "COLUMNS": "150",
            }
            argv = [
                sys.executable,
                "-m",
                "importapi",
                "push",
                "bench",
                str(path),
                "--keys",
                "id",
                "--concurrency",
                str(args.concurrency),
                "--json",
            ]
            code, screen, wall, cpu = push_in_terminal(argv, env)
            found = re.search(r"^\{.*\}\s*$", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen), re.MULTILINE)
            if code != 0 or not found:
                raise SystemExit(f"push failed ({code}):\n{screen[-3000:]}")
            summary = json.loads(found.group(0))
            rows = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "importapi",
                    "query",
                    "1",
                    "SELECT count(*) AS n FROM bench",
                    "--format",
                    "json",
                    "--database",
                    str(folder / "warehouse"),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            print(f"last progress frame: {last_frame(screen)}")
            print(f"summary: {json.dumps(summary)}")
            print(f"rows in the warehouse afterwards: {json.loads(rows)[0]['n']:,}")
            print(
                f"loader: {summary['records'] / wall:,.0f} records/s over {wall:,.1f} s wall "
                f"(importapi push, --concurrency {args.concurrency}, server on the same 2 cores); "
                f"the loader's own CPU {cpu:,.1f} s = {cpu / summary['records'] * 1e6:,.1f} µs per record"
            )

            done = subprocess.run(
                [sys.executable, "-c", MEMORY_CHILD, base, key, str(args.stream), str(args.concurrency)],
                capture_output=True,
                text=True,
                check=True,
            )
            mem = json.loads(done.stdout)
            print(
                f"client streaming {args.stream:,} records from a generator: "
                f"peak Python allocations {mem['traced_peak'] / 1e6:,.2f} MB (tracemalloc), "
                f"peak RSS grew {mem['rss_peak_growth'] / 1e6:,.2f} MB while streaming "
                f"(process peak {mem['rss_peak'] / 1e6:,.1f} MB); "
                f"{mem['summary']['records']:,} records in {mem['summary']['requests']:,} requests"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
