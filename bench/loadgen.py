"""An open-loop load generator: requests at a fixed rate, latency from the scheduled time.

Used for latency at a given rate (half of the maximum): a closed loop (like wrk) waits for
answers before sending more and so hides queueing; here each request has its slot in time,
and a late answer counts from that slot (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bench.records import body_for


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> int:
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def _run(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    make_body: Callable[[int], bytes],
    rate: float,
    seconds: float,
    connections: int,
) -> tuple[list[float], int]:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: "
    ).encode()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0

    total = int(rate * seconds)
    bodies = [make_body(n) for n in range(total)]  # made before the clock starts

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        while (item := await queue.get()) is not None:
            n, scheduled = item
            try:
                status = await _request(reader, writer, head, bodies[n])
            except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
                errors += 1  # the server closed the connection: count it, open another
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            latencies.append(time.perf_counter() - scheduled)
            errors += status >= 300
        writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter() + 0.05
    for n in range(total):
        slot = start + n / rate
        delay = slot - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((n, slot))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, errors


def fixed_rate(
    host: str,
    port: int,
    path: str,
    *,
    fmt: str,
    mix: str,
    base: int,
    prefilled: int,
    rate: float,
    seconds: float,
    headers: dict[str, str] | None = None,
    connections: int = 64,
) -> dict[str, float]:
    latencies, errors = asyncio.run(
        _run(
            host,
            port,
            path,
            headers or {},
            lambda n: body_for(fmt, mix, n, base, prefilled),
            rate,
            seconds,
            connections,
        )
    )
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {"rate_rps": rate, "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "errors": errors}
