"""The contract, section 3: upsert.

Body shapes, ``keys``, all-or-nothing, replace and last-wins semantics, table names, column
types and widening, field names, and the limits. Every refusal also checks that nothing in
the warehouse changed (``snapshot``: SQL objects with their DDL, schema and rows).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import DECLARED, STORED, backend_of, value_types
from tests.backends import declared_types as backend_declared_types
from tests.helpers import (
    EXAMPLE_1,
    EXAMPLE_2,
    Api,
    envelope,
    error_reasons,
    key_fields,
    kinds,
    limited_api,
    pushed,
    snapshot,
    user_tables,
)

# A test marked backends("sqlite") is refused by validation (or by reading the body), which
# happens before the warehouse is touched: one backend proves it. What depends on a stored
# table (its schema, widening, counts, all-or-nothing on it) runs on every backend.


def point(id_: Any = 1, **fields: Any) -> dict[str, Any]:
    return {"keys": ["id"], "id": id_, **fields}


def refused(api: Api, data: Any, table: str = "orders", **kw: Any) -> list[str]:
    """Push something the contract refuses: 400, and the warehouse is exactly as before."""
    before = snapshot(api)
    reasons = error_reasons(api.push(data, table=table, **kw), 400)
    assert snapshot(api) == before
    return reasons


def typeof(api: Api, column: str, table: str = "orders") -> list[str]:
    """The storage type of each value of a column, in key order (SQLite: ``typeof``)."""
    return value_types(api.storage, api.client_id, table, column, '"id"')


def declared_types(api: Api, table: str = "orders") -> dict[str, str]:
    """The SQL type each column is declared with."""
    return backend_declared_types(api.storage, api.client_id, table)


# -- body --------------------------------------------------------------------------------


def test_single_object_body_is_one_data_point(api: Api) -> None:
    """The seed's Example 1: one JSON object is one data point, stored as one row."""
    body = pushed(api.push(EXAMPLE_1))
    assert body["inserted"] == 1 and body["replaced"] == 0
    assert api.rows() == [{k: v for k, v in EXAMPLE_1.items() if k != "keys"}]


def test_array_body_is_one_data_point_each(api: Api) -> None:
    """An array body stores each of its data points."""
    body = pushed(api.push([point(n, v=f"v{n}") for n in range(1, 6)]))
    assert body["inserted"] == 5
    assert [(r["id"], r["v"]) for r in api.rows(order="id")] == [(n, f"v{n}") for n in range(1, 6)]


@pytest.mark.parametrize("count", [1, 100])
def test_array_holds_1_to_100_data_points(api: Api, count: int) -> None:
    """An array of 1 to 100 data points is taken, each stored."""
    assert pushed(api.push([point(n) for n in range(count)]))["inserted"] == count
    assert len(api.rows()) == count


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("count", [101, 1000])
def test_more_than_100_data_points_are_refused(api: Api, count: int) -> None:
    """101 data points or more is a 400 that stores nothing."""
    refused(api, [point(n) for n in range(count)])
    assert user_tables(api) == []


@pytest.mark.backends("sqlite")
def test_empty_array_is_refused(api: Api) -> None:
    """An empty array is a 400: a request carries 1 to 100 data points."""
    refused(api, [])
    assert user_tables(api) == []


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "data",
    [5, "text", None, True, [5], [None], [[point()]], [point(), "x"]],
    ids=["int", "str", "null", "bool", "[int]", "[null]", "[[obj]]", "[obj,str]"],
)
def test_data_points_must_be_objects(api: Api, data: Any) -> None:
    """A body that is not an object or an array of objects is a 400 and stores nothing."""
    refused(api, data)
    assert user_tables(api) == []


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \n",
        b"{",
        b"{'keys': ['id'], 'id': 1}",
        b'{"keys": ["id"], "id": 1,}',
        b'{"keys": ["id"], "id": NaN}',
        b'{"keys": ["id"], "id": 1} trailing',
        b"\xff\xfe",
        b'{"keys": ["id"], "id": Infinity}',
    ],
    ids=[
        "empty",
        "blank",
        "truncated",
        "single-quotes",
        "trailing-comma",
        "nan",
        "trailing-garbage",
        "not-utf8",
        "infinity",
    ],
)
def test_malformed_or_empty_body_is_400(api: Api, raw: bytes) -> None:
    """A body that is not valid JSON (or is empty) is a 400 and stores nothing."""
    error_reasons(api.http.post(api.url(), content=raw), 400)
    assert user_tables(api) == []


# -- keys --------------------------------------------------------------------------------

BAD_KEYS = {
    "missing": {"id": 1},
    "null": {"keys": None, "id": 1},
    "string": {"keys": "id", "id": 1},
    "object": {"keys": {"id": True}, "id": 1},
    "empty": {"keys": [], "id": 1},
    "non-string": {"keys": [1], "id": 1},
    "nested": {"keys": [["id"]], "id": 1},
    "duplicate": {"keys": ["id", "id"], "id": 1},
    "nine": {"keys": [f"k{n}" for n in range(9)], **{f"k{n}": n for n in range(9)}},
    "field-missing": {"keys": ["id"], "other": 1},
    "field-null": {"keys": ["id"], "id": None},
    "field-object": {"keys": ["id"], "id": {"a": 1}},
    "field-array": {"keys": ["id"], "id": [1]},
    "field-empty-object": {"keys": ["id"], "id": {}},
    "second-field-missing": {"keys": ["id", "sub"], "id": 1},
    "keys-names-itself": {"keys": ["keys"]},
}


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("bad", list(BAD_KEYS))
def test_keys_must_name_present_scalar_fields(api: Api, bad: str) -> None:
    """`keys` must be a non-empty array of at most 8 distinct field names, each present with
    a non-null scalar value; anything else is a 400 naming data point 0, storing nothing."""
    reasons = refused(api, BAD_KEYS[bad])
    assert all(re.search(r"\b0\b", r) for r in reasons), reasons
    assert user_tables(api) == []


@pytest.mark.parametrize(
    "value",
    ["abc", "", 7, -7, 1.5, True, False, 2**70],
    ids=["str", "empty-str", "int", "neg", "float", "true", "false", "bigint"],
)
def test_key_values_may_be_any_non_null_scalar(api: Api, value: Any) -> None:
    """A key field's value may be a string, integer, number or boolean; pushing it again
    replaces the same row."""
    pushed(api.push(point(value, v=1)))
    body = pushed(api.push(point(value, v=2)))
    assert (body["inserted"], body["replaced"]) == (0, 1)
    assert [r["v"] for r in api.rows()] == [2]


def test_eight_key_fields_are_allowed(api: Api) -> None:
    """Up to 8 key fields identify a data point together."""
    names = [f"k{n}" for n in range(8)]
    first = {"keys": names, **dict.fromkeys(names, 1), "v": "a"}
    pushed(api.push([first, {**first, "k7": 2, "v": "b"}]))
    assert key_fields(api) == names
    assert sorted(r["v"] for r in api.rows()) == ["a", "b"]


def test_keys_is_not_stored_as_a_column(api: Api) -> None:
    """`keys` names the key fields; it is not itself a column."""
    pushed(api.push(EXAMPLE_1))
    assert "keys" not in kinds(api)
    assert "keys" not in declared_types(api)
    assert key_fields(api) == ["id"]


@pytest.mark.backends("sqlite")
def test_one_reason_per_problem_naming_the_data_point(api: Api) -> None:
    """All data points are checked: one reason per problem, each naming its data point's
    index counted from 0; the good data points are not stored either."""
    data = [
        point(1),
        {"id": 2},  # 1: no keys
        point(3),
        point(None),  # 3: key value null
        {"keys": ["a", "b"], "c": 1},  # 4: two missing key fields
    ]
    reasons = refused(api, data)
    assert len(reasons) == 4, reasons
    assert re.search(r"\b1\b", reasons[0]) and "keys" in reasons[0]
    assert re.search(r"\b3\b", reasons[1])
    assert re.search(r"\b4\b", reasons[2]) and "'a'" in reasons[2]
    assert re.search(r"\b4\b", reasons[3]) and "'b'" in reasons[3]
    assert user_tables(api) == []


@pytest.mark.backends("sqlite")
def test_all_or_nothing_on_a_new_table(api: Api) -> None:
    """A bad data point at index 2 of 3: nothing is stored, no table and no column created."""
    reasons = refused(api, [point(1, a="x"), point(2, b=1.5), {"keys": ["id"], "id": None, "c": 1}])
    assert len(reasons) == 1 and re.search(r"\b2\b", reasons[0])
    assert user_tables(api) == []
    assert api.storage.warehouse.tables(api.client_id) == []


def test_all_or_nothing_on_an_existing_table(api: Api) -> None:
    """A refused request changes no row, adds no column and widens none, even though its
    earlier data points would have."""
    pushed(api.push([point(1, a=1, s="one"), point(2, a=2, s="two")]))
    reasons = refused(
        api,
        [
            point(1, a=1.5, new="col"),  # would widen a and add a column
            point(3, a=3),  # would insert a row
            {"keys": ["id"], "a": 4},  # 2: no key value
        ],
    )
    assert len(reasons) == 1 and re.search(r"\b2\b", reasons[0])
    assert kinds(api) == {"id": "integer", "a": "integer", "s": "text"}


def test_all_or_nothing_when_the_schema_refuses(api: Api) -> None:
    """A refusal found against the table's schema (a name differing only in case from a
    column) also stores nothing, and names the data point."""
    pushed(api.push(point(1, name="a")))
    reasons = refused(api, [point(1, name="b", extra=1), point(2), point(3, NAME="c")])
    assert len(reasons) == 1 and re.search(r"\b2\b", reasons[0])


# -- semantics ---------------------------------------------------------------------------


def test_replace_makes_absent_fields_null(api: Api) -> None:
    """A data point whose key matches a stored one replaces it: absent fields become null."""
    pushed(api.push(point(1, a="x", b="y", c=3)))
    pushed(api.push(point(2, a="other", b="kept", c=4)))
    body = pushed(api.push(point(1, a="z")))
    assert (body["inserted"], body["replaced"]) == (0, 1)
    assert api.rows(order="id") == [
        {"id": 1, "a": "z", "b": None, "c": None},
        {"id": 2, "a": "other", "b": "kept", "c": 4},
    ]


def test_later_data_point_wins_within_a_request(api: Api) -> None:
    """The seed's Example 2 leaves id 1 `complete`; counts are per data point, in order."""
    body = pushed(api.push(EXAMPLE_2))
    assert (body["inserted"], body["replaced"]) == (2, 1)
    rows = {r["id"]: r for r in api.rows()}
    assert rows[1]["status"] == "complete" and rows[1]["created_at"] == "2012-08-05 04:51:02"
    assert rows[2]["status"] == "pending"
    assert len(rows) == 2


def test_later_data_point_wins_its_absent_fields_too(api: Api) -> None:
    """Within a request the last data point for a key is the whole row: fields only an earlier
    data point had are null."""
    body = pushed(api.push([point(1, a="first", b="only-first"), point(1, a="second")]))
    assert (body["inserted"], body["replaced"]) == (1, 1)
    assert api.rows() == [{"id": 1, "a": "second", "b": None}]


def test_counts_against_stored_rows(api: Api) -> None:
    """inserted/replaced count data points against what is already stored."""
    pushed(api.push(EXAMPLE_1))
    body = pushed(api.push(EXAMPLE_2))
    assert (body["inserted"], body["replaced"]) == (1, 2)


def test_key_fields_are_fixed_by_the_first_push(api: Api) -> None:
    """A push naming other key fields is a 400 that says which key fields the table has."""
    pushed(api.push({"keys": ["order_id"], "order_id": 1, "email": "a@b.c"}))
    for keys in (["email"], ["order_id", "email"]):
        reasons = refused(api, {"keys": keys, "order_id": 1, "email": "a@b.c"})
        assert any("order_id" in r and "orders" in r for r in reasons), reasons
    assert key_fields(api) == ["order_id"]


@pytest.mark.backends("sqlite")
def test_key_fields_differing_within_a_request_are_refused(api: Api) -> None:
    """All data points of a request name the same key fields, or it is a 400 naming the odd one."""
    reasons = refused(api, [point(1, email="a"), {"keys": ["email"], "id": 2, "email": "b"}])
    assert len(reasons) == 1 and re.search(r"\b1\b", reasons[0])
    assert user_tables(api) == []


def test_key_field_order_does_not_matter(api: Api) -> None:
    """["a", "b"] and ["b", "a"] are the same key fields, across and within requests."""
    pushed(api.push({"keys": ["a", "b"], "a": 1, "b": 2, "v": "first"}))
    body = pushed(
        api.push(
            [
                {"keys": ["b", "a"], "a": 1, "b": 2, "v": "second"},
                {"keys": ["a", "b"], "a": 2, "b": 1, "v": "other"},
            ]
        )
    )
    assert (body["inserted"], body["replaced"]) == (1, 1)
    assert sorted((r["a"], r["b"], r["v"]) for r in api.rows()) == [(1, 2, "second"), (2, 1, "other")]


def test_composite_key_needs_all_its_values_to_match(api: Api) -> None:
    """With several key fields, a data point replaces only the row matching all of them."""
    ab = {"keys": ["a", "b"]}
    pushed(api.push([{**ab, "a": 1, "b": 1, "v": 1}, {**ab, "a": 1, "b": 2, "v": 2}]))
    body = pushed(api.push({"keys": ["a", "b"], "a": 1, "b": 2, "v": 3}))
    assert (body["inserted"], body["replaced"]) == (0, 1)
    assert sorted((r["a"], r["b"], r["v"]) for r in api.rows()) == [(1, 1, 1), (1, 2, 3)]


# -- table names -------------------------------------------------------------------------


def test_table_names_match_ignoring_case_and_are_stored_lower_case(api: Api) -> None:
    """Orders, ORDERS and orders are one table, stored as `orders`."""
    assert pushed(api.push(point(1), table="Orders"))["table"] == "orders"
    pushed(api.push(point(2), table="ORDERS"))
    body = pushed(api.push(point(1, v="x"), table="orders"))
    assert (body["inserted"], body["replaced"]) == (0, 1)
    assert user_tables(api) == ["orders"]
    assert [t.schema.name for t in api.storage.warehouse.tables(api.client_id)] == ["orders"]
    assert len(api.rows()) == 2


@pytest.mark.parametrize("name", ["a", "A_1", "_x", "9", "x" * 63, "select", "table"])
def test_good_table_names_are_taken(api: Api, name: str) -> None:
    """Letters, digits and underscores, 1 to 63 characters, SQL words included."""
    pushed(api.push(EXAMPLE_1, table=name))
    assert user_tables(api) == [name.lower()]


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "name",
    [
        "a-b",
        "a.b",
        "a%20b",
        "caf%C3%A9",
        "x" * 64,
        "a%22b",
        "a;b",
        "%00",
        "",
        "sqlite_x",
        "SQLite_master",
        "_importapi_x",
        "_importapi_tables",
    ],
)
def test_bad_table_names_are_400(api: Api, name: str) -> None:
    """Anything but [A-Za-z0-9_]{1,63}, or a name the system keeps for itself, is a 400 and
    creates nothing."""
    error_reasons(api.push(EXAMPLE_1, table=name), 400)
    assert user_tables(api) == []
    assert api.storage.warehouse.tables(api.client_id) == []


# -- column types ------------------------------------------------------------------------


def test_column_types_come_from_the_values(api: Api) -> None:
    """string -> text, integer -> integer, number -> double, boolean -> boolean, object or
    array -> json: as the storage records them, as declared in SQL, and as stored."""
    pushed(api.push(point(1, s="x", i=5, d=1.5, d2=2.0, b=True, o={"k": [1, None]}, a=[1, "x"])))
    assert kinds(api) == {
        "id": "integer",
        "s": "text",
        "i": "integer",
        "d": "double",
        "d2": "double",
        "b": "boolean",
        "o": "json",
        "a": "json",
    }
    # SQLite declares INTEGER, TEXT, REAL, BOOLEAN, TEXT; PostgreSQL bigint, text, double
    # precision, boolean, jsonb (tests/backends.py: DECLARED and STORED)
    backend = backend_of(api.storage)
    assert declared_types(api) == {c: DECLARED[backend][k] for c, k in kinds(api).items()}
    for column, kind in kinds(api).items():
        assert typeof(api, column) == [STORED[backend][kind]], column
    (row,) = api.rows()
    assert (row["s"], row["i"], row["d"], row["d2"], row["b"]) == ("x", 5, 1.5, 2.0, 1)
    assert json.loads(row["o"]) == {"k": [1, None]} and json.loads(row["a"]) == [1, "x"]


WIDENINGS = [
    # first value, later value, kind after, first value as stored after, later value as stored
    (True, 5, "integer", 1, 5),
    (False, 5, "integer", 0, 5),
    (3, 1.5, "double", 3.0, 1.5),
    (True, 2.5, "double", 1.0, 2.5),
    (1.5, "abc", "text", "1.5", "abc"),
    (0.1, "abc", "text", "0.1", "abc"),
    (1e300, "abc", "text", "1e+300", "abc"),
    (True, "abc", "text", "true", "abc"),
    (False, "abc", "text", "false", "abc"),
    (3, "abc", "text", "3", "abc"),
    (-42, "abc", "text", "-42", "abc"),
    # a narrower value in a wider column: no widening, the value converted
    ("abc", 5, "text", "abc", "5"),
    ("abc", 1.5, "text", "abc", "1.5"),
    ("abc", True, "text", "abc", "true"),
    (1.5, 2, "double", 1.5, 2.0),
    (5, True, "integer", 5, 1),
]


@pytest.mark.parametrize(("first", "later", "kind", "first_after", "later_after"), WIDENINGS)
def test_columns_widen_and_stored_values_keep_their_meaning(
    api: Api, first: Any, later: Any, kind: str, first_after: Any, later_after: Any
) -> None:
    """boolean < integer < double < text: a value that does not fit widens the column, and
    values already stored are converted so that they mean what was pushed."""
    pushed(api.push(point(1, v=first, other="kept")))
    pushed(api.push(point(2, v=later)))
    assert kinds(api)["v"] == kind
    rows = api.rows(order="id")
    assert [r["v"] for r in rows] == [first_after, later_after]
    assert [type(r["v"]) for r in rows] == [type(first_after), type(later_after)]
    assert rows[0]["other"] == "kept"
    storage_class = STORED[backend_of(api.storage)][kind]
    assert typeof(api, "v") == [storage_class, storage_class]


@pytest.mark.parametrize(
    ("first", "later"),
    [
        ({"a": 1}, 5),
        ({"a": 1}, "s"),
        ({"a": 1}, True),
        ({"a": 1}, 1.5),
        ({"a": 1}, [1, 2]),
        ("abc", [1]),
        (3, {"a": 1}),
        (1.5, {"a": 1}),
        (True, {}),
        (2**70, [2**70]),
        ([1], None),
    ],
)
def test_a_json_column_takes_any_value_as_json(api: Api, first: Any, later: Any) -> None:
    """A JSON column takes any value as JSON; a scalar column that gets an object or array
    becomes JSON, and its stored values become the same values written as JSON."""
    pushed(api.push(point(1, v=first)))
    pushed(api.push(point(2, v=later)))
    assert kinds(api)["v"] == "json"
    rows = api.rows(order="id")
    assert json.loads(rows[0]["v"]) == first
    assert (rows[1]["v"] is None) if later is None else (json.loads(rows[1]["v"]) == later)


def test_widening_within_one_request(api: Api) -> None:
    """Values of several kinds in one request make the column the widest of them."""
    pushed(api.push([point(1, v=True), point(2, v=5), point(3, v=1.5)]))
    assert kinds(api)["v"] == "double"
    assert [r["v"] for r in api.rows(order="id")] == [1.0, 5.0, 1.5]


def test_a_widened_key_column_still_identifies_its_rows(api: Api) -> None:
    """When a key column widens (integer -> text), stored keys keep their meaning: "1" then
    finds the row stored with 1."""
    pushed(api.push([point(1, v="one"), point(2, v="two")]))
    body = pushed(api.push(point("abc", v="abc")))
    assert (body["inserted"], body["replaced"]) == (1, 0)
    assert kinds(api)["id"] == "text"
    body = pushed(api.push(point("1", v="uno")))
    assert (body["inserted"], body["replaced"]) == (0, 1)
    assert sorted((r["id"], r["v"]) for r in api.rows()) == [("1", "uno"), ("2", "two"), ("abc", "abc")]


def test_big_integers_keep_every_digit(api: Api) -> None:
    """Integers beyond 64 bits are stored with every digit (column kind decimal); 64-bit
    integers at the edges stay integers."""
    big, neg = 2**64 + 1, -(2**70) - 3
    pushed(api.push(point(1, big=big, neg=neg, top=2**63 - 1, bottom=-(2**63), nested={"n": 2**80})))
    assert kinds(api) == {
        "id": "integer",
        "big": "decimal",
        "neg": "decimal",
        "top": "integer",
        "bottom": "integer",
        "nested": "json",
    }
    (row,) = api.rows()
    assert row["big"] == str(big) and row["neg"] == str(neg)
    assert row["top"] == 2**63 - 1 and row["bottom"] == -(2**63)
    assert json.loads(row["nested"]) == {"n": 2**80}


def test_an_integer_column_widens_to_decimal_for_a_big_integer(api: Api) -> None:
    """An integer column that gets a 65-bit integer widens, old values keeping their digits;
    the big integer may be a key and finds its row again."""
    pushed(api.push([point(1, n=7), point(2, n=-(2**63))]))
    pushed(api.push(point(3, n=2**64)))
    assert kinds(api)["n"] == "decimal"
    assert [r["n"] for r in api.rows(order="rowid")] == ["7", str(-(2**63)), str(2**64)]
    pushed(api.push({"keys": ["k"], "k": 2**100 + 1, "v": 1}, table="big"))
    body = pushed(api.push({"keys": ["k"], "k": 2**100 + 1, "v": 2}, table="big"))
    assert (body["inserted"], body["replaced"]) == (0, 1)
    assert api.rows("big") == [{"k": str(2**100 + 1), "v": 2}]


def test_no_value_is_dropped_or_truncated(api: Api) -> None:
    """Long strings, unicode, doubles at full precision and extreme magnitudes come back as
    pushed."""
    values = {
        "long": "x" * 200_000,
        "uni": "naïve – 日本 🙂",
        "prec": 0.1 + 0.2,
        "tiny": 5e-324,
        "huge": 1.7976931348623157e308,
        "neg0": -0.0,
    }
    pushed(api.push(point(1, **values)))
    (row,) = api.rows()
    for name, value in values.items():
        assert row[name] == value, name
    pushed(api.push(point(2, prec="text now")))
    assert api.rows(order="id")[0]["prec"] == repr(0.1 + 0.2)


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("value", ["a\x00b", {"k": "\x00"}, ["x", ["\x00"]], {"a\x00": 1}])
def test_text_with_a_nul_character_is_refused_not_cut(api: Api, value: Any) -> None:
    """PostgreSQL cannot store U+0000 in text or JSON, so no backend takes it: a 400 naming
    the data point, rather than a value silently cut at the NUL."""
    reasons = refused(api, [point(1, v="fine"), point(2, v=value)])
    assert reasons == [
        ("data point 1: a string holds the character U+0000 (NUL), which the warehouse cannot store")
    ]


def test_null_never_decides_a_type(api: Api) -> None:
    """A field that has only been null has no column; its first real value decides the type,
    and a later null changes nothing."""
    pushed(api.push([point(1, n=None, s="x"), point(2, n=None)]))
    assert "n" not in kinds(api) and "n" not in declared_types(api)
    pushed(api.push(point(3, n=5)))
    assert kinds(api)["n"] == "integer"
    pushed(api.push(point(4, n=None, s=None)))
    assert kinds(api) == {"id": "integer", "s": "text", "n": "integer"}
    assert [(r["id"], r["n"]) for r in api.rows(order="id")] == [(1, None), (2, None), (3, 5), (4, None)]


# -- field names -------------------------------------------------------------------------

SQL_NAMES = [
    'a"; DROP TABLE orders; --',
    "select",
    "x) values (1",
    '"',
    "'",
    "[a]",
    "a b",
    "`x`",
    "Robert'); DROP TABLE orders;--",
    "excluded",
    "ON",
    "?",
    ":x",
    "$1",
    "🙂",
    "a.b",
]


def test_field_names_that_look_like_sql_are_columns_exactly(api: Api) -> None:
    """Field names are kept as column names exactly, whatever they contain; they cannot
    inject SQL, on the first push, on replace, and as key fields."""
    data = {name: f"value of {name}" for name in SQL_NAMES}
    pushed(api.push(point(1, **data)))
    pushed(api.push(point(1, **data)))  # the replace path (ON CONFLICT ... DO UPDATE)
    pushed(api.push(point(2, **{**data, "select": 5})))  # widening rebuilds the table
    assert set(kinds(api)) == {"id", *SQL_NAMES}
    assert set(declared_types(api)) == {"id", *SQL_NAMES}
    assert user_tables(api) == ["orders"]
    row = api.rows(order="id")[0]
    assert {n: row[n] for n in SQL_NAMES if n != "select"} == {n: v for n, v in data.items() if n != "select"}
    assert row["select"] == "value of select"

    key = SQL_NAMES[0]
    pushed(api.push({"keys": [key, "x) values (1"], key: 1, "x) values (1": "k", "v": 1}, table="t"))
    body = pushed(api.push({"keys": ["x) values (1", key], key: 1, "x) values (1": "k", "v": 2}, table="t"))
    assert (body["inserted"], body["replaced"]) == (0, 1)
    assert key_fields(api, "t") == [key, "x) values (1"]
    assert api.rows("t") == [{key: 1, "x) values (1": "k", "v": 2}]


@pytest.mark.backends("sqlite")
def test_names_differing_only_in_case_are_refused_within_a_request(api: Api) -> None:
    """Two field names equal ignoring case cannot both be columns: 400, in one data point or
    across data points, naming the data point."""
    reasons = refused(api, point(1, Name="a", name="b"))
    assert re.search(r"\b0\b", reasons[0])
    reasons = refused(api, [point(1, Name="a"), point(2, NAME="b")])
    assert len(reasons) == 1 and re.search(r"\b1\b", reasons[0])
    assert user_tables(api) == []


def test_names_differing_only_in_case_from_a_column_are_refused(api: Api) -> None:
    """A field equal ignoring case to an existing column (and not equal to it) is a 400."""
    pushed(api.push(point(1, Email="a@b.c")))
    reasons = refused(api, point(2, email="x@y.z"))
    assert any("Email" in r for r in reasons)
    refused(api, {"keys": ["ID"], "ID": 2})
    assert kinds(api) == {"id": "integer", "Email": "text"}


@pytest.mark.parametrize(
    "name", ["x" * 63, "é" * 31 + "a", "🙂" * 15 + "abc"], ids=["63-ascii", "63-bytes-utf8", "63-bytes-emoji"]
)
def test_field_names_of_up_to_63_bytes_are_kept(api: Api, name: str) -> None:
    """A field name of up to 63 bytes (UTF-8) is a column of exactly that name."""
    pushed(api.push(point(1, **{name: 1})))
    assert name in kinds(api) and name in declared_types(api)


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "name",
    ["x" * 64, "é" * 32, "🙂" * 16, "a\x00b"],
    ids=["64-ascii", "64-bytes-32-chars", "64-bytes-emoji", "nul"],
)
def test_field_names_the_storage_cannot_hold_are_refused(api: Api, name: str) -> None:
    """A field name longer than 63 bytes (UTF-8), or with a NUL, is a 400 storing nothing."""
    refused(api, point(1, **{name: 1}))
    assert user_tables(api) == []


def test_column_limit_counts_key_columns(tmp_path: Path) -> None:
    """A table has at most max_columns columns, key columns included, `keys` and null-only
    fields not counted; the push that would exceed it is a 400 that changes nothing."""
    with limited_api(tmp_path / "w", max_columns=5) as api:
        refused(api, point(1, a=1, b=2, c=3, d=4, e=5))
        assert user_tables(api) == []
        pushed(api.push(point(1, a=1, b=2, c=3, d=4, e=None)))
        assert len(kinds(api)) == 5
        reasons = refused(api, point(2, f=1))
        assert any("5" in r for r in reasons)
        pushed(api.push(point(2, a="widening is not a new column", e=None)))
        assert len(kinds(api)) == 5


# -- limits ------------------------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid one-point JSON body of exactly ``size`` bytes."""
    raw = json.dumps(point(1, v="x")).encode()
    return raw + b" " * (size - len(raw))


@pytest.mark.parametrize(("size", "status"), [(1000, 201), (1001, 413)])
def test_body_size_limit(tmp_path: Path, size: int, status: int) -> None:
    """A body over the limit is a 413 that stores nothing; at the limit it is taken."""
    with limited_api(tmp_path / "w", max_body_bytes=1000) as api:
        r = api.http.post(api.url(), content=padded(size))
        if status == 201:
            pushed(r)
        else:
            error_reasons(r, 413)
            assert user_tables(api) == []


def test_body_size_limit_without_content_length(tmp_path: Path) -> None:
    """A streamed (chunked) body is counted as it arrives: past the limit it is a 413."""

    async def chunks() -> AsyncIterator[bytes]:
        body = padded(1500)
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    with limited_api(tmp_path / "w", max_body_bytes=1000) as api:
        r = api.http.post(api.url(), content=chunks())
        assert "content-length" not in r.request.headers
        error_reasons(r, 413)
        assert user_tables(api) == []


@pytest.mark.backends("sqlite")
def test_default_body_limit_is_5_mib(api: Api) -> None:
    """The default limit is 5 MiB after decompression."""
    limit = 5 * 1024 * 1024
    pushed(api.http.post(api.url(), content=padded(limit)))
    error_reasons(api.http.post(api.url(), content=padded(limit + 1)), 413)
    error_reasons(
        api.http.post(
            api.url("gz"), content=gzip.compress(padded(limit + 1)), headers={"Content-Encoding": "gzip"}
        ),
        413,
    )
    assert user_tables(api) == ["orders"]


@pytest.mark.parametrize(("size", "status"), [(1000, 201), (1001, 413), (900_000, 413)])
def test_gzip_body_limit_applies_after_decompression(tmp_path: Path, size: int, status: int) -> None:
    """A gzip body is measured inflated: a small download that inflates past the limit is a
    413 (a gzip bomb included), and stores nothing."""
    with limited_api(tmp_path / "w", max_body_bytes=1000) as api:
        compressed = gzip.compress(padded(size))
        assert len(compressed) < 1000
        r = api.http.post(api.url(), content=compressed, headers={"Content-Encoding": "gzip"})
        if status == 201:
            pushed(r)
        else:
            error_reasons(r, 413)
            assert user_tables(api) == []


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "x-gzip"])
def test_gzip_bodies_are_accepted(api: Api, encoding: str) -> None:
    """Content-Encoding: gzip is accepted; the inflated body is the JSON."""
    raw = gzip.compress(json.dumps(EXAMPLE_2).encode())
    body = pushed(api.http.post(api.url(), content=raw, headers={"Content-Encoding": encoding}))
    assert (body["inserted"], body["replaced"]) == (2, 1)
    assert [r["status"] for r in api.rows(order="id")] == ["complete", "pending"]


@pytest.mark.backends("sqlite")
def test_bad_gzip_is_400(api: Api) -> None:
    """A body that says gzip but is not (or is cut short) is a 400 and stores nothing."""
    raw = gzip.compress(json.dumps(EXAMPLE_1).encode())
    for content in (json.dumps(EXAMPLE_1).encode(), raw[: len(raw) // 2]):
        error_reasons(api.http.post(api.url(), content=content, headers={"Content-Encoding": "gzip"}), 400)
    assert user_tables(api) == []


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("encoding", ["br", "deflate", "compress", "zstd", "gzip, br"])
def test_other_encodings_are_415(api: Api, encoding: str) -> None:
    """Any Content-Encoding but gzip is a 415 that stores nothing."""
    raw = json.dumps(EXAMPLE_1).encode()
    r = api.http.post(api.url(), content=raw, headers={"Content-Encoding": encoding})
    error_reasons(r, 415)
    assert user_tables(api) == []


def nested(levels: int, inner: Any = 1, container: str = "object") -> Any:
    for _ in range(levels):
        inner = {"n": inner} if container == "object" else [inner]
    return inner


@pytest.mark.parametrize("container", ["object", "array"])
def test_nesting_depth_32_is_the_limit(api: Api, container: str) -> None:
    """A data point's own object is depth 1: depth 32 is taken, 33 is a 400 storing nothing."""
    deep = nested(31, container=container)  # the data point's object + 31 levels = 32
    pushed(api.push(point(1, deep=deep)))
    assert json.loads(api.rows()[0]["deep"]) == deep
    reasons = refused(api, [point(2), point(3, deep=nested(32, container=container))])
    assert len(reasons) == 1 and re.search(r"\b1\b", reasons[0])


@pytest.mark.backends("sqlite")
def test_nesting_far_beyond_the_limit_is_400(api: Api) -> None:
    """A body nested far too deep to read is still a plain 400, not a server error."""
    for depth in (1_000, 200_000):
        raw = b'{"keys": ["id"], "id": 1, "d": ' + b"[" * depth + b"]" * depth + b"}"
        error_reasons(api.http.post(api.url(), content=raw), 400)
    assert user_tables(api) == []
    envelope(api.http.get("/"), 200)
