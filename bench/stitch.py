"""The Stitch Import API's batch route under load: bodies as target-stitch writes them, posted
by a small closed-loop client over a few connections.

    python -m bench.stitch [--shape same|flat|nested] [--seconds 8] [--connections 4]

Bodies (``POST /v2/import/batch``) are laid out and spelled as target-stitch 4.0.3 writes them
(simplejson: ``", "`` and ``": "`` separators, non-ASCII escaped, two-decimal amounts written
exactly as ``12.50``, sequences about 1.8e18 and increasing, ``table_version`` at the end):

- ``same``: 20,000 records of the RJMetrics route's benchmark (``bench/records.py``: six
  fields, an integer key, text, a double, a boolean), so the two routes meet on the same
  records, about 5.5 MB;
- ``flat``: 20,000 records of ten typed fields (an integer key, strings, a ``number`` with
  ``multipleOf: 0.01``, two date-times, a nullable integer, a boolean), about 7.6 MB;
- ``nested``: 7,500 orders, each with a ``customer`` object (three columns once flattened)
  and two arrays of five objects (``line_items``, ``payments``: two subtables), about the
  same bytes as a flat body; each order is 11 rows in the warehouse.

Keys are new and ascending. Every body is built before the clock starts; each connection
posts one, waits for the answer, posts the next, until the time is up or the bodies run
out (the rate is then over the shorter time). Records/s counts the records (orders, for
nested bodies) of bodies answered 201 only, over the time from the first post to the last
answer; latency is per body, from its first byte sent to its answer. The client is a
thread per connection over a blocking socket (a body goes out in one ``sendall``). Beside
the load, a probe in a process of its own asks for the server's cheapest answer (a GET of
the route, 405) every 25 ms: how long any other request waits while the bodies are in
flight, and the share of the time it waited 100 ms or more (``probe_stalled_pct``).
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import subprocess
import sys
import threading
import time
from typing import Any, BinaryIO, Self

from bench.records import record

TABLE_VERSION = 1796111209374
SEQUENCE_BASE = 1796113870373400000  # target-stitch's: nanoseconds since 1970, then a counter
EXTRACTED = "2026-12-01T07:46:49.376708Z"
RECORDS = {"flat": 20_000, "same": 20_000, "nested": 7_500}  # flat and nested: about 7.6 MB a body
ROWS_PER_RECORD = {"flat": 1, "same": 1, "nested": 11}  # in the warehouse: the order, 5 + 5 subtable rows
STALL = 0.1  # seconds: a probe's answer this late means the server answered nothing meanwhile

FLAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["null", "string"]},
        "email": {"type": ["null", "string"]},
        "amount": {"type": ["null", "number"], "multipleOf": 0.01},
        "created_at": {"type": ["null", "string"], "format": "date-time"},
        "updated_at": {"type": ["null", "string"], "format": "date-time"},
        "quantity": {"type": ["null", "integer"]},
        "active": {"type": ["null", "boolean"]},
        "country": {"type": ["null", "string"]},
        "city": {"type": ["null", "string"]},
    },
}


# ``same``: the RJMetrics route's benchmark records (bench/records.py), field for field, so the
# two routes are compared on the same records
SAME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["null", "string"]},
        "email": {"type": ["null", "string"]},
        "amount": {"type": ["null", "number"]},
        "active": {"type": ["null", "boolean"]},
        "created_at": {"type": ["null", "string"]},
    },
}


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": ["null", "object"], "properties": properties}


NESTED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "status": {"type": ["null", "string"]},
        "total": {"type": ["null", "number"], "multipleOf": 0.01},
        "ordered_at": {"type": ["null", "string"], "format": "date-time"},
        "customer": _object(
            id={"type": ["null", "integer"]},
            name={"type": ["null", "string"]},
            email={"type": ["null", "string"]},
        ),
        "line_items": {
            "type": ["null", "array"],
            "items": _object(
                sku={"type": ["null", "string"]},
                quantity={"type": ["null", "integer"]},
                price={"type": ["null", "number"], "multipleOf": 0.01},
            ),
        },
        "payments": {
            "type": ["null", "array"],
            "items": _object(
                method={"type": ["null", "string"]},
                amount={"type": ["null", "number"], "multipleOf": 0.01},
                paid_at={"type": ["null", "string"], "format": "date-time"},
            ),
        },
    },
}

# non-ASCII names, escaped as simplejson escapes them (ensure_ascii)
_CITIES = ("M\\u00fcnchen", "K\\u00f6ln", "Z\\u00fcrich", "Malm\\u00f6", "Paris", "S\\u00e3o Paulo")
_COUNTRIES = ("DE", "DE", "CH", "SE", "FR", "BR")
_METHODS = ("card", "paypal", "sepa", "gift card", "invoice")


def _cents(n: int) -> str:
    """An amount with two decimals, written as simplejson writes a Decimal: ``12.50``."""
    return f"{n // 100}.{n % 100:02d}"


def _instant(i: int) -> str:
    return (
        f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}T{i % 24:02d}:{i % 60:02d}:{i * 7 % 60:02d}.{i % 999983:06d}Z"
    )


def flat_data(i: int) -> str:
    """One flat record's ``data`` object, as JSON text (key ``i``)."""
    quantity = "null" if i % 7 == 0 else str(i % 50)
    return (
        f'{{"id": {i}, "name": "customer {i}", "email": "user{i}@example.com", '
        f'"amount": {_cents(i % 100_000 + 50)}, "created_at": "{_instant(i)}", '
        f'"updated_at": "{_instant(i + 1)}", "quantity": {quantity}, '
        f'"active": {"true" if i % 2 == 0 else "false"}, "country": "{_COUNTRIES[i % 6]}", '
        f'"city": "{_CITIES[i % 6]}"}}'
    )


def same_data(i: int) -> str:
    """The RJMetrics benchmark's record ``i`` (bench/records.py), written as simplejson does."""
    return json.dumps(record(i), separators=(", ", ": "))


def nested_data(i: int) -> str:
    """One order with its customer and five line items and five payments, as JSON text."""
    customer = i // 3
    items = ", ".join(
        f'{{"sku": "SKU-{(i + k) % 100_000:06d}", "quantity": {k + 1}, "price": {_cents((i + k) % 10_000 + 99)}}}'
        for k in range(5)
    )
    payments = ", ".join(
        f'{{"method": "{_METHODS[k]}", "amount": {_cents((i + k) % 5_000 + 1)}, "paid_at": "{_instant(i + k)}"}}'
        for k in range(5)
    )
    return (
        f'{{"id": {i}, "status": "shipped", "total": {_cents(i % 100_000 + 1)}, '
        f'"ordered_at": "{_instant(i)}", "customer": {{"id": {customer}, "name": "customer {customer}", '
        f'"email": "user{customer}@example.com"}}, "line_items": [{items}], "payments": [{payments}]}}'
    )


def body(shape: str, n: int, base: int, records: int | None = None) -> bytes:
    """Body ``n`` of a run: keys ``base + n * records`` onwards, sequences after body n-1's."""
    records = records or RECORDS[shape]
    data = {"flat": flat_data, "same": same_data, "nested": nested_data}[shape]
    schema = {"flat": FLAT_SCHEMA, "same": SAME_SCHEMA, "nested": NESTED_SCHEMA}[shape]
    first = n * records
    messages = ", ".join(
        f'{{"action": "upsert", "data": {data(base + first + j)}, '
        f'"sequence": {SEQUENCE_BASE + (first + j) * 1000 + j % 1000}, "time_extracted": "{EXTRACTED}"}}'
        for j in range(records)
    )
    table = "orders" if shape == "nested" else "customers"
    return (
        f'{{"table_name": "{table}", "schema": {json.dumps(schema)}, "key_names": ["id"], '
        f'"messages": [{messages}], "table_version": {TABLE_VERSION}}}'
    ).encode()


def _answer(stream: BinaryIO) -> tuple[int, bytes]:
    """Read one HTTP answer: its status and its body."""
    status_line = stream.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(status_line.split()[1]), stream.read(length)


class _Connection:
    """One keep-alive connection over a blocking socket: ``sendall`` writes a body of
    megabytes in one call that holds no Python lock, so the client costs little CPU."""

    def __init__(self, host: str, port: int, timeout: float = 300) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._open()

    def _open(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rb")

    def request(self, head: bytes, data: bytes = b"") -> tuple[int, bytes]:
        self.sock.sendall(head)
        if data:
            self.sock.sendall(data)
        return _answer(self.stream)

    def reopen(self) -> None:
        self.close()
        self._open()

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


def _percentiles(latencies: list[float], prefix: str = "") -> dict[str, float]:
    latencies = sorted(latencies) or [0.0]

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        f"{prefix}p50_ms": pct(50),
        f"{prefix}p95_ms": pct(95),
        f"{prefix}p99_ms": pct(99),
        f"{prefix}max_ms": latencies[-1] * 1000,
    }


def probe(host: str, port: int, stop: threading.Event, every: float = 0.025) -> dict[str, float]:
    """The latency of the server's cheapest answer (a GET of the batch route: 405, no key, no
    body, nothing stored) every ``every`` seconds until ``stop`` is set; and the share of the
    time spent waiting in answers of STALL or longer (the server answering nothing)."""
    request = f"GET /v2/import/batch HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    conn = _Connection(host, port)
    latencies = []
    started = time.perf_counter()
    while not stop.wait(every):
        sent = time.perf_counter()
        try:
            conn.request(request)
        except OSError:
            conn.reopen()  # not timed: the server closed the connection
            continue
        latencies.append(time.perf_counter() - sent)
    conn.close()
    stalled = sum(x for x in latencies if x >= STALL)
    return {
        "probe_samples": len(latencies),
        **_percentiles(latencies, "probe_"),
        "probe_stalled_pct": 100 * stalled / (time.perf_counter() - started),
    }


class Probe:
    """``probe`` in a process of its own for as long as the ``with`` block lasts, so that
    neither the load generator's threads nor its lock delay it; ``result`` afterwards."""

    def __init__(self, host: str, port: int) -> None:
        self.address = f"{host}:{port}"
        self.result: dict[str, float] = {}

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.stitch", "--probe", self.address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self.proc.communicate("", timeout=60)  # its stdin closes: it stops
        if out.strip():
            self.result = json.loads(out)


def _probe_main(address: str) -> None:
    host, _, port = address.rpartition(":")
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps(probe(host, int(port), stop)))


def closed_loop(
    host: str, port: int, token: str, bodies: list[bytes], *, records: int, connections: int, seconds: float
) -> dict[str, Any]:
    """Post ``bodies`` (``records`` each) over ``connections`` connections (a thread each) for
    ``seconds``, with the probe beside them."""
    head = (
        f"POST /v2/import/batch HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counts = {"acked": 0, "failed": 0, "ran_out": 0}
    sample: list[str] = []
    pending = iter(range(len(bodies)))
    last = [0.0]

    def connection() -> None:
        conn = _Connection(host, port)
        while time.perf_counter() < deadline:
            with lock:
                n = next(pending, None)
            if n is None:
                counts["ran_out"] = 1  # every body was sent before the time was up
                break
            data = bodies[n]
            sent = time.perf_counter()
            try:
                status, answer = conn.request(head + str(len(data)).encode() + b"\r\n\r\n", data)
            except (OSError, ValueError, IndexError) as exc:
                with lock:  # the connection failed: count it, open another
                    counts["failed"] += 1
                    sample.append(f"{type(exc).__name__}: {exc}")
                conn.reopen()
                continue
            done = time.perf_counter()
            with lock:
                last[0] = max(last[0], done)
                latencies.append(done - sent)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 201:
                    counts["acked"] += records
                else:
                    counts["failed"] += 1
                    sample.append(f"{status} {answer[:300].decode(errors='replace')}")
        conn.close()

    with Probe(host, port) as probed:
        threads = [threading.Thread(target=connection) for _ in range(connections)]
        started = time.perf_counter()
        deadline = started + seconds
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    elapsed = last[0] - started
    return {
        "records_per_s": counts["acked"] / elapsed if elapsed > 0 else 0.0,
        "seconds_run": elapsed,
        "bodies_ran_out": float(counts["ran_out"]),
        "errors": counts["failed"],
        "requests": len(latencies),
        **_percentiles(latencies),
        **probed.result,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "error_sample": sample[0] if sample else "",
    }


POOL_RATE = {
    "flat": 120_000,
    "same": 200_000,
    "nested": 20_000,
}  # records/s the bodies built for a run can feed


def make_bodies(shape: str, seconds: float, connections: int, base: int) -> list[bytes]:
    """Enough bodies for ``seconds`` at POOL_RATE (at a higher rate a run ends when they run
    out, and its rate is over that shorter time): keys from ``base``."""
    count = max(2 * connections, math.ceil(seconds * POOL_RATE[shape] / RECORDS[shape]) + connections)
    return [body(shape, n, base) for n in range(count)]


def main() -> None:
    from bench import targets

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(RECORDS), default="flat")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--probe", metavar="HOST:PORT", help=argparse.SUPPRESS)  # Probe's process
    args = parser.parse_args()
    if args.probe:
        _probe_main(args.probe)
        return
    pool = make_bodies(args.shape, args.seconds, args.connections, 10**9)
    print(f"{len(pool)} bodies of {len(pool[0]) / 1e6:.1f} MB", flush=True)
    with targets.importapi() as target:
        result = closed_loop(
            "127.0.0.1",
            target.port,
            target.key,
            pool,
            records=RECORDS[args.shape],
            connections=args.connections,
            seconds=args.seconds,
        )
        result["peak_rss_mb"] = targets.rss_mb(target.pid, "VmHWM")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
