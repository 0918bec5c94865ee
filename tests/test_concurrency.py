"""Several server processes on one warehouse, pushed to at the same time, on both backends.

Four server processes (one ``importapi serve --workers 2`` and two single ones on other
ports) share a warehouse; 16 writers push at once, round-robin over the ports:

- the first push to a brand-new table, from every writer at the same moment, each with
  columns of its own;
- then many pushes to one table and the same few keys, each writer adding a column of its
  own and a column whose values are integers or doubles (so it widens while others write).

Then: every request was answered 201 (no 500, no 503), the inserted counts add up to the
rows there are (each key was new exactly once), every row is exactly one data point of one
request (never a mix), and the final state is that of some serial order of the requests:
for each key, the request whose data point the row holds is the last of all requests that
wrote that key, and these "came before" facts have no cycle.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from importapi.storage import open_storage
from tests.backends import warehouse
from tests.helpers import cli_json, free_port, wait_until

WRITERS = 16
REQUESTS = 12
POINTS = 8
SHARED_KEYS = 24
pytestmark = pytest.mark.e2e


@contextmanager
def server_process(database: str, log: Path, workers: int = 1) -> Iterator[str]:
    """``importapi serve`` on a free port; its base URL once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "IMPORTAPI_DATABASE"}
    env.update(PYTHONUNBUFFERED="1", IMPORTAPI_ACCESS_LOG="0")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "importapi",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--database",
                database,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"

            def up() -> bool:
                assert proc.poll() is None, log.read_text()
                try:
                    return httpx.get(base + "/", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, timeout=60, what=f"the server on port {port}")
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Writer(threading.Thread):
    """Pushes its requests in turn, each to the next server; remembers every answer."""

    def __init__(
        self,
        n: int,
        bases: list[str],
        key: str,
        plan: list[tuple[str, list[dict[str, Any]]]],
        start: threading.Barrier,
    ) -> None:
        super().__init__(name=f"writer-{n}")
        self.n, self.bases, self.key, self.plan, self.start_together = n, bases, key, plan, start
        self.answers: list[tuple[str, int, dict[str, Any]]] = []

    def run(self) -> None:
        with httpx.Client(timeout=120) as http:
            for i, (table, points) in enumerate(self.plan):
                if i == 0:
                    self.start_together.wait(timeout=120)
                base = self.bases[(self.n + i) % len(self.bases)]
                r = http.post(
                    f"{base}/v2/client/1/table/{table}/data", params={"apikey": self.key}, json=points
                )
                self.answers.append((table, r.status_code, r.json()))


def _plans(rng: random.Random) -> list[list[tuple[str, list[dict[str, Any]]]]]:
    plans = []
    for w in range(WRITERS):
        # the first request: a new table for everyone at once, some keys shared, own columns
        first = [
            {"keys": ["id"], "id": k, "req": f"{w}.0", "first_w": w, f"only_{w}": f"w{w}"}
            for k in [0, 1, 100 + w]
        ]
        plan = [("fresh", first)]
        for r in range(1, REQUESTS + 1):
            keys = rng.sample(range(SHARED_KEYS), POINTS)
            points = [
                {
                    "keys": ["id"],
                    "id": k,
                    "req": f"{w}.{r}",
                    "writer": w,
                    f"col_{w}": r,
                    "mixed": r if (w + r) % 2 else r + 0.5,
                }
                for k in keys
            ]
            plan.append(("shared", points))
        plans.append(plan)
    return plans


def _serial_order_exists(final: dict[Any, str], touched: dict[Any, set[str]]) -> bool:
    """Is there an order of requests in which, for every key, the request the row came from
    is the last that wrote the key? (Kahn's algorithm on the "must come before" edges.)"""
    after: dict[str, set[str]] = defaultdict(set)
    for key, winner in final.items():
        for req in touched[key] - {winner}:
            after[req].add(winner)
    nodes = set(itertools.chain.from_iterable(touched.values()))
    incoming = dict.fromkeys(nodes, 0)
    for targets in after.values():
        for t in targets:
            incoming[t] += 1
    ready = [n for n, c in incoming.items() if c == 0]
    seen = 0
    while ready:
        n = ready.pop()
        seen += 1
        for t in after.get(n, ()):
            incoming[t] -= 1
            if incoming[t] == 0:
                ready.append(t)
    return seen == len(nodes)


def _check_table(storage: Any, table: str, sent: dict[str, list[dict[str, Any]]], inserted: int) -> None:
    columns, rows = storage.warehouse.read_rows(1, table)
    final = [dict(zip(columns, row)) for row in rows]
    by_req = {req: {p["id"]: p for p in points} for req, points in sent.items()}
    touched: dict[Any, set[str]] = defaultdict(set)
    for req, points in by_req.items():
        for key in points:
            touched[key].add(req)
    assert sorted(r["id"] for r in final) == sorted(touched), "a key is missing or extra"
    assert inserted == len(final), "each key must be counted as inserted exactly once"
    winners = {}
    for row in final:
        point = by_req[row["req"]][row["id"]]
        expected = {c: point.get(c) for c in columns}
        assert row == expected, f"row {row['id']} is not exactly the data point of request {row['req']}"
        winners[row["id"]] = row["req"]
    assert _serial_order_exists(winners, touched), "no serial order of the requests gives this state"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_processes_sixteen_writers_same_table_same_keys_new_columns(
    backend: str, tmp_path: Path
) -> None:
    with warehouse(backend, tmp_path / "warehouse") as database, ExitStack() as stack:
        cli_json("clients", "create", "shop", "--json", database=database)
        key = cli_json("keys", "create", "1", "--json", database=database)["api_key"]
        # four server processes: one with two workers, and two more on ports of their own
        bases = [
            stack.enter_context(server_process(database, tmp_path / f"server{i}.log", workers))
            for i, workers in enumerate([2, 1, 1])
        ]
        plans = _plans(random.Random(4))
        start = threading.Barrier(WRITERS)
        writers = [Writer(n, bases, key, plan, start) for n, plan in enumerate(plans)]
        began = time.monotonic()
        for w in writers:
            w.start()
        for w in writers:
            w.join(timeout=600)
            assert not w.is_alive(), "a writer did not finish"
        answers = [a for w in writers for a in w.answers]
        print(f"{backend}: {len(answers)} requests from {WRITERS} writers in {time.monotonic() - began:.1f}s")
        assert [(t, s, b) for t, s, b in answers if s != 201] == []
        stack.close()  # the servers stop; what they acknowledged must be there

        with open_storage(database) as storage:
            tables = {t.schema.name: t for t in storage.warehouse.tables(1)}
            assert set(tables) == {"fresh", "shared"}
            assert tables["shared"].schema.key_fields == ("id",)
            kinds = {c.name: c.kind.label for c in tables["shared"].schema.columns.values()}
            assert kinds["mixed"] == "double"
            assert {f"col_{w}" for w in range(WRITERS)} <= set(kinds)
            assert {f"only_{w}" for w in range(WRITERS)} <= set(tables["fresh"].schema.columns)
            for table in ("fresh", "shared"):
                sent = {
                    pts[0]["req"]: [{k: v for k, v in x.items() if k != "keys"} for x in pts]
                    for plan in plans
                    for t, pts in plan
                    if t == table
                }
                inserted = sum(b["inserted"] for t, _, b in answers if t == table)
                _check_table(storage, table, sent, inserted)
