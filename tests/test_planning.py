"""Planning without a database: ``importapi.schema`` on hand-built schemas and batches.

``make_plan`` decides what a push does to a table (create it, add columns, widen them) or
refuses it with coded details; ``prepare_rows`` gives one row per key in column order, the
last data point for a key winning; ``count_changes`` counts inserted and replaced data
points. Both backends run exactly this, so what is decided here is decided for both.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importapi.errors import BadRequest, Code
from importapi.kinds import Kind
from importapi.push import Batch
from importapi.schema import Column, Plan, TableSchema, count_changes, make_plan, prepare_rows
from importapi.settings import Limits

LIMITS = Limits()


def table(key_fields: tuple[str, ...] = ("id",), **columns: Kind) -> TableSchema:
    return TableSchema("orders", key_fields, {name: Column(name, kind) for name, kind in columns.items()})


def batch(
    points: list[dict[str, Any]],
    key_fields: tuple[str, ...] = ("id",),
    *,
    inexact: set[str] | None = None,
    **kinds: Kind,
) -> Batch:
    return Batch("orders", key_fields, points, kinds=kinds, inexact=inexact or set())


def refused(schema: TableSchema | None, b: Batch, limits: Limits = LIMITS) -> list[tuple[str, Any, Any]]:
    with pytest.raises(BadRequest) as caught:
        make_plan(schema, b, limits)
    assert caught.value.reasons == [d.reason for d in caught.value.details]
    return [(d.code, d.point, d.field) for d in caught.value.details]


# -- make_plan: create, add, widen ----------------------------------------------------------


def test_a_new_table_is_created_with_key_columns_first() -> None:
    plan = make_plan(None, batch([{"s": "x", "id": 1}], s=Kind.TEXT, id=Kind.INTEGER), LIMITS)
    assert plan.create and plan.changes_schema
    assert list(plan.kinds) == ["id", "s"]
    assert [(c.name, c.kind) for c in plan.add] == [("id", Kind.INTEGER), ("s", Kind.TEXT)]
    assert plan.describe() == {
        "create_table": True,
        "key_fields": ["id"],
        "add_columns": [{"name": "id", "type": "integer"}, {"name": "s", "type": "text"}],
        "widen_columns": [],
    }


def test_a_double_column_that_must_hold_integers_beyond_2_53_is_decimal() -> None:
    b = batch([{"id": 1, "v": 1.5}, {"id": 2, "v": 2**53 + 1}], v=Kind.DOUBLE, id=Kind.INTEGER, inexact={"v"})
    assert make_plan(None, b, LIMITS).kinds["v"] is Kind.DECIMAL
    plan = make_plan(table(id=Kind.INTEGER), b, LIMITS)
    assert plan.add == [Column("v", Kind.DECIMAL)]


def test_new_fields_are_added_and_known_ones_left_alone() -> None:
    schema = table(id=Kind.INTEGER, n=Kind.INTEGER)
    plan = make_plan(
        schema, batch([{"id": 1, "n": 2, "s": "x"}], id=Kind.INTEGER, n=Kind.INTEGER, s=Kind.TEXT), LIMITS
    )
    assert not plan.create and plan.changes_schema
    assert plan.add == [Column("s", Kind.TEXT)] and plan.widen == []
    assert plan.kinds == {"id": Kind.INTEGER, "n": Kind.INTEGER, "s": Kind.TEXT}
    assert schema.columns.keys() == {"id", "n"}  # the schema itself is not changed


@pytest.mark.parametrize(
    ("stored", "pushed", "after"),
    [
        (Kind.BOOLEAN, Kind.INTEGER, Kind.INTEGER),
        (Kind.INTEGER, Kind.DOUBLE, Kind.DOUBLE),
        (Kind.DOUBLE, Kind.DECIMAL, Kind.DECIMAL),
        (Kind.INTEGER, Kind.TEXT, Kind.TEXT),
        (Kind.TEXT, Kind.JSON, Kind.JSON),
        (Kind.INTEGER, Kind.BOOLEAN, Kind.INTEGER),
        (Kind.JSON, Kind.TEXT, Kind.JSON),
        (Kind.TEXT, Kind.TEXT, Kind.TEXT),
    ],
)
def test_a_column_widens_only_when_a_value_does_not_fit(stored: Kind, pushed: Kind, after: Kind) -> None:
    plan = make_plan(table(id=Kind.INTEGER, v=stored), batch([{"id": 1, "v": 0}], v=pushed), LIMITS)
    assert plan.kinds["v"] is after and plan.add == []
    assert plan.widen == ([("v", stored, after)] if after is not stored else [])
    assert plan.changes_schema == (after is not stored)


def test_an_integer_column_holding_integers_beyond_2_53_widens_to_decimal_not_double() -> None:
    schema, b = table(id=Kind.INTEGER, n=Kind.INTEGER), batch([{"id": 1, "n": 0.5}], n=Kind.DOUBLE)
    asked: list[str] = []
    plan = make_plan(schema, b, LIMITS, stored_inexact=lambda c: asked.append(c) or True)
    assert plan.widen == [("n", Kind.INTEGER, Kind.DECIMAL)] and asked == ["n"]
    plan = make_plan(schema, b, LIMITS, stored_inexact=lambda _c: False)
    assert plan.widen == [("n", Kind.INTEGER, Kind.DOUBLE)]


def test_key_fields_in_another_order_are_the_same_key_fields() -> None:
    schema = table(("a", "b"), a=Kind.INTEGER, b=Kind.INTEGER)
    plan = make_plan(schema, batch([{"a": 1, "b": 2}], ("b", "a"), a=Kind.INTEGER, b=Kind.INTEGER), LIMITS)
    assert plan.key_fields == ("a", "b") and not plan.changes_schema


# -- make_plan: refusals --------------------------------------------------------------------


def test_other_key_fields_than_the_tables_are_refused() -> None:
    schema = table(id=Kind.INTEGER, email=Kind.TEXT)
    for keys in (("email",), ("id", "email")):
        b = batch([{"id": 1, "email": "a"}], keys, id=Kind.INTEGER, email=Kind.TEXT)
        assert refused(schema, b) == [(Code.KEY_FIELDS_FIXED, 0, None)]


def test_a_field_equal_to_a_column_but_for_case_names_its_first_point() -> None:
    schema = table(id=Kind.INTEGER, Email=Kind.TEXT)
    b = batch([{"id": 1}, {"id": 2, "email": "x"}, {"id": 3, "email": "y"}], id=Kind.INTEGER, email=Kind.TEXT)
    assert refused(schema, b) == [(Code.FIELD_NAME_CASE, 1, "email")]


def test_every_problem_against_the_schema_is_listed() -> None:
    schema = table(id=Kind.INTEGER, Email=Kind.TEXT)
    b = batch([{"k": 1, "email": "x"}], ("k",), k=Kind.INTEGER, email=Kind.TEXT)
    assert refused(schema, b) == [(Code.KEY_FIELDS_FIXED, 0, None), (Code.FIELD_NAME_CASE, 0, "email")]


def test_the_column_limit_counts_key_columns_and_not_widening() -> None:
    limits = Limits(max_columns=3)
    three = batch([{"id": 1, "a": 1, "b": 1}], id=Kind.INTEGER, a=Kind.INTEGER, b=Kind.INTEGER)
    assert len(make_plan(None, three, limits).kinds) == 3
    four = batch(
        [{"id": 1, "a": 1, "b": 1, "c": 1}], id=Kind.INTEGER, a=Kind.INTEGER, b=Kind.INTEGER, c=Kind.INTEGER
    )
    assert refused(None, four, limits) == [(Code.TOO_MANY_COLUMNS, None, None)]
    full = table(id=Kind.INTEGER, a=Kind.INTEGER, b=Kind.INTEGER)
    assert make_plan(full, batch([{"id": 1, "a": "x"}], a=Kind.TEXT), limits).widen == [
        ("a", Kind.INTEGER, Kind.TEXT)
    ]
    assert refused(full, batch([{"id": 1, "c": 1}], c=Kind.INTEGER), limits) == [
        (Code.TOO_MANY_COLUMNS, None, None)
    ]


# -- prepare_rows and count_changes -----------------------------------------------------------


def plan_for(b: Batch, schema: TableSchema | None = None) -> Plan:
    return make_plan(schema, b, LIMITS)


def test_rows_are_in_column_order_with_absent_fields_null() -> None:
    b = batch([{"s": "x", "id": 1}, {"n": 2, "id": 2}], s=Kind.TEXT, id=Kind.INTEGER, n=Kind.INTEGER)
    rows = prepare_rows(plan_for(b), b)
    assert rows.columns == ["id", "s", "n"]
    assert [tuple(r) for r in rows.rows] == [(1, "x", None), (2, None, 2)]


def test_the_last_point_for_a_key_is_the_whole_row() -> None:
    b = batch(
        [{"id": 1, "a": "first", "b": "only first"}, {"id": 2, "a": "other"}, {"id": 1, "a": "second"}],
        a=Kind.TEXT,
        b=Kind.TEXT,
        id=Kind.INTEGER,
    )
    rows = prepare_rows(plan_for(b), b)
    assert [tuple(r) for r in rows.rows] == [(1, "second", None), (2, "other", None)]
    assert rows.keys == [1, 2] and rows.point_keys == [1, 2, 1]


def test_a_composite_key_is_a_tuple_of_the_key_values() -> None:
    points = [{"a": 1, "b": "x", "v": 1}, {"a": 1, "b": "y"}, {"b": "x", "a": 1, "v": 3}]
    b = batch(points, ("a", "b"), a=Kind.INTEGER, b=Kind.TEXT, v=Kind.INTEGER)
    rows = prepare_rows(plan_for(b), b)
    assert rows.keys == [(1, "x"), (1, "y")] and rows.point_keys == [(1, "x"), (1, "y"), (1, "x")]
    assert [tuple(r) for r in rows.rows] == [(1, "x", 3), (1, "y", None)]


def test_values_are_converted_to_the_kind_of_their_column() -> None:
    schema = table(id=Kind.INTEGER, t=Kind.TEXT, n=Kind.INTEGER, j=Kind.JSON)
    b = batch(
        [{"id": 1, "t": 5, "n": True, "j": "s"}, {"id": 2, "t": True, "n": 7, "j": {"b": 1, "a": [1.0]}}],
        t=Kind.INTEGER,
        n=Kind.INTEGER,
        j=Kind.JSON,
    )
    b.mixed = {"t", "n", "j"}
    rows = prepare_rows(plan_for(b, schema), b)
    assert [tuple(r) for r in rows.rows] == [(1, "5", 1, '"s"'), (2, "true", 7, '{"a":[1.0],"b":1}')]


def test_a_batch_read_by_its_shape_gives_the_same_rows() -> None:
    points = [{"id": 1, "v": 1.5}, {"id": 2, "v": 2.5}, {"id": 1, "v": None}]
    loose = batch([dict(p) for p in points], id=Kind.INTEGER, v=Kind.DOUBLE)
    shaped = batch([(p["id"], p["v"]) for p in points], id=Kind.INTEGER, v=Kind.DOUBLE)
    shaped.columns = ("id", "v")
    a, b = prepare_rows(plan_for(loose), loose), prepare_rows(plan_for(shaped), shaped)
    assert [tuple(r) for r in a.rows] == [tuple(r) for r in b.rows] == [(1, None), (2, 2.5)]
    assert (a.keys, a.point_keys) == (b.keys, b.point_keys)


def test_changes_are_counted_per_point_against_stored_keys() -> None:
    assert count_changes([1, 2, 1], set()) == (2, 1)
    assert count_changes([1, 2, 1], {1}) == (1, 2)
    assert count_changes([], {1}) == (0, 0)


POINTS = st.lists(
    st.fixed_dictionaries(
        {"id": st.integers(0, 5)}, optional={"v": st.integers(0, 9), "w": st.text(max_size=2)}
    ),
    min_size=1,
    max_size=30,
)


@settings(deadline=None)
@given(POINTS, st.sets(st.integers(0, 5)))
def test_one_row_per_key_the_last_winning_and_every_point_counted(
    points: list[dict[str, Any]], stored: set[int]
) -> None:
    b = batch([dict(p) for p in points], id=Kind.INTEGER, v=Kind.INTEGER, w=Kind.TEXT)
    rows = prepare_rows(plan_for(b), b)
    last = {p["id"]: p for p in points}  # a dict keeps each key where it first came
    assert rows.keys == list(last)
    assert [tuple(r) for r in rows.rows] == [(k, p.get("v"), p.get("w")) for k, p in last.items()]
    inserted, replaced = count_changes(rows.point_keys, stored)
    assert inserted == len(last.keys() - stored) and inserted + replaced == len(points)
