"""The real Stitch clients from PyPI, unchanged, against the real server: what their users see.

target-stitch 4.0.3 (the Singer target every Singer tap pipes into) and stitchclient 1.0.1
(the Python library that pushes Transit) each live in a virtual environment of their own,
named by ``IMPORTAPI_TARGET_STITCH`` (the ``target-stitch`` executable) and
``IMPORTAPI_STITCHCLIENT_PYTHON`` (a python with stitchclient); ``make test`` creates both
and sets them. Without them these tests are skipped, except under CI, where they fail.

Each test starts ``importapi serve`` on a fresh warehouse (SQLite, and PostgreSQL where it
says so), feeds a client what a tap or a program would, and reads back the warehouse. It
proves that:

- a full-table sync (ACTIVATE_VERSION before and after) lands typed rows with the system
  columns; the next sync's version replaces the table, old rows staying visible until its
  activation; incremental upserts replace rows and a re-run changes nothing of the data;
- target-stitch prints a STATE (the tap's bookmark) only after its batch got a 2xx, stops at
  once on a 4xx (nothing after the refused batch stored), and a retried 5xx lands rows once,
  even when the server had stored the first attempt;
- append-only streams are keyed by ``__sdc_primary_key``; decimals keep their cents and
  date-times are timestamps (PostgreSQL ``timestamptz``);
- stitchclient's Transit lands typed (timestamps, decimals, integers beyond 2^63), and a
  push for another client is refused with nothing stored.

``tests/failing_proxy.py`` stands between a client and the server where a test needs to hold,
drop or fail a request, or to see exactly what the client sent.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from importapi.storage import open_storage
from tests import stitch_streams as singer
from tests.backends import ADMIN_URL, declared_types, require_postgres, value_types
from tests.failing_proxy import FailingProxy, failing_proxy
from tests.helpers import Server, run_cli, start_server, stop_server, wait_until

pytestmark = pytest.mark.e2e

TARGET_STITCH_VERSION = "4.0.3"
STITCHCLIENT_VERSION = "1.0.1"
UTC = dt.UTC
SYSTEM_KINDS = {
    "_sdc_received_at": "timestamp",
    "_sdc_batched_at": "timestamp",
    "_sdc_sequence": "integer",
    "_sdc_table_version": "integer",
    "_sdc_extracted_at": "timestamp",
}
EXTRACTED = "2026-12-01T07:46:49.376708Z"


# -- the clients' environments -------------------------------------------------------------


def _client_path(variable: str, what: str) -> str:
    path = os.environ.get(variable)
    if not path:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but {variable} is not set; run the suite with `make test`", pytrace=False)
        pytest.skip(f"{variable} is not set: run `make test`, or point it at {what}")
    return os.path.abspath(path)  # not resolve(): a venv's python is a symlink out of the venv


def _installed_version(python: str, distribution: str, check: str) -> str:
    done = subprocess.run(
        [python, "-c", f"import importlib.metadata as m; {check}; print(m.version({distribution!r}))"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Set but broken is a failure, not a skip: the variable says the client is there.
    assert done.returncode == 0, f"{python} cannot load {distribution}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def target_stitch() -> str:
    path = _client_path("IMPORTAPI_TARGET_STITCH", "the target-stitch executable of target-stitch==4.0.3")
    python = os.path.join(os.path.dirname(path), "python")
    assert os.access(path, os.X_OK), f"IMPORTAPI_TARGET_STITCH={path} is not an executable"
    assert _installed_version(python, "target-stitch", "import target_stitch") == TARGET_STITCH_VERSION
    return path


@pytest.fixture(scope="module")
def stitchclient_python() -> str:
    path = _client_path("IMPORTAPI_STITCHCLIENT_PYTHON", "a python with stitchclient==1.0.1 installed")
    check = "from stitchclient.client import Client"
    assert _installed_version(path, "stitchclient", check) == STITCHCLIENT_VERSION
    return path


# -- the server and its warehouse ----------------------------------------------------------


@dataclass
class Stitch:
    """The real server on a fresh warehouse, with client 1's key; reads of that warehouse."""

    server: Server
    database: str
    tmp: Path

    def config(self, base: str | None = None) -> Path:
        """A target-stitch config for client 1, to the server or to a proxy in front of it."""
        url = f"{base or self.server.base}/v2/import/batch"
        path = self.tmp / f"config-{uuid.uuid4().hex[:8]}.json"
        path.write_text(
            json.dumps(
                {
                    "token": self.server.key,
                    "client_id": 1,
                    "small_batch_url": url,
                    "big_batch_url": url,
                    "batch_size_preferences": {},
                    "disable_collection": True,
                }
            )
        )
        return path

    def rows(self, table: str, order: str = "id") -> list[dict[str, Any]]:
        with open_storage(self.database) as storage:
            columns, rows = storage.warehouse.query(1, f'SELECT * FROM "{table}" ORDER BY {order}')
        return [dict(zip(columns, r)) for r in rows]

    def count(self, table: str) -> int:
        with open_storage(self.database) as storage:
            return int(storage.warehouse.query(1, f'SELECT count(*) FROM "{table}"')[1][0][0])

    def tables(self) -> dict[str, dict[str, Any]]:
        """``importapi tables 1 --json``, by table name."""
        with open_storage(self.database) as storage:
            return {t.schema.name: t.as_dict() for t in storage.warehouse.tables(1)}

    def kinds(self, table: str) -> dict[str, str]:
        return {c["name"]: c["type"] for c in self.tables()[table]["columns"]}

    def sql_types(self, table: str) -> dict[str, str]:
        with open_storage(self.database) as storage:
            return declared_types(storage, 1, table)

    def stored_types(self, table: str, column: str) -> list[str]:
        with open_storage(self.database) as storage:
            return value_types(storage, 1, table, column, "id")

    @property
    def backend(self) -> str:
        return "sqlite" if self.database.startswith("sqlite:") else "postgresql"


@pytest.fixture
def stitch(database: str, data_dir: Path, tmp_path: Path) -> Iterator[Stitch]:
    server = start_server(data_dir, tmp_path / "server.log", database=database)
    try:
        yield Stitch(server, database, tmp_path)
    finally:
        stop_server(server)


# -- target-stitch, run as a tap's pipe would run it -----------------------------------------


class Target:
    """One target-stitch process reading a stream from a file, its STATE lines read as they
    come, each with the ``time.monotonic()`` it was read at."""

    _numbers = itertools.count(1)

    def __init__(self, exe: str, config: Path, messages: list[singer.Message], tmp: Path, *args: str) -> None:
        n = next(self._numbers)
        stream = tmp / f"stream-{n}.jsonl"
        stream.write_bytes(singer.jsonl(messages))
        self.stderr_path = tmp / f"target-{n}.stderr"
        self.lines: list[tuple[float, dict[str, Any]]] = []
        with stream.open("rb") as stdin, self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [exe, "-c", str(config), *args], stdin=stdin, stdout=subprocess.PIPE, stderr=stderr
            )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), json.loads(line)))

    @property
    def states(self) -> list[dict[str, Any]]:
        return [value for _, value in self.lines]

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.process.wait(timeout)
        finally:
            self.stop()
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def target(target_stitch: str, stitch: Stitch) -> Iterator[Callable[..., Target]]:
    """``target(messages, *args, base=proxy.base)``: start target-stitch on a stream."""
    started: list[Target] = []

    def start(messages: list[singer.Message], *args: str, base: str | None = None) -> Target:
        t = Target(target_stitch, stitch.config(base), messages, stitch.tmp, *args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def sync(
    target: Callable[..., Target], messages: list[singer.Message], *args: str, base: str | None = None
) -> Target:
    """Run target-stitch to its end; fail with its log unless it exits 0."""
    t = target(messages, *args, base=base)
    code = t.wait()
    assert code == 0, f"target-stitch exited {code}:\n{t.stderr}"
    return t


# -- values as each backend gives them back --------------------------------------------------


def instant(value: Any) -> dt.datetime | None:
    """A timestamp column's value: PostgreSQL gives an aware datetime, SQLite ISO text in UTC."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        assert value.tzinfo is not None, f"{value!r} has no time zone"
        return value.astimezone(UTC)
    assert isinstance(value, str), f"{value!r} is not a timestamp"
    assert len(value) == len("2026-12-01T07:46:49.376708Z") and value.endswith("Z"), value
    return dt.datetime.fromisoformat(value[:-1] + "+00:00")


def exact(value: Any) -> Decimal | None:
    """A decimal column's value, which a double would not be."""
    if value is None:
        return None
    assert type(value) is not float, f"{value!r} came back as a double"
    return Decimal(str(value))


def day(value: Any) -> dt.date | None:
    if value is None or type(value) is dt.date:
        return value
    assert isinstance(value, str), f"{value!r} is not a date"
    return dt.date.fromisoformat(value)


def flag(value: Any) -> bool | None:
    assert value is None or type(value) in (bool, int), f"{value!r} is not a boolean"
    return None if value is None else bool(value)


NESTED = ("address", "tags")
"""Nested fields of the order streams: ``address`` lands as ``address__city`` ..., ``tags``
as a subtable; these tests check only that their values are there (the nested-stream tests
below check their shape)."""


def holds(row: dict[str, Any], field: str, text: str) -> bool:
    """Whether the row keeps ``text`` under ``field``: in a JSON column of that name, or in
    columns flattened from it (``field__child``)."""
    return any(
        text in json.dumps(value, default=str, ensure_ascii=False)
        for name, value in row.items()
        if name == field or name.startswith(f"{field}__")
    )


def flat(kinds: dict[str, str]) -> dict[str, str]:
    return {name: kind for name, kind in kinds.items() if not name.startswith(NESTED)}


def instant_of(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# -- full-table syncs ------------------------------------------------------------------------

ORDERS = {
    "id": singer.INTEGER,
    "name": singer.TEXT,
    "amount": singer.CENTS,
    "ratio": singer.NUMBER,
    "created_at": singer.DATE_TIME,
    "birthday": singer.DATE,
    "active": singer.BOOLEAN,
    "address": singer.OBJECT,
    "tags": singer.ARRAY,
}
ORDER_KINDS = {
    "id": "integer",
    "name": "text",
    "amount": "decimal",
    "ratio": "double",
    "created_at": "timestamp",
    "birthday": "date",
    "active": "boolean",
}
ORDER_ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "joe@schmo.com",
        "amount": Decimal("12.50"),
        "ratio": 0.1,
        "created_at": "2012-08-01T14:22:32.000000Z",
        "birthday": "1980-02-29",
        "active": True,
        "address": {"city": "Berlin", "zip": "10115"},
        "tags": ["a", "b"],
    },
    {
        "id": 2,
        "name": None,
        "amount": None,
        "ratio": None,
        "created_at": None,
        "birthday": None,
        "active": None,
        "address": None,
        "tags": None,
    },
    {
        "id": 3,
        "name": "ünïcødé 😀",
        "amount": Decimal("99999999.99"),
        "ratio": 1e-07,
        "created_at": "2026-12-01T07:46:49+00:00",
        "birthday": "2026-12-01",
        "active": False,
        "address": {"city": None, "zip": "x"},
        "tags": [],
    },
    {
        "id": 4,
        "name": "anne@schmo.com",
        "amount": Decimal("0.01"),
        "ratio": -2.5,
        "created_at": "2026-03-29T03:30:00.5+0200",
        "birthday": "2000-01-01",
        "active": True,
        "address": {"city": "Paris", "zip": None},
        "tags": ["c"],
    },
]
V1, V2 = 1796111209374, 1796197609374


def sent_sequences(proxy: FailingProxy) -> dict[int, int]:
    """Each record's sequence as target-stitch sent it (read exactly: they exceed 2^53)."""
    out = {}
    for seen in proxy.seen:
        for m in json.loads(seen.body)["messages"]:
            if m["action"] == "upsert":
                out[m["data"]["id"]] = m["sequence"]
    return out


def test_a_full_table_sync_lands_typed_rows_and_the_next_version_replaces_them(
    stitch: Stitch, target: Callable[..., Target]
) -> None:
    before = dt.datetime.now(UTC)
    first = singer.full_table_sync(
        "orders", ORDERS, ["id"], ORDER_ROWS, version=V1, first=True, time_extracted=EXTRACTED
    )
    with failing_proxy(stitch.server.base) as proxy:  # forwards all: to see the sequences sent
        run = sync(target, first, base=proxy.base)
    assert run.states == [singer.bookmark("orders", version=V1)]
    assert proxy.statuses() == [201]

    table = stitch.tables()["orders"]
    assert table["key_fields"] == ["id"]
    assert table["row_count"] == 4
    assert flat(stitch.kinds("orders")) == {**ORDER_KINDS, **SYSTEM_KINDS}
    rows = stitch.rows("orders")
    assert [r["id"] for r in rows] == [1, 2, 3, 4]
    after = dt.datetime.now(UTC)
    sequences = sent_sequences(proxy)
    for row, sent in zip(rows, ORDER_ROWS):
        assert row["_sdc_table_version"] == V1
        assert row["_sdc_sequence"] == sequences[row["id"]]  # 19 digits, kept exactly
        assert instant(row["_sdc_extracted_at"]) == instant_of(EXTRACTED)
        received, batched = instant(row["_sdc_received_at"]), instant(row["_sdc_batched_at"])
        assert received is not None and batched is not None
        assert before <= received <= batched <= after
        assert row["name"] == sent["name"]
        assert exact(row["amount"]) == sent["amount"]
        assert row["ratio"] == sent["ratio"]
        assert instant(row["created_at"]) == (sent["created_at"] and instant_of(sent["created_at"]))
        assert day(row["birthday"]) == (sent["birthday"] and dt.date.fromisoformat(sent["birthday"]))
        assert flag(row["active"]) is sent["active"]
    assert holds(rows[0], "address", "Berlin") and holds(rows[3], "address", "Paris")
    assert instant(rows[3]["created_at"]) == dt.datetime(2026, 3, 29, 1, 30, 0, 500000, tzinfo=UTC)

    # The next sync: rows 2 and 4 are gone from the source, row 1 changed. As taps send it
    # (ACTIVATE_VERSION after the records only), and split into [records] then [activation].
    changed = {**ORDER_ROWS[0], "name": "joe@example.com"}
    second = singer.full_table_sync(
        "orders", ORDERS, ["id"], [changed, ORDER_ROWS[2]], version=V2, first=False, time_extracted=EXTRACTED
    )
    with failing_proxy(stitch.server.base, {2: "hold"}) as proxy:
        run = target(second, "--max-batch-records", "2", base=proxy.base)
        wait_until(proxy.held.is_set, what="the activation's request to be held")
        # The new version's rows are in, the old version's still visible until it is activated.
        assert {r["id"]: r["_sdc_table_version"] for r in stitch.rows("orders")} == {
            1: V2,
            2: V1,
            3: V2,
            4: V1,
        }
        assert run.states == []
        proxy.release()
        assert run.wait() == 0, run.stderr
    assert [json.loads(s.body)["messages"][0]["action"] for s in proxy.seen] == ["upsert", "activate_version"]
    assert run.states == [singer.bookmark("orders", version=V2)]
    rows = stitch.rows("orders")
    assert [(r["id"], r["name"], r["_sdc_table_version"]) for r in rows] == [
        (1, "joe@example.com", V2),
        (3, "ünïcødé 😀", V2),
    ]
    assert exact(rows[1]["amount"]) == Decimal("99999999.99")
    assert stitch.tables()["orders"]["row_count"] == 2


# -- incremental upserts -----------------------------------------------------------------------

CUSTOMERS = {"id": singer.INTEGER, "updated_at": singer.DATE_TIME, "name": singer.TEXT}


def incremental_sync() -> list[singer.Message]:
    def rec(i: int, name: str, updated: str) -> singer.Message:
        data = {"id": i, "updated_at": updated, "name": name}
        return singer.record("customers", data, time_extracted=EXTRACTED)

    def bookmark(updated: str) -> singer.Message:
        value = singer.bookmark("customers", replication_key="updated_at", replication_key_value=updated)
        return singer.state(value)

    return [
        singer.schema("customers", CUSTOMERS, ["id"], ["updated_at"]),
        rec(1, "c1", "2026-12-01T00:00:00.000000Z"),
        bookmark("2026-12-01T00:00:00.000000Z"),
        rec(2, "c2", "2026-12-02T00:00:00.000000Z"),
        bookmark("2026-12-02T00:00:00.000000Z"),
        rec(1, "c1 renamed", "2026-12-03T00:00:00.000000Z"),
        bookmark("2026-12-03T00:00:00.000000Z"),
    ]


@pytest.mark.backends("sqlite")
def test_incremental_upserts_replace_rows_and_a_rerun_changes_no_data(
    stitch: Stitch, target: Callable[..., Target]
) -> None:
    stream = incremental_sync()
    run = sync(target, stream)
    assert run.states == [stream[-1]["value"]]  # one flush: its latest STATE only
    first = stitch.rows("customers")
    assert [(r["id"], r["name"], instant(r["updated_at"])) for r in first] == [
        (1, "c1 renamed", dt.datetime(2026, 12, 3, tzinfo=UTC)),
        (2, "c2", dt.datetime(2026, 12, 2, tzinfo=UTC)),
    ]
    assert all(r["_sdc_table_version"] is None for r in first)
    assert stitch.kinds("customers") == {
        "id": "integer",
        "updated_at": "timestamp",
        "name": "text",
        **SYSTEM_KINDS,
    }

    run = sync(target, stream)  # the same stream again, as after a tap restarted from an old state
    assert run.states == [stream[-1]["value"]]
    again = stitch.rows("customers")
    stamps = ("_sdc_received_at", "_sdc_batched_at", "_sdc_sequence")
    assert [{k: v for k, v in r.items() if k not in stamps} for r in again] == [
        {k: v for k, v in r.items() if k not in stamps} for r in first
    ]
    for old, new in zip(first, again):
        assert instant(new["_sdc_received_at"]) > instant(old["_sdc_received_at"])  # type: ignore[operator]
        assert instant(new["_sdc_batched_at"]) > instant(old["_sdc_batched_at"])  # type: ignore[operator]
        # target-stitch numbers its messages anew on every run, from the clock
        assert new["_sdc_sequence"] > old["_sdc_sequence"]


# -- STATE, refusals and retries ----------------------------------------------------------------

ITEMS = {"id": singer.INTEGER, "name": singer.TEXT, "amount": singer.CENTS}


def batched_stream(*bad: int) -> list[singer.Message]:
    """Six records, read by ``--max-batch-records 2`` as three batches [1, 2] [3, 4] [5, 6],
    each flushed with the STATE written after its first record (s1, s2, s3); record numbers
    in ``bad`` have an amount that is not a number."""
    messages = [singer.schema("items", ITEMS, ["id"])]
    for i in range(1, 7):
        amount: Any = "lots" if i in bad else Decimal(i) / 4
        messages.append(singer.record("items", {"id": i, "name": f"item {i}", "amount": amount}))
        if i % 2:
            messages.append(singer.state({"bookmarks": {"items": {"id": i}}, "s": (i + 1) // 2}))
    return messages


def state_numbers(run: Target) -> list[int]:
    return [s["s"] for s in run.states]


def ids(stitch: Stitch, table: str = "items") -> list[int]:
    return [r["id"] for r in stitch.rows(table)]


@pytest.mark.backends("sqlite")
def test_a_state_is_printed_only_after_its_batch_is_answered(
    stitch: Stitch, target: Callable[..., Target]
) -> None:
    with failing_proxy(stitch.server.base, {2: "hold"}) as proxy:
        run = target(batched_stream(), "--max-batch-records", "2", base=proxy.base)
        wait_until(proxy.held.is_set, what="the second batch's request to be held")
        wait_until(lambda: run.states, what="the first batch's STATE")
        assert state_numbers(run) == [1]  # the held batch's STATE is not out
        assert ids(stitch) == [1, 2]
        proxy.release()
        assert run.wait() == 0, run.stderr
    assert state_numbers(run) == [1, 2, 3]
    assert ids(stitch) == [1, 2, 3, 4, 5, 6]
    assert proxy.statuses() == [201, 201, 201]
    # each STATE came out after its batch's answer left the proxy
    (t1, _), (t2, _), (t3, _) = run.lines
    answered = [s.answered_at or 0 for s in proxy.seen]
    assert answered[0] <= t1 < answered[1] <= t2 and answered[2] <= t3


@pytest.mark.backends("sqlite")
def test_a_batch_that_gets_no_answer_stops_the_sync_without_its_state(
    stitch: Stitch, target: Callable[..., Target]
) -> None:
    with failing_proxy(stitch.server.base, {2: "drop"}) as proxy:
        run = target(batched_stream(), "--max-batch-records", "2", base=proxy.base)
        assert run.wait() != 0
    assert proxy.statuses() == [201, None]  # no retry of a dropped connection
    assert state_numbers(run) == [1]
    assert ids(stitch) == [1, 2]


@pytest.mark.backends("sqlite")
def test_a_record_that_does_not_fit_its_schema_stops_target_stitch_at_once(
    stitch: Stitch, target: Callable[..., Target]
) -> None:
    with failing_proxy(stitch.server.base) as proxy:
        run = target(batched_stream(3), "--max-batch-records", "2", base=proxy.base)
        assert run.wait() == 1
    assert proxy.statuses() == [201, 400]  # not retried, and the third batch never sent
    assert state_numbers(run) == [1]
    assert ids(stitch) == [1, 2]  # record 4, in the refused request, is not stored either
    assert "Error persisting data to Stitch: 400" in run.stderr
    assert "Record 0 did not conform to schema: #/amount" in run.stderr  # the user sees why


# -- nested streams: objects as columns, arrays as subtables ---------------------------------

LONG_OBJECT, LONG_FIELD = "a" * 40, "b" * 40
NESTED_ORDERS = {
    "id": singer.INTEGER,
    "customer": {"type": ["null", "object"], "properties": {"name": singer.TEXT, "address": singer.OBJECT}},
    "line_items": {
        "type": ["null", "array"],
        "items": {
            "type": ["null", "object"],
            "properties": {"sku": singer.TEXT, "price": singer.CENTS, "tags": singer.ARRAY},
        },
    },
    LONG_OBJECT: {"type": ["null", "object"], "properties": {LONG_FIELD: singer.INTEGER}},
}


def nested_orders(items: int, tags: list[str]) -> list[singer.Message]:
    return [
        singer.schema("orders", NESTED_ORDERS, ["id"]),
        *(
            singer.record(
                "orders",
                {
                    "id": i,
                    "customer": {"name": f"customer {i}", "address": {"city": "Köln", "zip": "50667"}},
                    "line_items": [
                        {"sku": f"SKU-{i}-{k}", "price": Decimal(f"{k}.50"), "tags": tags}
                        for k in range(items)
                    ],
                    LONG_OBJECT: {LONG_FIELD: i},
                },
            )
            for i in (1, 2)
        ),
        singer.state({"bookmarks": {"orders": {"id": 2}}}),
    ]


def test_a_nested_stream_lands_in_subtables_and_a_rerun_replaces_them(
    stitch: Stitch, target: Callable[..., Target]
) -> None:
    sync(target, nested_orders(3, ["gift", "rush"]))
    tables = stitch.tables()
    assert tables["orders__line_items"]["parent"] == "orders"
    assert tables["orders__line_items__tags"]["parent"] == "orders"
    assert tables["orders__line_items"]["key_fields"] == ["_sdc_source_key_id", "_sdc_level_0_id"]
    (long,) = [c for c in tables["orders"]["columns"] if c["name"].startswith("aaa")]
    assert len(long["name"].encode()) <= 63 and long["path"] == f"{LONG_OBJECT}__{LONG_FIELD}"
    orders = stitch.rows("orders")
    assert [(r["customer__name"], r["customer__address__city"], r[long["name"]]) for r in orders] == [
        ("customer 1", "Köln", 1),
        ("customer 2", "Köln", 2),
    ]
    items = stitch.rows("orders__line_items", '"_sdc_source_key_id", "_sdc_level_0_id"')
    assert [(r["_sdc_source_key_id"], r["_sdc_level_0_id"], r["sku"], exact(r["price"])) for r in items] == [
        (i, k, f"SKU-{i}-{k}", Decimal(f"{k}.50")) for i in (1, 2) for k in range(3)
    ]
    assert stitch.count("orders__line_items__tags") == 2 * 3 * 2
    tags = stitch.rows(
        "orders__line_items__tags", '"_sdc_source_key_id", "_sdc_level_0_id", "_sdc_level_1_id"'
    )
    assert [r["value"] for r in tags[:2]] == ["gift", "rush"]
    listed = run_cli("tables", "1", database=stitch.database).stdout
    assert "subtables: orders__line_items, orders__line_items__tags" in listed
    assert "subtable of orders, by _sdc_source_key_id" in listed
    assert f"(the field {LONG_OBJECT}.{LONG_FIELD})" in listed
    sync(target, nested_orders(1, []))  # the orders again, each with one item and no tags
    items = stitch.rows("orders__line_items", '"_sdc_source_key_id", "_sdc_level_0_id"')
    assert [(r["_sdc_source_key_id"], r["sku"]) for r in items] == [(1, "SKU-1-0"), (2, "SKU-2-0")]
    assert stitch.count("orders__line_items__tags") == 0


def test_a_nested_stream_whose_paths_would_share_a_column_stops_target_stitch(
    stitch: Stitch, target: Callable[..., Target]
) -> None:
    properties = {
        "id": singer.INTEGER,
        "a__b": singer.NUMBER,
        "a": {"type": "object", "properties": {"b": singer.NUMBER}},
    }
    run = target(
        [
            singer.schema("clash", properties, ["id"]),
            singer.record("clash", {"id": 1, "a__b": 1, "a": {"b": 2}}),
        ]
    )
    assert run.wait() == 1
    assert "field_name_collision" in run.stderr or "would both be column" in run.stderr, run.stderr
    assert "clash" not in stitch.tables()


EVENTS = {"event": {"type": "string"}, "at": singer.DATE_TIME, "n": singer.INTEGER}


def events(stream: str, key_properties: list[str] | None, count: int = 3) -> list[singer.Message]:
    return [
        singer.schema(stream, EVENTS, key_properties),
        *(
            singer.record(stream, {"event": "click", "at": f"2026-12-01T00:00:0{n}Z", "n": n})
            for n in range(count)
        ),
        singer.state({"bookmarks": {stream: {"n": count - 1}}}),
    ]


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "failure",
    [
        pytest.param("503", id="503-before-the-server"),
        pytest.param("forward-503", id="503-after-the-server-stored-it"),
    ],
)
def test_a_503_is_retried_and_the_rows_land_once(
    stitch: Stitch, target: Callable[..., Target], failure: str
) -> None:
    # an append-only stream, then a keyed one: two requests (the second SCHEMA flushes the first)
    items = [
        singer.record("items", {"id": i, "name": f"item {i}", "amount": Decimal(i) / 4}) for i in (1, 2, 3)
    ]
    stream = [*events("events", []), singer.schema("items", ITEMS, ["id"]), *items, singer.state({"s": 2})]
    with failing_proxy(stitch.server.base, {1: failure, 3: failure}) as proxy:
        run = target(stream, base=proxy.base)
        assert run.wait() == 0, run.stderr
    assert proxy.statuses() == [503, 201, 503, 201]
    assert proxy.seen[0].body == proxy.seen[1].body  # the identical body, re-sent
    assert proxy.seen[2].body == proxy.seen[3].body
    assert run.states == [stream[4]["value"], {"s": 2}]
    assert stitch.count("events") == 3
    assert sorted(r["n"] for r in stitch.rows("events", "n")) == [0, 1, 2]
    assert ids(stitch) == [1, 2, 3]


# -- append-only streams ------------------------------------------------------------------------


@pytest.mark.backends("sqlite")
def test_append_only_streams_are_keyed_by_sdc_primary_key(
    stitch: Stitch, target: Callable[..., Target]
) -> None:
    twice = singer.record("clicks_null", {"event": "click", "at": "2026-12-01T00:00:09Z", "n": 9})
    sync(target, [*events("clicks_list", []), *events("clicks_null", None), twice, twice])
    tables = stitch.tables()
    for name, count in (("clicks_list", 3), ("clicks_null", 5)):
        assert tables[name]["key_fields"] == ["__sdc_primary_key"]
        assert stitch.kinds(name) == {
            "__sdc_primary_key": "text",
            "event": "text",
            "at": "timestamp",
            "n": "integer",
            **SYSTEM_KINDS,
        }
        keys = [r["__sdc_primary_key"] for r in stitch.rows(name, "n")]
        assert len(keys) == len(set(keys)) == count  # two equal events are two rows
        assert all(uuid.UUID(k) for k in keys)
    assert [r["n"] for r in stitch.rows("clicks_null", "n")] == [0, 1, 2, 9, 9]


@pytest.mark.backends("sqlite")
def test_an_append_only_stream_synced_again_appends_again(
    stitch: Stitch, target: Callable[..., Target]
) -> None:
    """Every record of an append-only stream is a new row, as in Stitch: a second run of
    the same stream is new records (target-stitch gives them new sequences). Only the same
    request sent again (a retry) adds nothing: see the 503 tests."""
    stream = events("events", [])
    sync(target, stream)
    sync(target, stream)
    assert stitch.count("events") == 6


# -- decimals and date-times ----------------------------------------------------------------------

MONEY = {"id": singer.INTEGER, "amount": singer.CENTS, "at": singer.DATE_TIME, "day": singer.DATE}
MONEY_ROWS = [
    (1, "12.50", "2026-12-01T07:46:49.376708Z", "1980-02-29"),
    (2, "99999999.99", "2012-08-01T14:22:32+00:00", "2026-12-01"),
    (3, "-42.10", "2026-03-29T03:30:00+0200", "1970-01-01"),
    (4, "0.07", "2026-12-01 07:46:49", "2000-02-29"),
    (5, None, None, None),
]


def test_decimals_keep_their_cents_and_date_times_are_timestamps(
    stitch: Stitch, target: Callable[..., Target]
) -> None:
    stream = [
        singer.schema("money", MONEY, ["id"]),
        *(
            singer.record("money", {"id": i, "amount": a and Decimal(a), "at": at, "day": d})
            for i, a, at, d in MONEY_ROWS
        ),
    ]
    sync(target, stream)
    kinds = stitch.kinds("money")
    assert (kinds["amount"], kinds["at"], kinds["day"]) == ("decimal", "timestamp", "date")
    rows = stitch.rows("money")
    assert [exact(r["amount"]) for r in rows] == [a and Decimal(a) for _, a, _, _ in MONEY_ROWS]
    assert [instant(r["at"]) for r in rows] == [
        dt.datetime(2026, 12, 1, 7, 46, 49, 376708, tzinfo=UTC),
        dt.datetime(2012, 8, 1, 14, 22, 32, tzinfo=UTC),
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        dt.datetime(2026, 12, 1, 7, 46, 49, tzinfo=UTC),
        None,
    ]
    assert [day(r["day"]) for r in rows] == [d and dt.date.fromisoformat(d) for _, _, _, d in MONEY_ROWS]
    types = stitch.sql_types("money")
    if stitch.backend == "postgresql":
        assert (types["amount"], types["at"], types["day"]) == ("numeric", "timestamp with time zone", "date")
        assert stitch.stored_types("money", "at")[:4] == ["timestamp with time zone"] * 4
    else:
        assert rows[0]["at"] == "2026-12-01T07:46:49.376708Z"
        assert rows[0]["amount"] == "12.50"
        assert stitch.stored_types("money", "amount")[:4] == ["text"] * 4  # not a REAL


# -- stitchclient ----------------------------------------------------------------------------------

# Run by stitchclient's python: argv = push URL, key, client id, records per request, what.
# Prints what the client saw, as JSON: the callback arguments acknowledged, or its error.
STITCHCLIENT_SCRIPT = """
import datetime, decimal, json, sys
from stitchclient.client import Client

url, key, client_id, per_request, what = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
utc = datetime.timezone.utc
if what == "typed":
    records = [
        {"id": i, "name": "Finn %d ünï 😀" % i, "tilde": "~not a tag",
         "created_at": datetime.datetime(2026, 12, i, 7, 46, 49, 376708, tzinfo=utc),
         "amount": decimal.Decimal("12.50") * i, "huge": 2**64 + i, "big": 2**53 + i,
         "max63": 2**63 - i, "ratio": 0.25, "active": i % 2 == 0}
        for i in (1, 2, 3)
    ]
else:  # a nested object first seen in the second record
    records = [{"id": 1}, {"id": 2, "address": {"city": "Berlin"}}, {"id": 3, "address": {"city": "Paris"}}]
acked, error = [], None
try:
    with Client(client_id=client_id, token=key, table_name="customers", key_names=["id"],
                callback_function=acked.extend, override_stitch_url=url) as client:
        for n, data in enumerate(records, 1):
            client.push({"action": "upsert", "sequence": 1565880017 + n, "data": data}, callback_arg=n)
            if n % per_request == 0:
                client.flush()
except Exception as exc:
    error = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps({"acked": acked, "error": error}))
"""


def stitchclient(
    python: str, stitch: Stitch, *, client_id: int = 1, per_request: int = 3, what: str = "typed"
) -> dict[str, Any]:
    done = subprocess.run(
        [
            python,
            "-c",
            STITCHCLIENT_SCRIPT,
            f"{stitch.server.base}/v2/import/push",
            stitch.server.key,
            str(client_id),
            str(per_request),
            what,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"the stitchclient script failed:\n{done.stderr}"
    out: dict[str, Any] = json.loads(done.stdout)
    return out


@pytest.mark.parametrize(
    "per_request",
    [
        pytest.param(1, id="one-record-a-request"),
        pytest.param(3, id="three-records-a-request"),
    ],
)
def test_stitchclient_transit_lands_typed(stitchclient_python: str, stitch: Stitch, per_request: int) -> None:
    out = stitchclient(stitchclient_python, stitch, per_request=per_request)
    assert out == {"acked": [1, 2, 3], "error": None}
    assert stitch.kinds("customers") == {
        "id": "integer",
        "name": "text",
        "tilde": "text",
        "created_at": "timestamp",
        "amount": "decimal",
        "huge": "decimal",
        "big": "integer",
        "max63": "integer",
        "ratio": "double",
        "active": "boolean",
        **SYSTEM_KINDS,
    }
    rows = stitch.rows("customers")
    assert [r["id"] for r in rows] == [1, 2, 3]
    for i, r in enumerate(rows, 1):
        assert r["name"] == f"Finn {i} ünï 😀"
        assert r["tilde"] == "~not a tag"
        # Transit carries milliseconds: the client truncates the microseconds
        assert instant(r["created_at"]) == dt.datetime(2026, 12, i, 7, 46, 49, 376000, tzinfo=UTC)
        assert exact(r["amount"]) == Decimal("12.50") * i
        assert exact(r["huge"]) == 2**64 + i  # beyond 2^63: exact, not a double
        assert r["big"] == 2**53 + i and type(r["big"]) is int
        assert r["max63"] == 2**63 - i
        assert r["ratio"] == 0.25
        assert flag(r["active"]) is (i % 2 == 0)
        assert r["_sdc_sequence"] == 1565880017 + i
        assert r["_sdc_table_version"] is None
    if stitch.backend == "postgresql":
        types = stitch.sql_types("customers")
        assert (types["created_at"], types["amount"], types["huge"]) == (
            "timestamp with time zone",
            "numeric",
            "numeric",
        )


@pytest.mark.backends("sqlite")
def test_stitchclient_records_with_a_nested_object_keep_it(stitchclient_python: str, stitch: Stitch) -> None:
    assert stitchclient(stitchclient_python, stitch, what="nested") == {"acked": [1, 2, 3], "error": None}
    rows = stitch.rows("customers")
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert holds(rows[1], "address", "Berlin") and holds(rows[2], "address", "Paris")


@pytest.mark.backends("sqlite")
def test_stitchclient_push_for_another_client_is_refused_and_stores_nothing(
    stitchclient_python: str, stitch: Stitch
) -> None:
    out = stitchclient(stitchclient_python, stitch, client_id=2)
    assert out["acked"] == []
    assert out["error"].startswith("RuntimeError: Error sending data to the Stitch API. 403")
    assert "Access token is not associated with this client." in out["error"]
    assert stitch.tables() == {}


# -- a real tap ------------------------------------------------------------------------------------


@pytest.fixture
def singer_tap() -> str:
    tap = os.environ.get("IMPORTAPI_SINGER_TAP")
    if not tap:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(
                "CI runs the real Singer tap and IMPORTAPI_SINGER_TAP is not set: run make test",
                pytrace=False,
            )
        pytest.skip(
            "IMPORTAPI_SINGER_TAP is not set: run make test, or point it at a tap-postgres executable"
        )
    require_postgres()
    return os.path.abspath(tap)


def test_tap_postgres_full_table_sync_through_target_stitch(
    singer_tap: str, target_stitch: str, stitch: Stitch, tmp_path: Path
) -> None:
    """A real Singer tap, tap-postgres 0.2.1, syncing a table of the local PostgreSQL
    through target-stitch into importapi. ``make test`` installs the tap in an environment
    of its own and names it in ``IMPORTAPI_SINGER_TAP``; by hand (its pinned
    psycopg2==2.7.4 does not build on Python 3.11, so its other pins, a binary psycopg2,
    then the tap without its dependencies; about 10-30 s):

        python3 -m venv .venv-tap-postgres
        .venv-tap-postgres/bin/pip install 'singer-python==5.3.1' 'strict-rfc3339==0.7' 'psycopg2-binary==2.9.10'
        .venv-tap-postgres/bin/pip install --no-deps tap-postgres==0.2.1
        IMPORTAPI_SINGER_TAP=.venv-tap-postgres/bin/tap-postgres make test PYTEST_ARGS="tests/test_stitch_clients.py -k tap"
    """
    table = f"importapi_tap_{os.getpid()}"
    source = conninfo_to_dict(ADMIN_URL)
    config = tmp_path / "tap-config.json"
    config.write_text(
        json.dumps(
            {
                "host": source.get("host", "127.0.0.1"),
                "port": int(source.get("port") or 5432),
                "user": source.get("user", "postgres"),
                "password": source.get("password", ""),
                "dbname": source.get("dbname", "test"),
                "filter_dbs": source.get("dbname", "test"),
            }
        )
    )
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id integer PRIMARY KEY, email text, amount numeric(10,2),"
            " created_at timestamptz, birthday date, active boolean)"
        )
        conn.execute(
            f"INSERT INTO {table} VALUES"
            " (1, 'joe@schmo.com', 12.50, '2012-08-01 14:22:32+00', '1980-02-29', true),"
            " (2, NULL, NULL, NULL, NULL, NULL),"
            " (3, 'ünïcødé', 99999999.99, '2026-12-01 07:46:49.376708+00', '2026-12-01', false)"
        )
    try:
        tap_args = [singer_tap, "--config", str(config)]
        found = subprocess.run([*tap_args, "--discover"], check=True, capture_output=True, timeout=120)
        catalog = json.loads(found.stdout)
        catalog["streams"] = [s for s in catalog["streams"] if s["tap_stream_id"].endswith(f"-{table}")]
        assert len(catalog["streams"]) == 1, "tap-postgres did not discover the table"
        for m in catalog["streams"][0]["metadata"]:
            m["metadata"]["selected"] = True
            if m["breadcrumb"] == []:
                m["metadata"]["replication-method"] = "FULL_TABLE"
        properties = tmp_path / "catalog.json"
        properties.write_text(json.dumps(catalog))
        with subprocess.Popen(
            [*tap_args, "--properties", str(properties)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        ) as tapped:
            done = subprocess.run(
                [target_stitch, "-c", str(stitch.config())],
                stdin=tapped.stdout,
                check=False,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert tapped.stdout is not None
            tapped.stdout.close()
        assert (tapped.returncode, done.returncode) == (0, 0), done.stderr
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    assert json.loads(done.stdout.splitlines()[-1])["bookmarks"]
    kinds = stitch.kinds(table)
    assert {k: kinds[k] for k in ("id", "email", "amount", "created_at", "birthday", "active")} == {
        "id": "integer",
        "email": "text",
        "amount": "decimal",
        "created_at": "timestamp",
        "birthday": "timestamp",  # taps send a SQL date as a date-time at midnight
        "active": "boolean",
    }
    rows = stitch.rows(table)
    assert [(r["id"], r["email"], exact(r["amount"])) for r in rows] == [
        (1, "joe@schmo.com", Decimal("12.50")),
        (2, None, None),
        (3, "ünïcødé", Decimal("99999999.99")),
    ]
    assert instant(rows[2]["created_at"]) == dt.datetime(2026, 12, 1, 7, 46, 49, 376708, tzinfo=UTC)
    assert instant(rows[0]["birthday"]) == dt.datetime(1980, 2, 29, tzinfo=UTC)
    versions = {r["_sdc_table_version"] for r in rows}
    assert len(versions) == 1 and None not in versions  # a full-table sync's one version
