"""How steady the machine's CPU is while a latency measurement runs.

On a shared virtual machine the host now and then slows every core at once, for tens of
milliseconds at a time; the tail of a latency measurement taken then describes the host as much
as the server. This probe runs a fixed piece of pure-Python work (a few hundred microseconds)
every 10 ms in a process of its own, and times each piece in the CPU time of its own thread:
waiting while the server's threads run does not count, a core that runs slowly does. It reports
the median piece and the share of pieces that took at least three times the median.

    python -m bench.steadiness SECONDS     # prints one JSON object
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Self

SLOW = 3.0  # a piece this many times its median counts as slowed down


def _piece() -> int:
    total = 0
    for i in range(3000):
        total += i * i
    return total


def probe(seconds: float, every: float = 0.01) -> dict[str, float]:
    pieces: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.thread_time()
        _piece()
        pieces.append(time.thread_time() - started)
        time.sleep(every)
    median = statistics.median(pieces)
    return {
        "samples": len(pieces),
        "median_ms": median * 1000,
        "p99_ms": sorted(pieces)[int(0.99 * (len(pieces) - 1))] * 1000,
        "slow_pct": 100 * sum(p >= SLOW * median for p in pieces) / len(pieces),
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
