"""How a long push shows it is alive: a live bar on a terminal, plain lines elsewhere.

On a terminal, a rich progress bar over the input's bytes (a pulsing one for a pipe) with
the records acknowledged and the current records per second. Anywhere else (a log file,
CI), one plain line every ``interval`` seconds, so logs stay readable.
"""

from __future__ import annotations

import time
from collections import deque
from typing import IO, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from importapi.client import PushSummary


class Rate:
    """Records per second over the last few seconds."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, records: int, now: float) -> float:
        self.samples.append((now, records))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        then, before = self.samples[0]
        return (records - before) / (now - then) if now > then else 0.0


class Display:
    """Shows a push's progress on ``stream`` (stderr by default)."""

    def __init__(self, label: str, total_bytes: int | None, stream: IO[str], *, interval: float) -> None:
        self.label = label
        self.total = total_bytes
        self.stream = stream
        self.interval = interval
        self.rate = Rate()
        self._started = time.monotonic()
        self._last_line = self._started
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if stream.isatty():
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[records]:>12,} records"),
                TextColumn("{task.fields[rate]:>9,.0f} records/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=stream),
                refresh_per_second=4,
            )
            self._task = self._bar.add_task(label, total=total_bytes, records=0, rate=0.0)

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, summary: PushSummary, position: int) -> None:
        """``position`` is how far into the input (in bytes) the acknowledged records reach."""
        now = time.monotonic()
        rate = self.rate.add(summary.records, now)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=position, records=summary.records, rate=rate)
        elif now - self._last_line >= self.interval:
            self._last_line = now
            self.line(summary, position, rate, now)

    def line(self, summary: PushSummary, position: int, rate: float, now: float) -> None:
        share = f" ({100 * position / self.total:.1f}%)" if self.total else ""
        self.stream.write(
            f"{self.label}: {summary.records:,} records{share} in {summary.requests:,} requests, "
            f"{rate:,.0f} records/s, {summary.retries:,} retries, {now - self._started:,.1f} s\n"
        )
        self.stream.flush()
