"""Durability under SIGKILL: push continuously, kill the server at random moments, check.

Several pushers (threads; each owns one table of one client) send requests in a loop, one
at a time, on both protocols. An RJMetrics pusher's request writes a whole *group* of data
points, all stamped with the request's sequence number, so a request that was half applied
shows as a group whose rows disagree. Every so often a request carries one bad data point
at its end and must be refused whole. A Stitch pusher (``StitchPusher``) sends batches to
``/v2/import/batch``: several whole groups a batch, hundreds to thousands of messages with
rising sequences under a JSON Schema, some records with arrays (so subtables, and a
subtable's subtable, are written with their parents); now and then a batch with a record
that does not fit the schema (refused whole), or a stale one (older sequences than every
row it names: accepted, and it must change nothing).

For every group the harness knows which states the warehouse may hold: the last
acknowledged request's, or that of a later request whose answer never came (the server
died first). After each SIGKILL, before the restart, and at the end it reads every table
and counts:

    lost acknowledged   a group older than its last 201 (or missing after one)
    half applied        a group whose rows come from different requests, or are missing;
                        or a batch applied in one of its groups and not in another
    subtable mismatch   subtable rows other than the arrays of their parent row's record
                        (an older record's kept or merged in, some missing, or no parent)
    phantom             a group holding a refused request, or one never sent
    wrong answer        a batch's 201 whose ``stale`` count is not the batch's
    unexpected 5xx      any 5xx answer
    unexpected errors   no answer while the server was not being killed

and it samples the server's resident memory (RSS) as it goes. The long form ends with a
calm stretch without kills, to see whether memory stops growing:

    python -m bench.soak --minutes 12 --calm-minutes 4       (make soak)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import httpx

from importapi.storage import Storage, open_storage


class Target(Protocol):
    """A server the harness can start and SIGKILL."""

    def start(self) -> str:
        """Start the server, wait until it answers, return its base URL."""

    def kill(self) -> None:
        """SIGKILL the server and wait for it to be gone."""

    def pid(self) -> int | None: ...


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process from /proc (Linux), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def wait_until_up(base: str, proc: subprocess.Popen[Any] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} while starting")
        try:
            if httpx.get(base + "/", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server at {base} did not start within {timeout} s")
        time.sleep(0.05)


class ProcessTarget:
    """``python -m importapi serve`` in a session of its own, SIGKILLed as a group."""

    def __init__(
        self, database: str, log_path: Path, workers: int = 1, env: dict[str, str] | None = None
    ) -> None:
        self.database = database
        self.log_path = log_path
        self.workers = workers
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "importapi",
                    "serve",
                    "--port",
                    str(port),
                    "--workers",
                    str(self.workers),
                    "--database",
                    self.database,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base, self.proc)
        return base

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


@dataclass
class Counts:
    requests: int = 0
    acked: int = 0
    acked_points: int = 0
    refused_as_expected: int = 0
    unknown: int = 0
    lost_acked: int = 0
    half_applied: int = 0
    subtable_mismatch: int = 0
    phantom: int = 0
    wrong_answer: int = 0
    unexpected_5xx: int = 0
    unexpected_4xx: int = 0
    unexpected_errors: int = 0
    batches: int = 0
    batches_acked: int = 0
    batch_records_acked: int = 0
    batches_refused: int = 0
    stale_batches_acked: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.problems) < 50:
            self.problems.append(f"{kind}: {text}")


class Pusher:
    """One table of one client, pushed by one thread, one request at a time."""

    def __init__(self, harness: Harness, n: int, client_id: int, key: str, rng: random.Random) -> None:
        self.h = harness
        self.n = n
        self.client_id = client_id
        self.key = key
        self.table = f"soak_{n}"
        self.rng = rng
        self.seq = 0
        self.lock = threading.Lock()
        # group -> the request sequence numbers the warehouse may show (None: no rows yet)
        self.possible: dict[int, set[int | None]] = {}

    def points(self, group: int, seq: int, bad: bool) -> list[dict[str, Any]]:
        size = self.h.group_size
        out: list[dict[str, Any]] = []
        for j in range(size):
            point: dict[str, Any] = {
                "keys": ["id"],
                "id": group * size + j,
                "grp": group,
                "seq": seq,
                "v": f"{self.n}:{seq}:{j}",
                "pad": "x" * self.rng.randrange(0, 200),
            }
            # The schema keeps changing for a while (new columns), then one column widens.
            if seq <= 30:
                point[f"c{seq % 15}"] = seq
            point["num"] = seq if seq < 60 else seq + 0.5
            out.append(point)
        if bad:
            out.append({"id": -1, "grp": group, "seq": seq})  # no "keys": the request must fail whole
        return out

    def run(self) -> None:
        push_until_stopped(self.h, self.one)

    def one(self, http: httpx.Client) -> None:
        self.seq += 1
        seq = self.seq
        groups = min(self.h.groups, 1 + seq // 4)  # new groups appear over time: inserts
        group = self.rng.randrange(groups)
        bad = self.rng.random() < self.h.bad_ratio
        body = self.points(group, seq, bad)
        with self.lock:
            state = self.possible.setdefault(group, {None})
            if not bad:
                state.add(seq)  # it may land from the moment it is sent
        url = f"{self.h.base}/v2/client/{self.client_id}/table/{self.table}/data"
        counts = self.h.counts
        kills_before = self.h.kills
        try:
            answer = http.post(url, json=body, headers={"Authorization": f"Bearer {self.key}"})
        except httpx.HTTPError as exc:
            self.h.no_answer(f"{self.table} seq {seq}", exc, kills_before)
            return
        with self.lock, self.h.counts_lock:
            counts.requests += 1
            status = answer.status_code
            if status == 201 and not bad:
                self.possible[group] = {seq}
                counts.acked += 1
                counts.acked_points += len(body)
            elif status == 400 and bad:
                counts.refused_as_expected += 1
            elif status >= 500:
                counts.unknown += 1
                counts.problem("unexpected_5xx", f"{self.table} seq {seq}: {status} {answer.text[:200]}")
            else:
                counts.problem(
                    "unexpected_4xx", f"{self.table} seq {seq} (bad={bad}): {status} {answer.text[:200]}"
                )

    def verify(self, storage: Storage) -> None:
        """Compare the warehouse with what may be there; then narrow to what is."""
        size = self.h.group_size
        counts = self.h.counts
        rows: list[tuple[Any, ...]] = []
        if self.table in {t.schema.name for t in storage.warehouse.tables(self.client_id)}:
            _, rows = storage.warehouse.query(self.client_id, f'SELECT id, grp, seq, v FROM "{self.table}"')
        by_group: dict[int, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_group.setdefault(row[1], []).append(row)
        with self.lock, self.h.counts_lock:
            for group in set(by_group) | set(self.possible):
                possible = self.possible.get(group, {None})
                found = by_group.get(group, [])
                seqs = {r[2] for r in found}
                where = f"{self.table} group {group}"
                if not found:
                    if None not in possible:
                        counts.problem("lost_acked", f"{where}: no rows; expected seq in {possible}")
                    continue
                if len(seqs) != 1 or len(found) != size:
                    counts.problem("half_applied", f"{where}: {len(found)} rows from requests {sorted(seqs)}")
                    self.possible[group] = possible | seqs
                    continue
                (seq,) = seqs
                bad_values = [r for r in found if r[3] != f"{self.n}:{seq}:{r[0] - group * size}"]
                if bad_values:
                    counts.problem("half_applied", f"{where}: values {bad_values[:2]} differ from seq {seq}")
                if seq not in possible:
                    known = max((s for s in possible if s is not None), default=0)
                    kind = "lost_acked" if seq < known else "phantom"
                    counts.problem(
                        kind, f"{where}: holds seq {seq}; expected one of {sorted(possible, key=str)}"
                    )
                self.possible[group] = {seq}


def push_until_stopped(harness: Harness, one: Callable[[httpx.Client], None]) -> None:
    """A pusher's loop: one request at a time until the harness stops, none while it is down."""
    with httpx.Client(timeout=30) as http:
        while not harness.stopping.is_set():
            if not harness.up.wait(timeout=0.5):
                continue
            one(http)


BATCH_SEQUENCE = 1_796_113_870_373_400_000  # about where target-stitch's sequences are: beyond 2**53
BATCH_STRIDE = 10**7
"""Sequences per request: record ``id`` of request ``r`` is sequenced
``BATCH_SEQUENCE + r * BATCH_STRIDE + 2 * id + 1``, and its decoy one lower."""
DECOY_RATIO = 0.03
"""The share of records preceded in their batch by a decoy: the same key, a lower sequence."""
Row = tuple[Any, ...]


def batch_schema(nested: bool) -> dict[str, Any]:
    """The JSON Schema of a Stitch pusher's records: typed fields (an exact decimal, a
    date-time ...), and when ``nested`` an array of objects each holding an array of integers."""
    properties: dict[str, Any] = {
        "id": {"type": "integer"},
        "grp": {"type": "integer"},
        "req": {"type": "integer"},
        "v": {"type": "string"},
        "amount": {"type": ["null", "number"], "multipleOf": 0.01},
        "ratio": {"type": ["null", "number"]},
        "active": {"type": ["null", "boolean"]},
        "at": {"type": ["null", "string"], "format": "date-time"},
        "pad": {"type": ["null", "string"]},
    }
    if nested:
        item = {
            "sku": {"type": "string"},
            "qty": {"type": "integer"},
            "marks": {"type": ["null", "array"], "items": {"type": "integer"}},
        }
        properties["items"] = {"type": ["null", "array"], "items": {"type": "object", "properties": item}}
    return {"type": "object", "properties": properties}


def batch_sequence(req: int, key: int) -> int:
    return BATCH_SEQUENCE + req * BATCH_STRIDE + 2 * key + 1


def batch_amount(req: int, key: int) -> str:
    """Record ``key``'s amount in request ``req``, as text (an exact decimal column)."""
    return f"{req % 10_000}.{key % 100:02d}"


def is_nested(req: int) -> bool:
    """Two requests in three send the nested schema; the third the flat one, so the
    records it writes must leave their parents no subtable rows at all."""
    return req % 3 != 0


def batch_items(n: int, req: int, key: int) -> list[dict[str, Any]] | None:
    """The ``items`` of record ``key`` in request ``req`` (None: the field is absent or
    null), so that every record's subtable rows follow from its request alone: none, or one
    to three items, item ``k`` with ``k`` marks."""
    shape = (req + key) % 5
    if not is_nested(req) or shape < 2:
        return None
    if shape == 2:
        return []
    return [
        {"sku": f"{n}:{req}:{key}:{k}", "qty": k, "marks": [req % 1000 + m for m in range(k)]}
        for k in range(1 + (req * 7 + key) % 3)
    ]


def batch_children(n: int, req: int, key: int) -> tuple[set[Row], set[Row]]:
    """The rows record ``key`` of request ``req`` leaves in the subtables ``__items``
    (level 0, sku, qty, sequence) and ``__items__marks`` (level 0, level 1, value, sequence)."""
    seq = batch_sequence(req, key)
    items: set[Row] = set()
    marks: set[Row] = set()
    for k, item in enumerate(batch_items(n, req, key) or ()):
        items.add((k, item["sku"], item["qty"], seq))
        marks.update((k, m, value, seq) for m, value in enumerate(item["marks"]))
    return items, marks


def batch_record(n: int, req: int, key: int, group: int, pad: int) -> dict[str, Any]:
    """Record ``key``'s fields in request ``req``, its arrays aside."""
    return {
        "id": key,
        "grp": group,
        "req": req,
        "v": f"{n}:{req}:{key}",
        "amount": float(batch_amount(req, key)),
        "ratio": key / 7,
        "active": (req + key) % 2 == 0,
        "at": f"2026-12-01T07:{req % 60:02d}:{key % 60:02d}.376708Z",
        "pad": "x" * pad,
    }


def with_items(data: dict[str, Any], n: int, req: int, key: int) -> dict[str, Any]:
    """The record with its ``items`` as ``batch_items`` says (absent, null, or a list)."""
    items = batch_items(n, req, key)
    if items is not None or (is_nested(req) and (req + key) % 5 == 1):
        data["items"] = items
    return data


def torn_batches(
    observed: dict[int, int | None], touched: dict[int, tuple[int, ...]]
) -> list[tuple[int, int]]:
    """``(request, group)`` for every group a batch wrote that does not hold it or a later
    request, while another of its groups does: the batch was applied in part."""
    torn = []
    for req in sorted({r for r in observed.values() if r is not None and r in touched}):
        for group in touched[req]:
            held = observed.get(group)
            if held is None or held < req:
                torn.append((req, group))
    return torn


def answer_field(answer: httpx.Response, name: str) -> Any:
    """A field of a JSON answer, or None when the answer is not a JSON object."""
    try:
        body = answer.json()
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def read_table(
    storage: Storage, client_id: int, names: set[str], table: str, columns: tuple[str, ...]
) -> list[Row]:
    """These columns of every row of a table (None for a column it lacks); none if no table."""
    if table not in names:
        return []
    found, rows = storage.warehouse.query(client_id, f'SELECT * FROM "{table}"')
    at = [found.index(c) if c in found else None for c in columns]
    return [tuple(None if i is None else row[i] for i in at) for row in rows]


class StitchPusher:
    """One table of one client fed through the Stitch batch route, one batch at a time.

    A batch upserts a few whole groups (``batch_group_size`` records each, ids ``group *
    size + j``), each record stamped with its request number ``req`` and sequenced so that
    sequences rise through a batch and from one batch to the next (``batch_sequence``);
    its subtable rows follow from its request (``batch_items``). Some records are preceded
    by a decoy (same key, lower sequence, other values and items: it must lose, its items
    too). Now and then a batch has one record that does not fit the schema (refused: nothing
    of it may land), or is *stale*: request 0's sequences for groups that hold rows already,
    with items of its own (accepted, every record stale: nothing may change, the stored
    rows' subtable rows neither)."""

    def __init__(self, harness: Harness, n: int, client_id: int, key: str, rng: random.Random) -> None:
        self.h = harness
        self.n = n
        self.client_id = client_id
        self.key = key
        self.table = f"soak_batch_{n}"
        self.rng = rng
        self.req = 0
        self.lock = threading.Lock()
        # group -> the requests the warehouse may show (None: no rows yet)
        self.possible: dict[int, set[int | None]] = {}
        # request -> the groups it writes, for requests the warehouse may still show
        self.touched: dict[int, tuple[int, ...]] = {}

    def run(self) -> None:
        push_until_stopped(self.h, self.one)

    def choose(self, req: int) -> tuple[str, list[int]]:
        """What request ``req`` is (fresh, bad or stale) and the groups it writes."""
        available = min(self.h.groups, 2 + req // 2)  # new groups appear over time: inserts
        low, high = self.h.batch_groups
        count = min(available, self.rng.randint(low, high))
        draw = self.rng.random()
        if draw < self.h.bad_ratio:
            return "bad", sorted(self.rng.sample(range(available), count))
        if draw < 2 * self.h.bad_ratio:
            with self.lock:
                stored = [g for g in range(available) if None not in self.possible.get(g, {None})]
            if stored:
                return "stale", sorted(self.rng.sample(stored, min(count, len(stored))))
        return "fresh", sorted(self.rng.sample(range(available), count))

    def messages(self, kind: str, req: int, groups: list[int]) -> tuple[list[dict[str, Any]], int]:
        """The batch's messages in rising sequence, and how many are decoys."""
        size = self.h.batch_group_size
        seq_req = 0 if kind == "stale" else req
        out: list[dict[str, Any]] = []
        decoys = 0
        for group in groups:
            for key in range(group * size, (group + 1) * size):
                seq = batch_sequence(seq_req, key)
                data = batch_record(self.n, seq_req, key, group, self.rng.randrange(0, 120))
                if kind == "stale":
                    data["items"] = [{"sku": f"{self.n}:stale:{key}", "qty": 0, "marks": [0]}]
                else:
                    with_items(data, self.n, req, key)
                    if self.rng.random() < DECOY_RATIO:
                        decoys += 1
                        out.append(
                            {"action": "upsert", "sequence": seq - 1, "data": self.decoy(req, key, group)}
                        )
                extracted = f"2026-12-01T07:46:{key % 60:02d}.376708Z"
                out.append({"action": "upsert", "sequence": seq, "time_extracted": extracted, "data": data})
        if kind == "bad":
            self.spoil(out)
        return out, decoys

    def decoy(self, req: int, key: int, group: int) -> dict[str, Any]:
        """A record of the same key with other values (and other items), to lose to the real one."""
        data = batch_record(self.n, req, key, group, 3)
        data["v"] += ":decoy"
        data["amount"] = 0.01
        if is_nested(req):
            data["items"] = [{"sku": "decoy", "qty": 9, "marks": [9, 9]}] * 4
        return data

    def spoil(self, messages: list[dict[str, Any]]) -> None:
        """Make one record of the batch not fit the schema, or lack its key."""
        data = messages[self.rng.randrange(len(messages))]["data"]
        how = self.rng.randrange(4)
        holding = [m["data"] for m in messages if m["data"].get("items")]
        if how == 3 and holding:  # an array's element (of a winner or a decoy) given text
            self.rng.choice(holding)["items"][0]["qty"] = "lots"
        elif how in (0, 3):
            data["amount"] = "lots"  # a number field given text
        elif how == 1:
            data["id"] = str(data["id"])  # the key given text
        else:
            del data["id"]

    def one(self, http: httpx.Client) -> None:
        self.req += 1
        req = self.req
        kind, groups = self.choose(req)
        messages, decoys = self.messages(kind, req, groups)
        nested = is_nested(req) or kind == "stale"
        body = {
            "table_name": self.table,
            "schema": batch_schema(nested),
            "key_names": ["id"],
            "messages": messages,
        }
        raw = json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        if self.rng.random() < 0.3:
            raw = gzip.compress(raw, 1)
            headers["Content-Encoding"] = "gzip"
        if kind == "fresh":
            with self.lock:
                for group in groups:
                    self.possible.setdefault(group, {None}).add(req)  # it may land from now on
                self.touched[req] = tuple(groups)
        kills_before = self.h.kills
        where = f"{self.table} request {req} ({kind}, {len(messages)} messages)"
        try:
            answer = http.post(f"{self.h.base}/v2/import/batch", content=raw, headers=headers)
        except httpx.HTTPError as exc:
            self.h.no_answer(where, exc, kills_before)
            return
        self.account(where, kind, req, groups, len(messages), decoys, answer)

    def account(
        self,
        where: str,
        kind: str,
        req: int,
        groups: list[int],
        records: int,
        decoys: int,
        answer: httpx.Response,
    ) -> None:
        """What an answer tells: an acknowledged batch is the state of its groups from now on."""
        counts = self.h.counts
        status = answer.status_code
        with self.lock, self.h.counts_lock:
            counts.requests += 1
            counts.batches += 1
            if status == 201 and kind != "bad":
                counts.acked += 1
                counts.acked_points += records
                if kind == "fresh":
                    for group in groups:
                        self.possible[group] = {req}
                    counts.batches_acked += 1
                    counts.batch_records_acked += records
                else:
                    counts.stale_batches_acked += 1
                stale = answer_field(answer, "stale")
                if stale != (records if kind == "stale" else decoys):
                    counts.problem(
                        "wrong_answer", f"{where}: stale {stale}, {decoys} decoys: {answer.text[:200]}"
                    )
            elif status == 400 and kind == "bad":
                counts.refused_as_expected += 1
                counts.batches_refused += 1
            elif status == 201:
                counts.problem("phantom", f"{where}: a refused batch accepted: {answer.text[:200]}")
            elif status >= 500:
                counts.unknown += 1
                counts.problem("unexpected_5xx", f"{where}: {status} {answer.text[:200]}")
            else:
                counts.problem("unexpected_4xx", f"{where}: {status} {answer.text[:200]}")

    def verify(self, storage: Storage) -> None:
        """Compare the warehouse with what may be there; then narrow to what is."""
        names = {t.schema.name for t in storage.warehouse.tables(self.client_id)}
        parents = [
            (*row[:4], None if row[4] is None else Decimal(str(row[4])), row[5])
            for row in read_table(
                storage,
                self.client_id,
                names,
                self.table,
                ("id", "grp", "req", "v", "amount", "_sdc_sequence"),
            )
        ]
        items = read_table(
            storage,
            self.client_id,
            names,
            f"{self.table}__items",
            ("_sdc_source_key_id", "_sdc_level_0_id", "sku", "qty", "_sdc_sequence"),
        )
        marks = read_table(
            storage,
            self.client_id,
            names,
            f"{self.table}__items__marks",
            ("_sdc_source_key_id", "_sdc_level_0_id", "_sdc_level_1_id", "value", "_sdc_sequence"),
        )
        with self.lock, self.h.counts_lock:
            observed, flagged = self.verify_groups(parents)
            for req, group in torn_batches(observed, self.touched):
                if group not in flagged:  # one problem a group
                    flagged.add(group)
                    self.h.counts.problem(
                        "half_applied",
                        f"{self.table} request {req}: applied in groups {self.touched[req]} but group "
                        f"{group} holds request {observed.get(group)}",
                    )
            self.verify_children(parents, items, marks)
            for group, req in observed.items():
                self.possible[group] = {req}
            kept = set().union(*self.possible.values()) if self.possible else set()
            self.touched = {r: g for r, g in self.touched.items() if r in kept}

    def verify_groups(self, parents: list[Row]) -> tuple[dict[int, int | None], set[int]]:
        """Check each group's rows; the request each group holds, and the groups found wrong."""
        size = self.h.batch_group_size
        counts = self.h.counts
        by_group: dict[int, list[Row]] = {}
        for row in parents:
            by_group.setdefault(row[1], []).append(row)
        observed: dict[int, int | None] = {}
        flagged: set[int] = set()
        for group in set(by_group) | set(self.possible):
            possible = self.possible.get(group, {None})
            found = by_group.get(group, [])
            reqs = {r[2] for r in found}
            where = f"{self.table} group {group}"
            if not found:
                observed[group] = None
                if None not in possible:
                    flagged.add(group)
                    counts.problem("lost_acked", f"{where}: no rows; expected request in {possible}")
                continue
            if len(reqs) != 1 or len(found) != size:
                flagged.add(group)
                counts.problem("half_applied", f"{where}: {len(found)} rows from requests {sorted(reqs)}")
                self.possible[group] = possible | reqs
                continue
            (req,) = reqs
            wrong = [r for r in found if r != self.expected_row(req, r[0], group)]
            if wrong:
                flagged.add(group)
                counts.problem("half_applied", f"{where}: rows {wrong[:2]} differ from request {req}'s")
            if req not in possible:
                flagged.add(group)
                known = max((r for r in possible if r is not None), default=0)
                kind = "lost_acked" if req < known else "phantom"
                counts.problem(
                    kind, f"{where}: holds request {req}; expected one of {sorted(possible, key=str)}"
                )
            observed[group] = req
        return observed, flagged

    def expected_row(self, req: int, key: int, group: int) -> Row:
        """A parent row as request ``req`` writes it (its amount as the exact decimal)."""
        return (
            key,
            group,
            req,
            f"{self.n}:{req}:{key}",
            Decimal(batch_amount(req, key)),
            batch_sequence(req, key),
        )

    def verify_children(self, parents: list[Row], items: list[Row], marks: list[Row]) -> None:
        """Every parent row's subtable rows are exactly its record's arrays; none is an orphan."""
        counts = self.h.counts
        found_items: dict[Any, set[Row]] = {}
        for source, *rest in items:
            found_items.setdefault(source, set()).add(tuple(rest))
        found_marks: dict[Any, set[Row]] = {}
        for source, *rest in marks:
            found_marks.setdefault(source, set()).add(tuple(rest))
        keys = set()
        for key, _, req, *_ in parents:
            keys.add(key)
            want_items, want_marks = batch_children(self.n, req, key)
            got_items, got_marks = found_items.get(key, set()), found_marks.get(key, set())
            if got_items != want_items or got_marks != want_marks:
                counts.problem(
                    "subtable_mismatch",
                    f"{self.table} id {key} (request {req}): items {sorted(got_items, key=str)[:4]}, marks "
                    f"{sorted(got_marks, key=str)[:4]}; expected {sorted(want_items)[:4]}, {sorted(want_marks)[:4]}",
                )
        for orphan in sorted((set(found_items) | set(found_marks)) - keys, key=str):
            counts.problem(
                "subtable_mismatch", f"{self.table}: subtable rows of id {orphan}, which has no row"
            )


class Harness:
    """The pushers, the server's kills and restarts, and the checks after each.

    ``pushers_per_client`` RJMetrics pushers for each client, and ``stitch_pushers`` Stitch
    pushers dealt over the clients in turn; a batch writes ``batch_groups`` (a range) whole
    groups of ``batch_group_size`` records. ``bad_ratio`` of the requests are refused on
    purpose, and as many batches are stale."""

    def __init__(
        self,
        target: Target,
        database: str,
        *,
        clients: int = 2,
        pushers_per_client: int = 2,
        stitch_pushers: int = 0,
        groups: int = 40,
        group_size: int = 10,
        batch_group_size: int = 100,
        batch_groups: tuple[int, int] = (3, 20),
        bad_ratio: float = 0.07,
        seed: int = 0,
    ) -> None:
        self.target = target
        self.database = database
        self.groups = groups
        self.group_size = group_size
        self.batch_group_size = batch_group_size
        self.batch_groups = batch_groups
        self.bad_ratio = bad_ratio
        self.rng = random.Random(seed)
        self.counts = Counts()
        self.counts_lock = threading.Lock()
        self.up = threading.Event()
        self.killing = threading.Event()
        self.stopping = threading.Event()
        self.kills = 0
        self.base = ""
        self.rss: list[tuple[float, int, int]] = []  # (seconds since start, life, KiB)
        self.started = time.monotonic()
        self.pushers: list[Pusher | StitchPusher] = []
        keys: list[tuple[int, str]] = []
        with open_storage(database) as storage:
            for c in range(clients):
                client = storage.create_client(f"soak-{c}")
                _, key = storage.catalog.create_key(client.client_id)
                keys.append((client.client_id, key))
                for _ in range(pushers_per_client):
                    n = len(self.pushers)
                    self.pushers.append(
                        Pusher(self, n, client.client_id, key, random.Random(seed * 1000 + n))
                    )
        for n in range(stitch_pushers):
            client_id, key = keys[n % len(keys)]
            self.pushers.append(StitchPusher(self, n, client_id, key, random.Random(seed * 1000 + 500 + n)))
        self.threads = [
            threading.Thread(target=p.run, name=f"pusher-{p.table}", daemon=True) for p in self.pushers
        ]

    def start(self) -> None:
        self.base = self.target.start()
        self.up.set()
        for t in self.threads:
            t.start()

    def acked(self, route: str | None = None) -> int:
        """Acknowledged requests: of every route, or of ``"rjmetrics"`` or ``"batch"`` alone
        (fresh batches; stale ones are counted apart)."""
        with self.counts_lock:
            c = self.counts
            if route == "batch":
                return c.batches_acked
            if route == "rjmetrics":
                return c.acked - c.batches_acked - c.stale_batches_acked
            return c.acked

    def no_answer(self, where: str, exc: Exception, kills_before: int) -> None:
        """A request without an answer: expected while the server is being killed, else a
        problem; either way its outcome is unknown. Waits for the restart."""
        with self.counts_lock:
            self.counts.requests += 1
            self.counts.unknown += 1
            if not self.killing.is_set() and self.kills == kills_before:
                self.counts.problem("unexpected_errors", f"{where}: {exc!r}")
        self.up.wait(timeout=60)  # the harness restarts the server

    def kill_and_restart(self) -> None:
        self.killing.set()
        self.up.clear()
        self.target.kill()
        self.kills += 1
        self.verify()  # the state the crash left, before anything else touches it
        self.base = self.target.start()
        self.killing.clear()
        self.up.set()

    def verify(self) -> None:
        with open_storage(self.database) as storage:
            for p in self.pushers:
                p.verify(storage)

    def sample_rss(self) -> None:
        pid = self.target.pid()
        kib = rss_kib(pid) if pid else None
        if kib is not None:
            self.rss.append((round(time.monotonic() - self.started, 1), self.kills, kib))

    def stop(self) -> None:
        self.stopping.set()
        self.up.set()
        for t in self.threads:
            t.join(timeout=60)
        self.verify()

    def run_for(
        self, seconds: float, *, next_kill: Callable[[], float] | None, sample_every: float = 5.0
    ) -> None:
        """Push for ``seconds``; kill whenever ``next_kill()`` seconds have passed (None: never)."""
        end = time.monotonic() + seconds
        kill_at = time.monotonic() + next_kill() if next_kill else float("inf")
        sample_at = time.monotonic()
        while (now := time.monotonic()) < end:
            if now >= sample_at:
                self.sample_rss()
                sample_at = now + sample_every
            if now >= kill_at:
                self.kill_and_restart()
                kill_at = time.monotonic() + next_kill() if next_kill else float("inf")
            time.sleep(0.05)

    def report(self) -> dict[str, Any]:
        c = self.counts
        elapsed = time.monotonic() - self.started
        return {
            "seconds": round(elapsed, 1),
            "kills": self.kills,
            "requests": c.requests,
            "acknowledged_requests": c.acked,
            "acknowledged_points": c.acked_points,
            "points_per_second": round(c.acked_points / elapsed, 1) if elapsed else 0,
            "refused_as_expected": c.refused_as_expected,
            "unknown_outcome": c.unknown,
            "lost_acknowledged": c.lost_acked,
            "half_applied": c.half_applied,
            "subtable_mismatch": c.subtable_mismatch,
            "phantom": c.phantom,
            "wrong_answer": c.wrong_answer,
            "unexpected_5xx": c.unexpected_5xx,
            "unexpected_4xx": c.unexpected_4xx,
            "unexpected_errors": c.unexpected_errors,
            "batch_route": {
                "requests": c.batches,
                "acknowledged_batches": c.batches_acked,
                "acknowledged_records": c.batch_records_acked,
                "records_per_second": round(c.batch_records_acked / elapsed, 1) if elapsed else 0,
                "refused_as_expected": c.batches_refused,
                "stale_batches_acknowledged": c.stale_batches_acked,
            },
            "problems": c.problems,
            "memory": memory_summary(self.rss, self.kills),
        }


def memory_summary(samples: list[tuple[float, int, int]], last_life: int) -> dict[str, Any]:
    """Peak RSS per process life, and how the last (calm) life grew over its second half."""
    peaks: dict[int, int] = {}
    for _, life, kib in samples:
        peaks[life] = max(peaks.get(life, 0), kib)
    last = [(t, kib) for t, life, kib in samples if life == last_life]
    summary: dict[str, Any] = {"peak_mib_per_life": [round(v / 1024, 1) for _, v in sorted(peaks.items())]}
    if len(last) >= 4:
        half = last[len(last) // 2 :]
        summary["last_life_mib"] = [round(k / 1024, 1) for _, k in last]
        summary["last_life_seconds"] = round(last[-1][0] - last[0][0], 1)
        summary["second_half_growth_mib"] = round((half[-1][1] - half[0][1]) / 1024, 1)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=12, help="whole run, calm stretch included")
    parser.add_argument("--calm-minutes", type=float, default=4, help="final stretch without kills")
    parser.add_argument(
        "--kill-every",
        type=float,
        nargs=2,
        default=(6, 16),
        metavar=("MIN", "MAX"),
        help="seconds between kills, drawn uniformly",
    )
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--pushers-per-client", type=int, default=2, help="RJMetrics pushers")
    parser.add_argument(
        "--stitch-pushers", type=int, default=3, help="Stitch batch pushers, dealt over the clients"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database", default=None, help="default: SQLite in a temporary folder")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="importapi-soak-"))
    database = args.database or f"sqlite:///{folder / 'warehouse'}"
    target = ProcessTarget(
        database, folder / "server.log", workers=args.workers, env={"IMPORTAPI_ACCESS_LOG": "0"}
    )
    harness = Harness(
        target,
        database,
        clients=args.clients,
        pushers_per_client=args.pushers_per_client,
        stitch_pushers=args.stitch_pushers,
        seed=args.seed,
    )
    rng = random.Random(args.seed)
    low, high = args.kill_every
    print(
        f"soak: {args.minutes} min ({args.calm_minutes} calm) on {database}; log {target.log_path}",
        flush=True,
    )
    harness.start()
    try:
        harness.run_for((args.minutes - args.calm_minutes) * 60, next_kill=lambda: rng.uniform(low, high))
        print(f"soak: {harness.kills} kills so far; calm stretch", flush=True)
        harness.run_for(args.calm_minutes * 60, next_kill=None)
        harness.stop()
    finally:
        target.kill()
    report = harness.report()
    print(json.dumps(report, indent=2))
    bad = (
        report["lost_acknowledged"]
        + report["half_applied"]
        + report["subtable_mismatch"]
        + report["phantom"]
        + report["wrong_answer"]
        + report["unexpected_5xx"]
        + report["unexpected_4xx"]
        + report["unexpected_errors"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
