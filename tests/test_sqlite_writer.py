"""The SQLite writer's fast ways: rows sent as one JSON text, inserted keys counted from
rowids, pushes grouped into one transaction. Each must store and count exactly what the
plain way (binding rows one by one, probing each key) does."""

from __future__ import annotations

import errno
import os
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importapi.errors import BadRequest, StorageUnavailable
from importapi.rjmetrics.validate import validate
from importapi.settings import Limits
from importapi.storage import Storage, open_storage, sqlite_wal, sqlite_writer
from tests.helpers import apply, submit, wait_until

TABLE = "things"
TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
    | st.lists(st.integers() | TEXT, max_size=3)
    | st.dictionaries(TEXT, st.integers(), max_size=2)
)
POINTS = st.lists(
    st.fixed_dictionaries(
        {"id": st.integers(0, 6) | TEXT.filter(bool)}, optional={"a": VALUES, "b": VALUES, "c": VALUES}
    ),
    min_size=1,
    max_size=8,
)


@contextmanager
def warehouse(json_rows: bool, monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    with monkeypatch.context() as m:
        if not json_rows:
            m.setattr(sqlite_writer, "json_rows_work", lambda conn: False)
        with tempfile.TemporaryDirectory() as folder, open_storage(folder) as storage:
            storage.create_client("writer")
            yield storage


def push(storage: Storage, points: list[dict[str, Any]]) -> Any:
    batch = validate([{"keys": ["id"], **p} for p in points], TABLE)
    return apply(storage, 1, batch)


def stored(storage: Storage) -> Any:
    """Every row with each value's SQLite storage class, and the table's column kinds."""
    tables = [t.as_dict() for t in storage.warehouse.tables(1)]
    if not tables:
        return None
    columns = [c["name"] for c in tables[0]["columns"]]
    select = ", ".join(f'typeof("{c}"), "{c}"' for c in columns)
    _, rows = storage.warehouse.query(1, f'SELECT {select} FROM "{TABLE}" ORDER BY rowid')
    return [(c["name"], c["type"], c["widened_at"] is not None) for c in tables[0]["columns"]], rows


def test_this_sqlite_takes_rows_as_json() -> None:
    if sqlite3.sqlite_version_info < (3, 38):
        pytest.skip(f"SQLite {sqlite3.sqlite_version} has no ->> operator: rows are bound one by one")
    assert sqlite_writer.json_rows_work(sqlite3.connect(":memory:"))


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(POINTS, min_size=1, max_size=5))
def test_rows_as_json_store_what_rows_bound_one_by_one_store(
    monkeypatch: pytest.MonkeyPatch, pushes: list[list[dict[str, Any]]]
) -> None:
    answers = []
    tables = []
    for json_rows in (True, False):
        with warehouse(json_rows, monkeypatch) as storage:
            results = []
            for points in pushes:
                try:
                    r = push(storage, points)
                    results.append((r.inserted, r.replaced, r.plan))
                except BadRequest as exc:  # a refusal: the same on both
                    results.append(repr(exc))
            answers.append(results)
            tables.append(stored(storage))
    assert answers[0] == answers[1]
    assert tables[0] == tables[1]


@pytest.mark.parametrize("json_rows", [True, False], ids=["json-rows", "bound-rows"])
def test_a_big_push_stores_booleans_as_sqlite_stores_them(
    monkeypatch: pytest.MonkeyPatch, json_rows: bool
) -> None:
    """A push of more rows than one statement binds (4 columns: 8,191 rows) is bound value by
    value, its last rows sent as JSON (or bound too, without JSON): its booleans are stored as
    the integers 1 and 0, nulls as nulls, and the other columns as they came (a double of 1.0
    as a double, text as text)."""
    flags = [True, False, None]
    points = [{"id": i, "flag": flags[i % 3], "n": float(i % 2), "t": "1"} for i in range(9000)]
    with warehouse(json_rows, monkeypatch) as storage:
        batch = validate([{"keys": ["id"], **p} for p in points], TABLE, limits=Limits(max_points=9000))
        result = apply(storage, 1, batch)
        assert result.inserted == 9000
        _, rows = storage.warehouse.query(
            1, f'SELECT id, typeof(flag), flag, typeof(n), n, typeof(t), t FROM "{TABLE}" ORDER BY id'
        )
    expected = [
        (
            p["id"],
            *(("integer", int(f)) if (f := p["flag"]) is not None else ("null", None)),
            "real",
            p["n"],
            "text",
            "1",
        )
        for p in points
    ]
    assert [tuple(r) for r in rows] == expected


@pytest.mark.parametrize("json_rows", [True, False], ids=["json-rows", "bound-rows"])
def test_pushes_grouped_in_one_transaction_each_count_their_own_keys(
    monkeypatch: pytest.MonkeyPatch, json_rows: bool
) -> None:
    """Many pushes to one table queued at once are applied in groups; each answer counts
    the keys new to the table when that push was applied, in queue order."""
    batches = [[{"id": (n * 7 + i) % 40, "v": n} for i in range(n % 5 + 1)] for n in range(60)]
    with warehouse(json_rows, monkeypatch) as storage:
        push(storage, [{"id": 0, "v": -1}])
        futures = [submit(storage, 1, validate([{"keys": ["id"], **p} for p in b], TABLE)) for b in batches]
        results = [f.result(timeout=30)[0] for f in futures]
        seen = {0}
        for batch, result in zip(batches, results):
            keys = [p["id"] for p in batch]
            inserted = len(set(keys) - seen)
            assert (result.inserted, result.replaced) == (inserted, len(keys) - inserted)
            seen |= set(keys)
        _, rows = storage.warehouse.query(1, f'SELECT id, v FROM "{TABLE}" ORDER BY id')
        expected = {0: -1}
        for n, batch in enumerate(batches):
            for p in batch:
                expected[p["id"]] = n
        assert dict(rows) == expected


@contextmanager
def writer_held(storage: Storage) -> Iterator[None]:
    """The client file's write lock held from outside while the block queues pushes: the
    writer takes the first one and waits for the lock; the rest queue up meanwhile and
    make its next group, all at once, when the block ends."""
    held = sqlite3.connect(storage.warehouse._client_path(1), isolation_level=None)  # type: ignore[attr-defined]
    held.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        held.execute("ROLLBACK")
        held.close()


GROUPED = st.lists(
    st.lists(
        st.fixed_dictionaries(
            {"id": st.integers(0, 9), "k": st.sampled_from(["x", "y"])},
            optional={"v": st.integers(), "w": st.booleans()},
        ),
        min_size=1,
        max_size=6,
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(GROUPED, st.booleans())
def test_a_group_of_pushes_answers_and_stores_as_the_same_pushes_one_at_a_time(
    pushes: list[list[dict[str, Any]]], json_rows: bool
) -> None:
    """Pushes queued together to one table are written by one statement where they can be
    (plain rows, no schema change): each answer still counts that push's own new keys, in
    queue order, and the table ends as after the pushes one at a time. Keys of two fields,
    old and new ones mixed, the same key in several pushes, pushes adding a column between
    the others."""
    answers, tables = [], []
    with pytest.MonkeyPatch.context() as monkeypatch:
        for together in (False, True):
            with warehouse(json_rows, monkeypatch) as storage:
                first = validate([{"keys": ["id", "k"], "id": 0, "k": "x", "v": 0}], TABLE)
                results = [apply(storage, 1, first)]
                batches = [validate([{"keys": ["id", "k"], **p} for p in points], TABLE) for points in pushes]
                if together:
                    with writer_held(storage):
                        futures = [submit(storage, 1, b) for b in batches]
                    results += [f.result(timeout=30)[0] for f in futures]
                else:
                    results += [apply(storage, 1, b) for b in batches]
                answers.append([(r.inserted, r.replaced) for r in results])
                tables.append(storage.warehouse.query(1, f'SELECT * FROM "{TABLE}" ORDER BY id, k'))
    assert answers[0] == answers[1]
    assert tables[0] == tables[1]


def test_a_group_written_as_one_counts_each_pushs_keys_with_old_and_new_mixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case where a group's statement inserts some of its keys and replaces others."""
    together: list[int] = []
    apply_together = sqlite_writer.ClientWriter._apply_together

    def counted(self: Any, conn: Any, group: Any, start: int) -> Any:
        done = apply_together(self, conn, group, start)
        together.append(len(done))
        return done

    monkeypatch.setattr(sqlite_writer.ClientWriter, "_apply_together", counted)
    with open_storage(str(tmp_path)) as storage:
        storage.create_client("writer")
        apply(storage, 1, validate([{"keys": ["id"], "id": i, "v": 0} for i in range(0, 10, 2)], TABLE))
        batches = [
            validate([{"keys": ["id"], "id": i, "v": n} for i in keys], TABLE)
            for n, keys in enumerate([[0, 1, 2], [1, 3, 20], [4, 5, 20, 21], [99]])
        ]
        with writer_held(storage):
            futures = [submit(storage, 1, b) for b in batches]
        answers = [(r.inserted, r.replaced) for f in futures for r in f.result(timeout=30)]
        assert answers == [(1, 2), (2, 1), (2, 2), (1, 0)]
        assert max(together) >= 3, together  # they were written together
        _, rows = storage.warehouse.query(1, f'SELECT id, v FROM "{TABLE}" ORDER BY id')
        assert dict(rows) == {0: 0, 1: 1, 2: 0, 3: 1, 4: 2, 5: 2, 6: 0, 8: 0, 20: 2, 21: 2, 99: 3}


def _wal_restarts(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: one more each time the WAL starts over."""
    with wal.open("rb") as f:
        return int.from_bytes(f.read(16)[12:16], "big")


def test_the_wal_starts_over_while_writes_never_pause() -> None:
    """Under a load that never lets the writer pause, the WAL is still copied back in full
    and started again from its first frame each time it has grown past RESTART_WAL_FRAMES,
    instead of growing for as long as the load lasts (to hundreds of MB for a database of a
    few). At least 1,500 pushes and 3 s: enough frames for several restarts, and enough
    checkpoint intervals, on a fast machine or a slow one."""
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as folder, open_storage(folder) as storage:
        storage.create_client("writer")
        push(storage, [{"id": -1, "v": "x" * 100}])
        wal = Path(folder) / "client_1.sqlite3-wal"
        before, started, in_flight, n = _wal_restarts(wal), time.monotonic(), [], 0
        while n < 1500 or time.monotonic() - started < 3:
            in_flight = [f for f in in_flight if not f.done()]
            while len(in_flight) < 8:  # the queue is never empty: the writer never pauses
                # keys in random order: each push touches pages all over the key index
                points = [{"keys": ["id"], "id": rng.randrange(2**40), "v": "x" * 200} for _ in range(100)]
                in_flight.append(submit(storage, 1, validate(points, TABLE)))
                n += 1
            time.sleep(0.001)
        for f in in_flight:
            f.result(timeout=30)
        seconds = time.monotonic() - started
        assert _wal_restarts(wal) - before >= 2, (
            f"{n} pushes in {seconds:.1f} s, WAL of {wal.stat().st_size >> 20} MB"
        )


def _rows(folder: str) -> list[Any]:
    """The table as another connection reads it."""
    with sqlite3.connect(Path(folder) / "client_1.sqlite3") as conn:
        return conn.execute(f'SELECT id, v FROM "{TABLE}" ORDER BY id').fetchall()


def test_a_push_is_answered_only_once_its_commit_is_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer commits without waiting for the disk; the push's answer waits for the
    flush of the WAL (here held back until the test lets it go), whichever thread does it."""
    release, flushed = threading.Event(), []

    def held_flush(fd: int) -> None:
        assert release.wait(30)
        os.fdatasync(fd)
        flushed.append(fd)

    with tempfile.TemporaryDirectory() as folder, open_storage(folder) as storage:
        storage.create_client("writer")
        push(storage, [{"id": 0, "v": "first"}])
        monkeypatch.setattr(sqlite_wal, "flush", held_flush)
        answers = [
            submit(storage, 1, validate([{"keys": ["id"], "id": i, "v": "x"}], TABLE)) for i in range(1, 9)
        ]
        deadline = time.monotonic() + 10
        while len(_rows(folder)) < 9 and time.monotonic() < deadline:  # committed: readers see it
            time.sleep(0.01)
        assert len(_rows(folder)) == 9
        time.sleep(0.2)
        assert not any(a.done() for a in answers), "answered before the WAL was on disk"
        release.set()
        assert [a.result(timeout=30)[0].inserted for a in answers] == [1] * 8
        assert flushed


def test_pushes_are_written_while_the_flusher_waits_for_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush the disk holds up (here the flusher thread's, until the test lets it go)
    delays the answers of the pushes it covers, not the writing of those that come
    meanwhile: each is committed (readers see it) and answered after a later flush."""
    release, entered = threading.Event(), threading.Event()

    def flusher_held(fd: int) -> None:
        if threading.current_thread().name.startswith("flush-"):
            entered.set()
            assert release.wait(30)
        os.fdatasync(fd)

    def one(storage: Storage, i: int) -> Any:
        return submit(storage, 1, validate([{"keys": ["id"], "id": i, "v": "x"}], TABLE))

    with tempfile.TemporaryDirectory() as folder, open_storage(folder) as storage:
        storage.create_client("writer")
        push(storage, [{"id": 0, "v": "first"}])
        monkeypatch.setattr(sqlite_wal, "flush", flusher_held)
        with writer_held(storage):  # a push waits behind the first: its flush goes to the flusher
            first = [one(storage, 1)]
            time.sleep(0.1)  # the writer has taken it, and waits for the file's lock
            first.append(one(storage, 2))
            time.sleep(0.1)
        assert entered.wait(10)
        later = []
        for i in (3, 4):  # one at a time, each its own group
            later.append(one(storage, i))
            wait_until(
                lambda n=i + 1: len(_rows(folder)) == n, timeout=10, what=f"push {i} written during the flush"
            )
        assert not first[0].done() and not any(a.done() for a in later), "answered before the flush"
        release.set()
        assert [a.result(timeout=30)[0].inserted for a in [*first, *later]] == [1] * 4


def test_a_push_after_another_process_wrote_counts_its_own_inserts() -> None:
    """A push's new keys are counted by how far it moved the table's largest rowid; a row
    another process committed since the writer's last push (here another connection) is
    not counted as the next push's, and a key it stored counts as replaced."""
    with tempfile.TemporaryDirectory() as folder, open_storage(folder) as storage:
        storage.create_client("writer")
        assert push(storage, [{"id": i, "v": "ours"} for i in range(5)]).inserted == 5
        with sqlite3.connect(Path(folder) / "client_1.sqlite3") as other:
            other.execute(f"INSERT INTO \"{TABLE}\" (id, v) VALUES (100, 'theirs')")
        result = push(storage, [{"id": 5, "v": "ours"}, {"id": 100, "v": "ours"}])
        assert (result.inserted, result.replaced) == (1, 1)
        assert push(storage, [{"id": 6, "v": "ours"}]).inserted == 1
        assert len(_rows(folder)) == 8


def test_a_failed_flush_refuses_the_pushes_it_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the disk refuses the flush, the pushes of that commit are answered 503 (the
    client sends them again), and the writer goes on with the next ones."""

    def failing_flush(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with tempfile.TemporaryDirectory() as folder, open_storage(folder) as storage:
        storage.create_client("writer")
        push(storage, [{"id": 0, "v": "first"}])
        with monkeypatch.context() as m:
            m.setattr(sqlite_wal, "flush", failing_flush)
            with pytest.raises(StorageUnavailable, match="could not write to disk"):
                push(storage, [{"id": 1, "v": "second"}])
        # the refused commit may still have reached readers (and the disk): sent again, it lands the same
        assert push(storage, [{"id": 1, "v": "again"}]).inserted == 0
        assert _rows(folder) == [(0, "first"), (1, "again")]


def test_a_file_another_process_holds_is_switched_to_wal_once_it_is_free(tmp_path: Path) -> None:
    """Opening a new file that another process holds (servers starting together on a new
    warehouse): SQLite refuses the switch to WAL at once, "database is locked", whatever its
    busy timeout; the switch is tried again until the other lets go."""
    from importapi.storage.sqlite_sql import connect

    path = tmp_path / "catalog.sqlite3"
    other = sqlite3.connect(path, isolation_level=None)  # another opener, still in rollback mode
    other.execute("CREATE TABLE t (a)")
    other.execute("BEGIN IMMEDIATE")  # about to write: waiting for it could deadlock, so SQLite does not
    other.execute("INSERT INTO t VALUES (1)")
    opened: list[Any] = []
    opener = threading.Thread(target=lambda: opened.append(connect(path)))
    opener.start()
    time.sleep(0.3)
    assert not opened, "the switch went through while the file was held"
    other.execute("COMMIT")
    opener.join(timeout=10)
    assert opened and opened[0].execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    opened[0].close()


def test_after_an_activation_deletes_rows_the_next_push_in_the_group_counts_its_own(tmp_path: Path) -> None:
    """An activation deletes the rows of older versions, the table's largest rowid among
    them; a push after it in the same group still counts the keys it inserted."""
    from importapi.kinds import Kind
    from importapi.push import Batch

    def batch(keys: list[int], version: int, activate: int | None = None) -> Batch:
        points = [{"id": k, "v": version} for k in keys]
        return Batch(
            TABLE, ("id",), points, {"id": Kind.INTEGER, "v": Kind.INTEGER}, version="v", activate=activate
        )

    with open_storage(str(tmp_path)) as storage:
        storage.create_client("writer")
        assert apply(storage, 1, batch([1, 2, 3], 1)).inserted == 3
        with writer_held(storage):
            futures = [submit(storage, 1, batch([1], 2, activate=2)), submit(storage, 1, batch([10, 11], 2))]
        first, second = (f.result(timeout=30)[0] for f in futures)
        assert (first.inserted, first.replaced, first.deleted) == (0, 1, 2)
        assert (second.inserted, second.replaced) == (2, 0)
        _, rows = storage.warehouse.query(1, f'SELECT id, v FROM "{TABLE}" ORDER BY id')
        assert rows == [(1, 2), (10, 2), (11, 2)]


def test_pushes_of_many_sizes_prepare_one_bound_statement_per_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each statement text the writer runs stays prepared in its connection's cache (128 of
    them, a megabyte for a thousand bound rows): pushes of 12 sizes, each past one statement's
    bound values, bind only full statements of one size; what each leaves over goes as one
    JSON text, whose statement is the same for every size. And every row is stored."""
    sizes: set[int] = set()
    real = sqlite_writer.TableSQL.upsert_mapped

    def upsert_mapped(self: Any, layout: Any, once: Any, count: int) -> str:
        sizes.add(count)
        return real(self, layout, once, count)

    monkeypatch.setattr(sqlite_writer.TableSQL, "upsert_mapped", upsert_mapped)
    limits = Limits(max_points=20_000)
    next_id, total = 0, 0
    with warehouse(True, monkeypatch) as storage:
        for n in range(12):
            count = 16_400 + 301 * n  # 2 columns: past one statement of 16,383 rows bound
            points = [{"id": next_id + i, "v": i % 7} for i in range(count)]
            next_id, total = next_id + count, total + count
            assert (
                apply(
                    storage, 1, validate([{"keys": ["id"], **p} for p in points], TABLE, limits=limits)
                ).inserted
                == count
            )
        _, rows = storage.warehouse.query(1, f'SELECT count(*), sum(v) FROM "{TABLE}"')
    assert len(sizes) == 1
    assert rows[0][0] == total
