"""What the routes share (``importapi.http.Services``): big bodies are read off the event
loop, one at a time, in the order they arrived."""

from __future__ import annotations

import asyncio
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

from importapi.app import create_app
from importapi.settings import Settings


def test_big_bodies_are_read_one_at_a_time_in_arrival_order_off_the_loop(tmp_path: Path) -> None:
    app = create_app(Settings(database=str(tmp_path), access_log=False))
    spans: list[tuple[int, float, float, int]] = []

    def reading(n: int) -> int:
        start = time.monotonic()
        time.sleep(0.05)
        spans.append((n, start, time.monotonic(), threading.get_ident()))
        return n

    async def main() -> tuple[list[int], int]:
        loop_thread = threading.get_ident()
        results = await asyncio.gather(
            *(app.services.read_in_thread(lambda n=n: reading(n)) for n in range(4))
        )
        return list(results), loop_thread

    try:
        results, loop_thread = asyncio.run(main())
    finally:
        app.close()
    assert results == [0, 1, 2, 3]
    assert [n for n, *_ in spans] == [0, 1, 2, 3]
    for (_, _, end, _), (_, start, _, _) in pairwise(spans):
        assert start >= end  # the next began after the one before had ended
    assert all(thread != loop_thread for *_, thread in spans)
    with pytest.raises(RuntimeError):  # closed with the application
        app.services.reader.submit(print)
