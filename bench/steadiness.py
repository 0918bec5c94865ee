"""How steady the machine's CPU is while a latency measurement runs.

On a shared virtual machine the host now and then slows every core at once, for tens of
milliseconds at a time; the tail of a latency measurement taken then describes the host as much
as the server. This probe runs a fixed piece of pure-Python work (a few hundred microseconds)
every 10 ms in a process of its own, and times each piece in the CPU time of its own thread:
waiting while the server's threads run does not count, a core that runs slowly does. It reports
the median piece and the share of pieces that took at least three times the median.

Two more readings see what that one cannot. A core the host takes away entirely for a while
(steal time, from ``/proc/stat``) does not count in a thread's CPU time, so the share of the
machine's time the host took is reported on its own. And a thread woken by another waits
for its core to be woken too: on a virtual machine whose idle cores halt, that costs from a
few microseconds to a few hundred, and the server hands every push from thread to thread;
each piece is followed by one such hand-over, timed (two threads, a round trip). And every
tenth piece writes a page to a file of its own in the folder the servers' data goes to, and
times its flush to disk: a host's disk shared with others can hold every flush up for tens or
hundreds of milliseconds, which nothing else here would show.

    python -m bench.steadiness SECONDS     # prints one JSON object
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

SLOW = 3.0  # a piece this many times its median counts as slowed down


def _piece() -> int:
    total = 0
    for i in range(3000):
        total += i * i
    return total


def _cpu_ticks() -> tuple[int, int]:
    """All the machine's CPU time so far and the part of it the host took (steal), in ticks;
    (0, 0) where ``/proc/stat`` does not say."""
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def _time_flush(fd: int, page: bytes = bytes(4096)) -> float:
    """A page written to ``fd`` and flushed to disk, timed."""
    started = time.perf_counter()
    os.pwrite(fd, page, 0)
    os.fdatasync(fd)
    return time.perf_counter() - started


class _Echo:
    """A thread that answers each item put to it: a round trip is two wake-ups."""

    def __init__(self) -> None:
        self.ask: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.told: queue.SimpleQueue[bool] = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while self.ask.get():
            self.told.put(True)

    def round_trip(self) -> float:
        started = time.perf_counter()
        self.ask.put(True)
        self.told.get()
        return time.perf_counter() - started

    def stop(self) -> None:
        self.ask.put(False)


def _pct(values: list[float], p: float) -> float:
    return sorted(values)[int(p / 100 * (len(values) - 1))]


def probe(seconds: float, every: float = 0.01) -> dict[str, float]:
    pieces: list[float] = []
    trips: list[float] = []
    echo = _Echo()
    total0, steal0 = _cpu_ticks()
    flushes: list[float] = []
    end = time.monotonic() + seconds
    with tempfile.TemporaryFile() as own:  # beside the servers' data (bench.targets)
        while time.monotonic() < end:
            started = time.thread_time()
            _piece()
            pieces.append(time.thread_time() - started)
            trips.append(echo.round_trip())
            if len(pieces) % 10 == 1:
                flushes.append(_time_flush(own.fileno()))
            time.sleep(every)
    echo.stop()
    total1, steal1 = _cpu_ticks()
    median = statistics.median(pieces)
    return {
        "samples": len(pieces),
        "median_ms": median * 1000,
        "p99_ms": _pct(pieces, 99) * 1000,
        "slow_pct": 100 * sum(p >= SLOW * median for p in pieces) / len(pieces),
        "steal_pct": 100 * (steal1 - steal0) / max(1, total1 - total0),
        "wake_p50_us": _pct(trips, 50) * 1e6,
        "wake_p99_us": _pct(trips, 99) * 1e6,
        "flush_p50_ms": _pct(flushes, 50) * 1000,
        "flush_max_ms": max(flushes) * 1000,
    }


class Steadiness:
    """Runs the probe in its own process for as long as the ``with`` block lasts (at most
    ``seconds``); ``result`` holds its figures afterwards."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.result: dict[str, float] = {}

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.steadiness", str(self.seconds)], stdout=subprocess.PIPE, text=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self.proc.communicate(timeout=self.seconds + 30)
        self.result = json.loads(out) if self.proc.returncode == 0 and out else {}


if __name__ == "__main__":
    print(json.dumps(probe(float(sys.argv[1]))))
