"""Nested records in Stitch's warehouse shape, on both backends: objects flattened into
``parent__child`` columns, arrays as subtables tied to their parent row (source keys, level
ids, ``value`` for scalars), replaced with it, dropped with it; long names shortened and
recorded, collisions refused. And a property: any nested record reads back whole, and
upserting another record with the same key leaves exactly the new one's rows."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Api, make_api

SEQ = 1_796_113_870_373_400_000
ORDERS = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "customer": {
            "type": ["null", "object"],
            "properties": {
                "name": {"type": ["null", "string"]},
                "address": {"type": ["null", "object"], "properties": {"city": {"type": ["null", "string"]}}},
                "since": {"type": ["null", "string"], "format": "date-time"},
            },
        },
        "line_items": {
            "type": ["null", "array"],
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": ["null", "string"]},
                    "price": {"type": ["null", "number"], "multipleOf": 0.01},
                    "tags": {"type": ["null", "array"], "items": {"type": "string"}},
                },
            },
        },
        "labels": {"type": ["null", "array"], "items": {"type": ["null", "string"]}},
    },
}


def order(i: int, items: list[dict[str, Any]] | None = None, **more: Any) -> dict[str, Any]:
    return {
        "id": i,
        "customer": {"name": f"c{i}", "address": {"city": "Berlin"}, "since": "2020-01-01T00:00:00Z"},
        "line_items": items
        if items is not None
        else [{"sku": "A", "price": 1.5, "tags": ["x", "y"]}, {"sku": "B", "price": 2, "tags": []}],
        "labels": ["new", None],
        **more,
    }


def batch_body(
    messages: list[dict[str, Any]],
    *,
    table: str = "orders",
    keys: list[str] | None = None,
    schema: dict[str, Any] = ORDERS,
    version: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "table_name": table,
        "schema": schema,
        "key_names": ["id"] if keys is None else keys,
        "messages": messages,
    }
    if version is not None:
        body["table_version"] = version
    return body


def upsert(seq: int, data: dict[str, Any]) -> dict[str, Any]:
    return {"action": "upsert", "sequence": seq, "data": data}


def send(api: Api, body: Any, route: str = "batch", sandbox: bool = False) -> dict[str, Any]:
    prefix = "/sandbox" if sandbox else ""
    r = api.http.post(
        f"{prefix}/v2/import/{route}",
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"},
    )
    answer: dict[str, Any] = r.json()
    answer["_status"] = r.status_code
    return answer


def tables(api: Api) -> dict[str, Any]:
    return {t.schema.name: t for t in api.storage.warehouse.tables(api.client_id)}


def rows(api: Api, table: str) -> list[dict[str, Any]]:
    if table not in tables(api):
        return []
    columns, found = api.storage.warehouse.read_rows(api.client_id, table)
    return [dict(zip(columns, r)) for r in found]


def test_objects_are_flattened_into_columns_typed_by_the_schema(api: Api) -> None:
    assert send(api, batch_body([upsert(SEQ, order(1))]))["_status"] == 201
    info = tables(api)["orders"]
    kinds = {c.name: c.kind.label for c in info.schema.columns.values()}
    assert kinds["customer__name"] == "text" and kinds["customer__address__city"] == "text"
    assert kinds["customer__since"] == "timestamp" and "customer" not in kinds and "line_items" not in kinds
    (row,) = rows(api, "orders")
    assert row["customer__address__city"] == "Berlin"


def test_arrays_are_subtables_tied_to_their_parent(api: Api) -> None:
    send(api, batch_body([upsert(SEQ, order(1)), upsert(SEQ + 1, order(2, items=[]))]))
    known = tables(api)
    assert known["orders__line_items"].schema.parent == "orders"
    assert known["orders__line_items__tags"].schema.parent == "orders"
    items = rows(api, "orders__line_items")
    assert [(r["_sdc_source_key_id"], r["_sdc_level_0_id"], r["sku"], r["price"]) for r in items] == [
        (1, 0, "A", 1.5),
        (1, 1, "B", 2),
    ]
    tags = rows(api, "orders__line_items__tags")
    assert [
        (r["_sdc_source_key_id"], r["_sdc_level_0_id"], r["_sdc_level_1_id"], r["value"]) for r in tags
    ] == [(1, 0, 0, "x"), (1, 0, 1, "y")]
    labels = [r for r in rows(api, "orders__labels") if r["_sdc_source_key_id"] == 1]
    assert [(r["_sdc_level_0_id"], r["value"]) for r in labels] == [(0, "new"), (1, None)]
    assert known["orders__line_items"].schema.key_fields == ("_sdc_source_key_id", "_sdc_level_0_id")
    assert {c.kind.label for n, c in known["orders__line_items"].schema.columns.items() if n == "price"} == {
        "decimal"
    }


def test_re_upserting_a_parent_replaces_its_subtable_rows(api: Api) -> None:
    send(api, batch_body([upsert(SEQ, order(1)), upsert(SEQ + 1, order(2))]))
    send(api, batch_body([upsert(SEQ + 2, order(1, items=[{"sku": "C"}], labels=[]))]))
    items = rows(api, "orders__line_items")
    assert [(r["_sdc_source_key_id"], r["sku"]) for r in items] == [(1, "C"), (2, "A"), (2, "B")]
    assert [r["_sdc_source_key_id"] for r in rows(api, "orders__labels")] == [
        2,
        2,
    ]  # an empty array: none left
    assert {r["_sdc_source_key_id"] for r in rows(api, "orders__line_items__tags")} == {2}


def test_a_parent_that_loses_on_sequence_touches_no_subtable(api: Api) -> None:
    send(api, batch_body([upsert(SEQ + 10, order(1))]))
    answer = send(api, batch_body([upsert(SEQ + 5, order(1, items=[{"sku": "OLD"}]))]))
    assert answer["stale"] == 1
    assert [r["sku"] for r in rows(api, "orders__line_items")] == ["A", "B"]
    # within a request too: only the winner's elements
    send(
        api,
        batch_body(
            [
                upsert(SEQ + 30, order(3, items=[{"sku": "won"}])),
                upsert(SEQ + 20, order(3, items=[{"sku": "lost"}, {"sku": "lost"}])),
            ]
        ),
    )
    assert [r["sku"] for r in rows(api, "orders__line_items") if r["_sdc_source_key_id"] == 3] == ["won"]


def test_activating_a_version_drops_the_subtable_rows_of_the_rows_it_deletes(api: Api) -> None:
    activate = {"action": "activate_version", "sequence": SEQ}
    send(api, batch_body([upsert(SEQ + 1, order(1)), upsert(SEQ + 2, order(2)), activate], version=1))
    send(api, batch_body([upsert(SEQ + 3, order(2)), {**activate, "sequence": SEQ + 4}], version=2))
    assert [r["id"] for r in rows(api, "orders")] == [2]
    assert {r["_sdc_source_key_id"] for r in rows(api, "orders__line_items")} == {2}
    assert {r["_sdc_source_key_id"] for r in rows(api, "orders__line_items__tags")} == {2}


def test_append_only_parents_link_their_subtables_by_their_uuid(api: Api) -> None:
    send(api, batch_body([upsert(SEQ, {"id": 1, "labels": ["a", "b"]})], table="events", keys=[]))
    (event,) = rows(api, "events")
    labels = rows(api, "events__labels")
    assert {r["_sdc_source_key___sdc_primary_key"] for r in labels} == {event["__sdc_primary_key"]}


def test_the_push_route_flattens_too(api: Api) -> None:
    record = {
        "client_id": api.client_id,
        "table_name": "shop",
        "sequence": 1,
        "action": "upsert",
        "key_names": ["id"],
        "data": {"id": 1, "owner": {"name": "Finn"}, "tags": [1, 2]},
    }
    assert send(api, [record], route="push")["_status"] == 201
    assert rows(api, "shop")[0]["owner__name"] == "Finn"
    assert [r["value"] for r in rows(api, "shop__tags")] == [1, 2]


def test_names_too_long_are_shortened_the_same_way_and_recorded(api: Api) -> None:
    deep = {"a" * 40: {"b" * 40: 1}}
    send(api, batch_body([upsert(SEQ, {"id": 1, **deep})], schema={"type": "object"}))
    send(api, batch_body([upsert(SEQ + 1, {"id": 2, **deep})], schema={"type": "object"}))
    (column,) = [c for c in tables(api)["orders"].schema.columns.values() if c.name.startswith("aaa")]
    assert len(column.name.encode()) <= 63 and column.path == "a" * 40 + "__" + "b" * 40
    assert [r[column.name] for r in rows(api, "orders")] == [1, 1]  # the second push found the same column
    listed = next(
        t for t in api.storage.warehouse.tables(api.client_id) if t.schema.name == "orders"
    ).as_dict()
    (described,) = [c for c in listed["columns"] if c["name"] == column.name]
    assert described["path"] == column.path  # what importapi tables --json shows


def test_a_field_and_a_path_that_would_make_one_column_are_refused(api: Api) -> None:
    answer = send(
        api, batch_body([upsert(SEQ, {"id": 1, "a__b": 1, "a": {"b": 2}})], schema={"type": "object"})
    )
    assert answer["_status"] == 400 and answer["details"][0]["code"] == "field_name_collision"
    assert tables(api) == {}


def test_two_arrays_that_would_make_one_subtable_are_refused(api: Api) -> None:
    data = {"id": 1, "a__b": [1], "a": {"b": [2]}}
    answer = send(api, batch_body([upsert(SEQ, data)], schema={"type": "object"}))
    assert answer["_status"] == 400 and answer["details"][0]["code"] == "field_name_collision"
    assert "orders__a__b" in answer["details"][0]["message"]
    assert tables(api) == {}


@pytest.mark.parametrize("loses", [False, True], ids=["winner", "loser"])
def test_an_array_element_that_does_not_fit_its_schema_is_refused(api: Api, loses: bool) -> None:
    bad = order(1, items=[{"sku": "A", "price": "not a number"}])
    messages = [upsert(SEQ, bad), upsert(SEQ + 1, order(1))] if loses else [upsert(SEQ, bad)]
    answer = send(api, batch_body(messages))
    assert answer["_status"] == 400, answer
    assert answer["details"][0]["code"] == "record_not_conforming" and answer["details"][0]["point"] == 0
    assert tables(api) == {}


def test_the_sandbox_plans_the_subtables(api: Api) -> None:
    answer = send(api, batch_body([upsert(SEQ, order(1))]), sandbox=True)
    planned = {t["table"]: t["plan"] for t in answer["tables"]}
    assert (
        planned["orders__line_items"]["parent"] == "orders" and planned["orders__line_items"]["create_table"]
    )
    assert {c["name"] for c in planned["orders__line_items"]["add_columns"]} >= {
        "sku",
        "price",
        "_sdc_level_0_id",
    }
    assert tables(api) == {}


# -- the property ----------------------------------------------------------------------------

_keys = itertools.count(1)
ints = st.one_of(st.none(), st.integers(-100, 100))
texts = st.one_of(st.none(), st.text("xyz", max_size=3))
# Each field name has one role, as the fields of a real stream do: ``p`` integers, ``q`` text,
# ``o`` an object, ``l`` an array of objects, ``v`` an array of integers. A column then never
# mixes kinds (it would widen to text), and a name is never an object here and an array
# there (the shape cannot tell which a subtable's path crossed).
objects = st.recursive(
    st.fixed_dictionaries({}, optional={"p": ints, "q": texts}),
    lambda inner: st.fixed_dictionaries(
        {},
        optional={
            "p": ints,
            "q": texts,
            "o": inner,
            "l": st.lists(inner, max_size=2),
            "v": st.lists(st.integers(0, 9), max_size=3),
        },
    ),
    max_leaves=6,
)
records = st.fixed_dictionaries(
    {},
    optional={
        "p": ints,
        "q": texts,
        "o": objects,
        "l": st.lists(objects, max_size=3),
        "v": st.lists(ints, max_size=3),
    },
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def nested_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from tests.backends import warehouse

    with warehouse(request.param, tmp_path_factory.mktemp("nested")) as url:
        yield from make_api(url)


def normal(value: Any) -> Any:
    """A value as the warehouse shape can give it back: nulls, empty objects and empty
    arrays are all 'nothing' (Stitch's shape does not tell them apart)."""
    if isinstance(value, dict):
        kept = {k: normal(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None} or None
    if isinstance(value, list):
        return [normal(v) for v in value] or None
    return value


def unflatten(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, value in row.items():
        if column.startswith(("_sdc_", "__sdc_")) or column == "id":
            continue
        target = out
        *parents, last = column.split("__")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return out


def reassemble(api: Api, table: str, key: int) -> dict[str, Any]:
    """The record of this key, read back from its row and its subtables (shorter names
    first, so an element exists before the arrays inside it are put in it)."""
    known = tables(api)
    (row,) = [r for r in rows(api, table) if r["id"] == key]
    record = unflatten(row)
    for name in sorted(
        (n for n, t in known.items() if t.schema.parent == table), key=lambda n: n.count("__")
    ):
        parts = name[len(table) + 2 :].split("__")
        for r in rows(api, name):
            if r["_sdc_source_key_id"] != key:
                continue
            levels = [r[c] for c in sorted(c for c in r if c.startswith("_sdc_level_"))]
            element = unflatten(r)
            value = element["value"] if set(element) == {"value"} else element
            target, prefix, level = record, table, 0
            for n, part in enumerate(parts):
                prefix += "__" + part
                if prefix not in known:  # an object's field
                    target = target.setdefault(part, {})
                    continue
                array = target.setdefault(part, [])
                while len(array) <= levels[level]:
                    array.append({})
                if n == len(parts) - 1:
                    array[levels[level]] = value
                else:
                    target = array[levels[level]]
                    level += 1
    return record


@given(st.lists(records, min_size=2, max_size=2))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_nested_record_reads_back_and_a_re_upsert_leaves_only_the_new_rows(
    nested_api: Api, pair: list[dict[str, Any]]
) -> None:
    key = next(_keys)  # one table for every example: its subtables are made once
    for seq, data in enumerate(pair, start=1):
        answer = send(
            nested_api,
            batch_body([upsert(seq, {"id": key, **data})], table="nested", schema={"type": "object"}),
        )
        assert answer["_status"] == 201, answer
        assert normal(reassemble(nested_api, "nested", key)) == normal(data)
    for name, info in tables(nested_api).items():  # nothing of the first record is left
        if info.schema.parent == "nested":
            assert all(
                r["_sdc_sequence"] == 2 for r in rows(nested_api, name) if r["_sdc_source_key_id"] == key
            )
