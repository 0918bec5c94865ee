"""Properties of upserts, checked by Hypothesis against a plain model.

The model of a table is a dict from key to the last data point pushed for that key
(replace semantics: a field the last data point lacks is null), plus the set of fields that
have ever held a non-null value (the columns). Every example gets a fresh warehouse in a
temporary folder: function-scoped fixtures are not reset between Hypothesis examples.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importapi.push import PushResult
from importapi.rjmetrics.validate import validate
from importapi.storage import Storage, open_storage
from tests.helpers import apply, make_api

TABLE = "things"
INT64 = st.integers(-(2**63), 2**63 - 1)
# Text a JSON body can carry and a backend can store: no NUL (refused with a 400) and no
# lone surrogates (not UTF-8).
TEXT = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
JSON_SCALARS = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(TEXT, max_size=5)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT, max_size=3), inner, max_size=3),
    max_leaves=6,
).filter(lambda v: isinstance(v, (list, dict)))

# One JSON type per field, so no column ever widens (widening has its own property below).
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "count": INT64,
    "label": st.text(TEXT, max_size=8),
    "ratio": st.floats(allow_nan=False, allow_infinity=False),
    "flag": st.booleans(),
    "extra": JSON_VALUES,
}


def data_points(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    optional = {name: st.none() | values for name, values in fields.items()}
    return st.builds(
        lambda key, rest: {"keys": ["id"], "id": key, **rest},
        st.integers(0, 5),
        st.fixed_dictionaries({}, optional=optional),
    )


def bodies(fields: dict[str, st.SearchStrategy[Any]] = FIELDS) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(data_points(fields), min_size=1, max_size=6)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Model:
    """Last write wins by key, with replace semantics."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self.columns: set[str] = set()

    def apply(self, request: list[dict[str, Any]]) -> tuple[int, int]:
        inserted = replaced = 0
        for point in request:
            fields = {k: v for k, v in point.items() if k != "keys"}
            if fields["id"] in self.rows:
                replaced += 1
            else:
                inserted += 1
            self.rows[fields["id"]] = fields
            self.columns |= {k for k, v in fields.items() if v is not None}
        return inserted, replaced


def expected(field: str, value: Any) -> Any:
    """What the warehouse holds for a pushed value of one of FIELDS."""
    if value is None:
        return None
    if field == "flag":
        return int(value)  # SQLite has no boolean storage class
    return value


def stored(field: str, value: Any) -> Any:
    if field == "extra" and value is not None:
        return json.loads(value)
    return value


@contextmanager
def warehouse() -> Iterator[tuple[Storage, int]]:
    with tempfile.TemporaryDirectory() as folder, open_storage(folder) as storage:
        yield storage, storage.create_client("props").client_id


def submit(
    storage: Storage, client_id: int, request: list[dict[str, Any]], *, sandbox: bool = False
) -> PushResult:
    batch = validate(copy.deepcopy(request), TABLE)
    return apply(storage, client_id, batch, sandbox=sandbox)


def read_table(storage: Storage, client_id: int) -> tuple[list[str], dict[Any, dict[str, Any]]]:
    """The table's columns and its rows by id; no columns and no rows if it does not exist."""
    if not any(t.schema.name == TABLE for t in storage.warehouse.tables(client_id)):
        return [], {}
    columns, rows = storage.warehouse.query(client_id, f'SELECT * FROM "{TABLE}"')
    by_id = {}
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        assert record["id"] not in by_id, f"two rows for id {record['id']}"
        by_id[record["id"]] = record
    return columns, by_id


def snapshot(storage: Storage, client_id: int) -> Any:
    return read_table(storage, client_id), [t.as_dict() for t in storage.warehouse.tables(client_id)]


def assert_matches(model: Model, storage: Storage, client_id: int) -> None:
    columns, rows = read_table(storage, client_id)
    assert set(columns) == model.columns
    assert set(rows) == set(model.rows)
    for key, fields in model.rows.items():
        for name in model.columns:
            assert stored(name, rows[key][name]) == expected(name, fields.get(name)), (key, name)


@SETTINGS
@given(st.lists(bodies(), min_size=1, max_size=6))
def test_the_table_is_last_write_wins_by_key(pushes: list[list[dict[str, Any]]]) -> None:
    model = Model()
    with warehouse() as (storage, cid):
        for request in pushes:
            result = submit(storage, cid, request)
            assert (result.inserted, result.replaced) == model.apply(request)
            assert_matches(model, storage, cid)


@SETTINGS
@given(st.lists(bodies(), max_size=3), bodies())
def test_pushing_the_same_request_twice_changes_nothing(
    before: list[list[dict[str, Any]]], request: list[dict[str, Any]]
) -> None:
    with warehouse() as (storage, cid):
        for earlier in before:
            submit(storage, cid, earlier)
        submit(storage, cid, request)
        once = snapshot(storage, cid)
        again = submit(storage, cid, request)
        assert (again.inserted, again.replaced) == (0, len(request))
        assert snapshot(storage, cid) == once


@SETTINGS
@given(st.lists(bodies(), min_size=1, max_size=5))
def test_the_sandbox_plans_exactly_what_production_then_does(pushes: list[list[dict[str, Any]]]) -> None:
    with warehouse() as (storage, cid):
        for request in pushes:
            before = snapshot(storage, cid)
            planned = submit(storage, cid, request, sandbox=True)
            assert snapshot(storage, cid) == before, "the sandbox changed the warehouse"
            done = submit(storage, cid, request)
            assert (planned.inserted, planned.replaced) == (done.inserted, done.replaced)
            assert planned.plan == done.plan


# -- widening ---------------------------------------------------------------------------

# "amount" takes integers and sometimes numbers (integer -> double); "code" takes integers
# and sometimes strings (integer -> text). Integers stay within 2**53 so that a double
# holds every one of them exactly.
EXACT = st.integers(-(2**53), 2**53)
WIDENING: dict[str, st.SearchStrategy[Any]] = {
    "amount": EXACT | st.floats(allow_nan=False, allow_infinity=False),
    "code": EXACT | st.text(TEXT, max_size=6),
}


def widened(field: str, value: Any, kinds: dict[str, type]) -> Any:
    """A pushed value as its column holds it once the column has its final kind."""
    if value is None:
        return None
    if kinds.get(field) is float:
        return float(value)
    if kinds.get(field) is str:
        return value if isinstance(value, str) else str(value)
    return value


@SETTINGS
@given(st.lists(bodies(WIDENING), min_size=1, max_size=6))
def test_widening_keeps_every_stored_value_meaning_what_was_pushed(
    pushes: list[list[dict[str, Any]]],
) -> None:
    model = Model()
    kinds: dict[str, type] = {}
    with warehouse() as (storage, cid):
        for request in pushes:
            submit(storage, cid, request)
            model.apply(request)
            for point in request:
                if isinstance(point.get("amount"), float):
                    kinds["amount"] = float
                if isinstance(point.get("code"), str):
                    kinds["code"] = str
            columns, rows = read_table(storage, cid)
            assert set(columns) == model.columns
            for key, fields in model.rows.items():
                for name in model.columns - {"id"}:
                    want = widened(name, fields.get(name), kinds)
                    got = rows[key][name]
                    assert got == want and type(got) is type(want), (key, name, got, want)


# -- over HTTP ------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(bodies(), max_size=2), bodies())
def test_over_http_a_repeated_request_is_all_replaced_and_changes_nothing(
    before: list[list[dict[str, Any]]], request: list[dict[str, Any]]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        api_iter = make_api(Path(folder) / "warehouse")
        api = next(api_iter)
        try:
            for earlier in before:
                assert api.push(earlier, table=TABLE).status_code == 201
            first = api.push(request, table=TABLE)
            assert first.status_code == 201, first.text
            once = snapshot(api.storage, api.client_id)
            second = api.push(request, table=TABLE)
            assert second.status_code == 201, second.text
            assert (second.json()["inserted"], second.json()["replaced"]) == (0, len(request))
            assert snapshot(api.storage, api.client_id) == once
        finally:
            api_iter.close()


def test_widening_an_integer_column_to_double_keeps_every_digit() -> None:
    big = 2**60 + 1  # not a double
    with warehouse() as (storage, cid):
        submit(storage, cid, [{"keys": ["id"], "id": 1, "n": big}])
        submit(storage, cid, [{"keys": ["id"], "id": 2, "n": 0.5}])
        _, rows = read_table(storage, cid)
        # Whatever the column became, the stored value still reads as the integer pushed.
        assert int(rows[1]["n"]) == big
