"""CPU time of a function on one input, for the in-process benchmarks."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any


def cpu_seconds(
    fn: Callable[[bytes], Any], raw: bytes, repeats: int, *, pause_gc: bool = False
) -> list[float]:
    """CPU seconds of this process for each of ``repeats`` calls (not wall time: another
    process on a small machine does not count), each after a collection; the collector runs
    during the call unless ``pause_gc``."""
    times = []
    for _ in range(repeats):
        gc.collect()
        if pause_gc:
            gc.disable()
        t0 = time.process_time()
        try:
            fn(raw)
        finally:
            times.append(time.process_time() - t0)
            gc.enable()
    return times
