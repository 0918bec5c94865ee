"""Group commit on PostgreSQL: pushes queued while a transaction runs share the next one.

A table's advisory lock held from another connection stands in for a busy warehouse: the
push that comes first waits for it, the pushes queued meanwhile make the next group, all
at once, when the lock is let go (``table_held``). Real databases, real pushes.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importapi.errors import BadRequest
from importapi.kinds import Kind
from importapi.rjmetrics.validate import validate
from importapi.storage import Storage, open_storage
from tests.backends import fresh_postgres
from tests.helpers import apply, submit

_tables = itertools.count()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_postgres() as url:
        with open_storage(url) as storage:
            storage.create_client("groups")
        yield url


@pytest.fixture(scope="module")
def storage(pg_url: str) -> Iterator[Storage]:
    with open_storage(pg_url) as storage:
        yield storage


def fresh_table() -> str:
    return f"things_{next(_tables)}"


def batch(table: str, points: list[dict[str, Any]], keys: tuple[str, ...] = ("id",)) -> Any:
    return validate([{"keys": list(keys), **p} for p in points], table)


@contextmanager
def table_held(url: str, storage: Storage, table: str, first: Any) -> Iterator[None]:
    """``first`` pushed while another connection holds ``table``'s lock: once it waits for
    the lock, the block queues more pushes, and they are let go together when it ends."""
    with psycopg.connect(url, autocommit=True) as held:
        held.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"1/{table}",))
        future = submit(storage, 1, first)
        deadline = time.monotonic() + 30
        while not held.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)"
        ).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the first push never waited for the lock"
            time.sleep(0.005)
        try:
            yield
        finally:
            held.execute("SELECT pg_advisory_unlock_all()")
        future.result(timeout=30)


def query(storage: Storage, sql: str) -> list[tuple[Any, ...]]:
    return storage.warehouse.query(1, sql)[1]


def test_pushes_queued_while_a_transaction_runs_commit_together_and_count_their_own(
    pg_url: str, storage: Storage
) -> None:
    """Keys old and new mixed, one key in several pushes: each answer counts what that push
    inserted and replaced, in queue order, and their rows come from one transaction."""
    table = fresh_table()
    apply(storage, 1, batch(table, [{"id": i, "v": 0} for i in range(0, 10, 2)]))
    batches = [
        batch(table, [{"id": i, "v": n} for i in keys])
        for n, keys in enumerate([[0, 1, 2], [1, 3, 20], [4, 5, 20, 21], [99]], start=1)
    ]
    with table_held(pg_url, storage, table, batch(table, [{"id": 50, "v": 0}])):
        futures = [submit(storage, 1, b) for b in batches]
    answers = [(r.inserted, r.replaced) for f in futures for r in f.result(timeout=30)]
    assert answers == [(1, 2), (2, 1), (2, 2), (1, 0)]
    rows = dict(query(storage, f'SELECT id, v FROM "{table}"'))
    assert rows == {0: 1, 1: 2, 2: 1, 3: 2, 4: 3, 5: 3, 6: 0, 8: 0, 20: 3, 21: 3, 50: 0, 99: 4}
    with psycopg.connect(pg_url) as conn:
        (transactions,) = conn.execute(
            f'SELECT count(DISTINCT xmin::text) FROM client_1."{table}" WHERE v > 0'
        ).fetchone()  # type: ignore[misc]
    assert transactions == 1


def test_a_refused_push_in_a_group_leaves_the_others_applied(pg_url: str, storage: Storage) -> None:
    table = fresh_table()
    apply(storage, 1, batch(table, [{"id": 0, "v": 0}]))
    good = [batch(table, [{"id": 1, "v": 1}]), batch(table, [{"id": 2, "v": 2, "w": "new column"}])]
    refused = batch(table, [{"id": 3, "V": 3}])  # a column's name in another case
    with table_held(pg_url, storage, table, batch(table, [{"id": 9, "v": 9}])):
        futures = [submit(storage, 1, b) for b in (good[0], refused, good[1])]
    assert [r.inserted for r in futures[0].result(timeout=30)] == [1]
    with pytest.raises(BadRequest) as refusal:
        futures[1].result(timeout=30)
    assert "differs only in case" in str(refusal.value.details)
    assert [r.inserted for r in futures[2].result(timeout=30)] == [1]
    assert query(storage, f'SELECT id, v, w FROM "{table}" ORDER BY id') == [
        (0, 0, None),
        (1, 1, None),
        (2, 2, "new column"),
        (9, 9, None),
    ]


def test_a_push_planned_against_a_schema_another_process_changed_is_planned_again(
    pg_url: str, storage: Storage
) -> None:
    """This process holds the table's statements at one schema version; another process
    widens a column meanwhile. The next push here writes nothing with the old statements:
    it is planned again on the table as it is, and its answer says so."""
    table = fresh_table()
    apply(storage, 1, batch(table, [{"id": 1, "v": 1}]))
    apply(storage, 1, batch(table, [{"id": 2, "v": 2}]))  # the statements are this process's own
    with open_storage(pg_url) as other:
        widened = apply(other, 1, batch(table, [{"id": 3, "v": "three"}]))
    assert widened.kinds is not None and widened.kinds["v"] is Kind.TEXT
    result = apply(storage, 1, batch(table, [{"id": 4, "v": 4}]))
    assert result.kinds is not None and result.kinds["v"] is Kind.TEXT
    assert (result.inserted, result.replaced) == (1, 0)
    assert query(storage, f'SELECT id, v FROM "{table}" ORDER BY id') == [
        (1, "1"),
        (2, "2"),
        (3, "three"),
        (4, "4"),
    ]


GROUPED = st.lists(
    st.lists(
        st.fixed_dictionaries(
            {"id": st.integers(0, 9), "k": st.sampled_from(["x", "y"])},
            optional={"v": st.integers(-(2**63), 2**63 - 1), "w": st.booleans()},
        ),
        min_size=1,
        max_size=6,
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(pushes=GROUPED)
def test_a_group_answers_and_stores_as_the_same_pushes_one_at_a_time(
    pg_url: str, storage: Storage, pushes: list[list[dict[str, Any]]]
) -> None:
    """Keys of two fields, old and new ones mixed, the same key in several pushes, pushes
    adding a column between the others: the group's answers and rows are those of the
    pushes applied one after the other."""
    answers, tables = [], []
    for together in (False, True):
        table = fresh_table()
        keys = ("id", "k")
        results = [apply(storage, 1, batch(table, [{"id": 0, "k": "x", "v": 0}], keys))]
        batches = [batch(table, points, keys) for points in pushes]
        if together:
            with table_held(pg_url, storage, table, batch(table, [{"id": 0, "k": "x"}], keys)):
                futures = [submit(storage, 1, b) for b in batches]
            results += [f.result(timeout=30)[0] for f in futures]
        else:
            apply(storage, 1, batch(table, [{"id": 0, "k": "x"}], keys))
            results += [apply(storage, 1, b) for b in batches]
        answers.append([(r.inserted, r.replaced, r.kinds) for r in results])
        tables.append(query(storage, f'SELECT * FROM "{table}" ORDER BY id, k'))
    assert answers[0] == answers[1]
    assert tables[0] == tables[1]


def test_a_push_alone_counts_its_inserts_whatever_its_keys_read_back_as(storage: Storage) -> None:
    """Decimal keys (an integer beyond 2**53 beside a double) come back from PostgreSQL as
    text, not as the values pushed: a push written the usual way still counts its own."""
    table = fresh_table()
    first = apply(storage, 1, batch(table, [{"id": 2**60, "v": 1}, {"id": 1.5, "v": 1}]))
    assert first.kinds is not None and first.kinds["id"] is Kind.DECIMAL
    apply(storage, 1, batch(table, [{"id": 1.5, "v": 2}]))  # the table's statements are this process's own
    result = apply(
        storage, 1, batch(table, [{"id": 2**60, "v": 3}, {"id": 7.25, "v": 3}, {"id": 8.5, "v": 3}])
    )
    assert (result.inserted, result.replaced) == (2, 1)
    assert len(query(storage, f'SELECT id FROM "{table}"')) == 4
