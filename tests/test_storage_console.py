"""What the console needs from storage: settings, the activity window, rows read in key
order (paged or streamed) with the values they were pushed as, and last-push times."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importapi.errors import Code, Detail, NotFound
from importapi.rjmetrics.validate import validate
from importapi.settings import Limits, Settings
from importapi.storage import Storage, open_storage
from importapi.storage.base import Activity, Page
from tests.helpers import apply


def push(storage: Storage, client_id: int, table: str, points: list[dict[str, object]]) -> None:
    apply(storage, client_id, validate(points, table, version=2, limits=Limits()))


def activity(n: int, status: int = 201) -> Activity:
    details = () if status < 400 else (Detail(Code.KEY_MISSING, f"reason {n}", 0, "id"),)
    return Activity(
        "2026-01-01T00:00:00Z", f"r{n}", "data", 1, "k", "orders", 1, 1, 0, False, status, details
    )


def test_settings_are_stored_replaced_or_kept(storage: Storage) -> None:
    assert storage.catalog.get_setting("console.x") is None
    assert storage.catalog.set_setting("console.x", "one") == "one"
    assert storage.catalog.set_setting("console.x", "two", replace=False) == "one"
    assert storage.catalog.set_setting("console.x", "three") == "three"
    assert storage.catalog.get_setting("console.x") == "three"


def test_the_activity_window_keeps_the_newest_pushes_and_refusals_apart(storage: Storage) -> None:
    storage.catalog.record_activity([activity(n) for n in range(4)], keep=3)
    storage.catalog.record_activity([activity(n, 400) for n in range(4, 6)] + [activity(6)], keep=3)
    pushes = storage.catalog.recent_activity(10, refused=False)
    assert [a.request_id for a in pushes] == ["r6", "r3", "r2"]
    refusals = storage.catalog.recent_activity(10, refused=True)
    assert [a.request_id for a in refusals] == ["r5", "r4"]
    assert refusals[0].reasons == ["data point 0: reason 5"] and refusals[0] == activity(5, 400)
    assert [a.request_id for a in storage.catalog.recent_activity(1, refused=False)] == ["r6"]


def test_rows_come_in_key_order_paged_with_their_pushed_values(storage: Storage) -> None:
    client = storage.create_client("shop")
    push(
        storage,
        client.client_id,
        "t",
        [
            {"keys": ["a", "b"], "a": 2, "b": "x", "ok": True, "doc": {"k": [1]}, "big": 2**70},
            {"keys": ["a", "b"], "a": 1, "b": "y", "ok": False, "doc": [1, "2"], "big": 3},
            {"keys": ["a", "b"], "a": 1, "b": "x", "ok": None, "doc": None, "big": None},
        ],
    )
    columns, rows = storage.warehouse.read_rows(client.client_id, "t")
    assert columns == ["a", "b", "ok", "doc", "big"]
    assert list(rows) == [
        (1, "x", None, None, None),
        (1, "y", False, [1, "2"], 3),
        (2, "x", True, {"k": [1]}, 2**70),
    ]
    _, rows = storage.warehouse.read_rows(client.client_id, "t", Page(descending=True, offset=1, limit=1))
    assert list(rows) == [(1, "y", False, [1, "2"], 3)]
    _, rows = storage.warehouse.read_rows(client.client_id, "t", Page(offset=5))
    assert list(rows) == []


def test_a_long_read_streams_and_can_stop_early(storage: Storage) -> None:
    client = storage.create_client("shop")
    for start in range(0, 1200, 100):
        push(storage, client.client_id, "t", [{"keys": ["n"], "n": n} for n in range(start, start + 100)])
    _, rows = storage.warehouse.read_rows(client.client_id, "t")
    assert sum(1 for _ in rows) == 1200
    _, rows = storage.warehouse.read_rows(client.client_id, "t", Page(descending=True))
    assert next(rows) == (1199,)
    rows.close()  # type: ignore[attr-defined]


def test_reading_an_unknown_table_or_client_is_not_found(storage: Storage) -> None:
    client = storage.create_client("shop")
    with pytest.raises(NotFound):
        storage.warehouse.read_rows(client.client_id, "nothing")
    with pytest.raises(NotFound):
        storage.warehouse.read_rows(99, "t")


def test_tables_carry_their_last_push(storage: Storage) -> None:
    client = storage.create_client("shop")
    push(storage, client.client_id, "t", [{"keys": ["n"], "n": 1}])
    (info,) = storage.warehouse.tables(client.client_id)
    assert info.last_push_at is not None and info.last_push_at >= info.schema.created_at


KEYS = st.tuples(st.integers(-5, 5), st.text("ab", max_size=2))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.lists(KEYS, min_size=1, max_size=40, unique=True),
    offset=st.integers(0, 45),
    limit=st.integers(0, 45),
    descending=st.booleans(),
)
def test_any_page_is_that_slice_of_the_whole_table_in_key_order(
    keys: list[tuple[int, str]], offset: int, limit: int, descending: bool
) -> None:
    with (
        tempfile.TemporaryDirectory() as folder,
        open_storage(Settings(database=folder, sqlite_synchronous="OFF")) as storage,
    ):
        client = storage.create_client("shop")
        push(storage, client.client_id, "t", [{"keys": ["n", "s"], "n": n, "s": s} for n, s in keys])
        whole = sorted(keys, reverse=descending)
        _, rows = storage.warehouse.read_rows(client.client_id, "t", Page(descending, offset, limit))
        assert list(rows) == whole[offset : offset + limit]
