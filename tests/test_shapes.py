"""Requests read by their table's known shape (importapi.shapes) are answered and stored
exactly as if read the general way: the shape changes how fast a request is read, nothing
else. Each test pushes the same requests through two apps over one warehouse, one with
shapes and one without, into two tables, and compares every answer and both tables."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from importapi.app import create_app
from importapi.rjmetrics.shapes import Shapes
from importapi.settings import Settings
from importapi.storage import Storage, open_storage
from tests.helpers import Api, InProcessClient

SHAPED, PLAIN = "shaped", "plain"
# Whether a request is read by its shape is decided before the warehouse: the many requests
# that stray from a shape run on SQLite alone; what shaped requests store runs on every backend.


class Pair:
    """Two apps over one storage: ``fast`` keeps shapes, ``plain`` never does."""

    def __init__(self, storage: Storage, client_id: int, key: str) -> None:
        self.storage, self.client_id, self.key = storage, client_id, key
        settings = Settings(access_log=False)
        self.apps = [create_app(settings, storage=storage), create_app(settings, storage=storage)]
        self.apps[1].rjmetrics.shapes = Shapes(limit=0)
        self.fast, self.plain = (InProcessClient(app) for app in self.apps)

    @property
    def shapes(self) -> Shapes:
        return self.apps[0].rjmetrics.shapes

    def url(self, table: str, sandbox: bool = False) -> str:
        prefix = "/sandbox" if sandbox else ""
        return f"{prefix}/v2/client/{self.client_id}/table/{table}/data?apikey={self.key}"

    def push_both(self, body: bytes, sandbox: bool = False) -> tuple[int, Any]:
        """Push the body to both tables; assert both answers are the same; return it."""
        a = self.fast.post(self.url(SHAPED, sandbox), content=body)
        b = self.plain.post(self.url(PLAIN, sandbox), content=body)
        # the same answer but for the table's name
        answer_a = json.loads(a.text.replace(f'"{SHAPED}"', '"T"').replace(f"'{SHAPED}'", "'T'"))
        answer_b = json.loads(b.text.replace(f'"{PLAIN}"', '"T"').replace(f"'{PLAIN}'", "'T'"))
        assert (a.status_code, answer_a) == (b.status_code, answer_b), body
        return a.status_code, answer_a

    def table(self, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        info = [t.as_dict() for t in self.storage.warehouse.tables(self.client_id) if t.schema.name == name]
        if not info:
            return [], {}
        described = {k: v for k, v in info[0].items() if k not in ("table", "last_push_at", "created_at")}
        for column in described.get("columns", []):
            column.pop("widened_at", None)
        columns, rows = self.storage.warehouse.query(self.client_id, f'SELECT * FROM "{name}"')
        found = sorted((dict(zip(columns, r)) for r in rows), key=repr)
        return found, described

    def assert_same_tables(self) -> None:
        assert self.table(SHAPED) == self.table(PLAIN)

    def close(self) -> None:
        self.fast.close()
        self.plain.close()
        for app in self.apps:
            app.close(storage=False)


@contextmanager
def pair_on(storage: Storage) -> Iterator[Pair]:
    client = storage.create_client("shapes")
    _, key = storage.catalog.create_key(client.client_id)
    pair = Pair(storage, client.client_id, key)
    try:
        yield pair
    finally:
        pair.close()


@pytest.fixture
def pair(api: Api) -> Iterator[Pair]:
    with pair_on(api.storage) as p:
        yield p


def body(*points: dict[str, Any]) -> bytes:
    return json.dumps(list(points)).encode()


def point(id: Any = 1, **fields: Any) -> dict[str, Any]:
    return {"keys": ["id"], "id": id, **fields}


FIRST = point(1, amount=1.5, count=2, label="a", flag=True)


def test_a_request_of_a_known_shape_is_read_by_it(pair: Pair) -> None:
    assert pair.push_both(body(FIRST))[0] == 201
    assert pair.shapes.hits == 0
    status, answer = pair.push_both(
        body(
            point(2, amount=2.5, count=3, label="b", flag=False),
            point(1, amount=None, count=4, label="c", flag=None),
            point(2, amount=7.0, count=5, label="d", flag=True),
        )
    )
    assert status == 201 and (answer["inserted"], answer["replaced"]) == (1, 2)
    assert pair.shapes.hits == 1
    rows, _ = pair.table(SHAPED)
    assert {r["id"]: (r["amount"], r["count"], r["label"]) for r in rows} == {
        1: (None, 4, "c"),
        2: (7.0, 5, "d"),
    }
    pair.assert_same_tables()


# Requests that follow FIRST, each unlike its shape in one way: every one is read the
# general way and gets the same answer and the same table as without shapes.
FOLLOWERS = {
    "integer to a double column": [point(2, amount=5, count=1, label="x", flag=True)],
    "integer beyond 2**53 to a double column": [point(2, amount=2**53 + 1, count=1, label="x", flag=True)],
    "integer beyond 64 bits": [point(2, amount=1.0, count=2**64, label="x", flag=True)],
    "float beyond 2**53": [point(2, amount=1e300, count=1, label="x", flag=True)],
    "float to an integer column": [point(2, amount=1.0, count=3.5, label="x", flag=True)],
    "boolean to an integer column": [point(2, amount=1.0, count=True, label="x", flag=True)],
    "integer to a boolean column": [point(2, amount=1.0, count=1, label="x", flag=1)],
    "number to a text column": [point(2, amount=1.0, count=1, label=12, flag=True)],
    "object to a text column": [point(2, amount=1.0, count=1, label={"a": 1}, flag=True)],
    "null key": [point(None, amount=1.0, count=1, label="x", flag=True)],
    "text key to an integer key column": [point("2", amount=1.0, count=1, label="x", flag=True)],
    "other keys": [{"keys": ["label"], "id": 2, "amount": 1.0, "count": 1, "label": "x", "flag": True}],
    "no keys": [{"id": 2, "amount": 1.0, "count": 1, "label": "x", "flag": True}],
    "a field missing": [point(2, amount=1.0, count=1, label="x")],
    "a new field": [point(2, amount=1.0, count=1, label="x", flag=True, extra="new")],
    "a field in other case": [point(2, Amount=1.0, count=1, label="x", flag=True)],
    "text with NUL": [point(2, amount=1.0, count=1, label="a\x00b", flag=True)],
    "too many data points": [point(n, amount=1.0, count=1, label="x", flag=True) for n in range(101)],
    "a data point that is not an object": [point(2, amount=1.0, count=1, label="x", flag=True), 5],
}


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("name", FOLLOWERS)
def test_a_request_unlike_the_shape_is_answered_as_without_shapes(pair: Pair, name: str) -> None:
    pair.push_both(body(FIRST))
    pair.push_both(body(*FOLLOWERS[name]))
    pair.push_both(body(point(3, amount=3.5, count=3, label="z", flag=False)))  # the shape again
    pair.assert_same_tables()


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "raw",
    [
        # a name given twice, in ways counting alone cannot see
        b'[{"keys":["id"],"id":2,"amount":1.0,"count":1,"label":"x","flag":true,"count":9}]',
        b'[{"keys":["id"],"id":2,"amount":1.0,"count":1,"label":"x","flag":true,"flag" : false}]',
        b'[{"keys":["id"],"id":2,"amount":1.0,"count":1,"label":"a\\":b","flag":true,"id":3}]',
        b'[{"keys":["id"],"id":2,"amount":1.0,"count":1,"label":"x","flag":true,"label":null}]',
        b'[{"keys":["id"],"id":2,"amount":1.0,"count":1,"label":null,"flag":true,"label":"x"}]',
        b'[{"keys":["id"],"id":2,"amount":1.0,"count":1,"label":"x","flag":true,"keys":["id"]}]',
        b'[{"keys":[],"id":2,"amount":1.0,"count":1,"label":"x","flag":true,"keys":["id"]}]',
        (
            b'[{"keys":["id"],"id":2,"amount":1.0,"count":1,"label":"x","flag":true},'
            b'{"keys":["id"],"id":3,"amount":1.0,"count":1,"label":"y","flag":true,"amount":2.0}]'
        ),
        # white space and colons in places that are not pairs
        b'[ { "keys" : [ "id" ] , "id" : 2 , "amount" : 1.0 , "count" : 1 , "label" : "12:30" , "flag" : true } ]',
        b'[{"keys":["id"],"id":2,"amount":1.0,"count":1,"label":"say \\" : this","flag":true}]',
        b'[{"keys":["id"],"id":2,"amount":1.0,"count":1,"label":"\\u00e9\\":","flag":true}]',
        b'{"keys":["id"],"id":2,"amount":1.0,"count":1,"label":"one object","flag":true}',
        b'[{"keys":["id"],"id":2,"amount":1.0,"count":1,"label":"x","flag":true}',
        b"[]",
    ],
)
def test_raw_bodies_are_answered_as_without_shapes(pair: Pair, raw: bytes) -> None:
    pair.push_both(body(FIRST))
    pair.push_both(raw)
    pair.assert_same_tables()


def test_a_shape_outlived_by_its_table_still_stores_what_the_columns_hold(pair: Pair) -> None:
    """Another push widens the columns the shape was made for: requests of the old shape
    are still stored as the widened columns hold them."""
    pair.push_both(body(FIRST))
    pair.push_both(body(point(2, amount=1.0, count=1, label="x", flag=True)))
    hits = pair.shapes.hits
    # widen each column, in both tables, by a push the fast app never learns from (sandbox
    # pushes teach nothing; this one goes through the plain app to both tables)
    widen = body(point(3, amount="text", count=2**64, label="x", flag=2.5))
    for table in (SHAPED, PLAIN):
        assert pair.plain.post(pair.url(table), content=widen).status_code == 201
    pair.push_both(body(point(4, amount=4.25, count=7, label="y", flag=False)))
    assert pair.shapes.hits == hits + 1  # read by the old shape...
    pair.assert_same_tables()  # ...and stored as the widened columns hold values


def test_the_sandbox_plans_the_same_and_teaches_nothing(pair: Pair) -> None:
    pair.push_both(body(FIRST), sandbox=True)
    pair.push_both(body(FIRST), sandbox=True)
    assert pair.shapes.hits == 0
    pair.push_both(body(FIRST))
    status, answer = pair.push_both(
        body(
            point(1, amount=None, count=1, label="x", flag=True),
            point(9, amount=1.0, count=1, label="x", flag=True),
        ),
        sandbox=True,
    )
    assert status == 201 and (answer["inserted"], answer["replaced"]) == (1, 1)
    assert pair.shapes.hits == 1
    pair.assert_same_tables()


def test_a_composite_key_shape(pair: Pair) -> None:
    def p(a: int, b: str, v: float) -> dict[str, Any]:
        return {"keys": ["a", "b"], "a": a, "b": b, "v": v}

    pair.push_both(body(p(1, "x", 1.0)))
    pair.push_both(body(p(1, "x", 2.0), p(1, "y", 3.0), p(1, "x", 4.0)))
    pair.push_both(body({"keys": ["b", "a"], "a": 2, "b": "x", "v": 5.0}))  # keys in another order
    assert pair.shapes.hits == 1
    pair.assert_same_tables()


# -- the same, for any requests ----------------------------------------------------------

TEMPLATE = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.sampled_from(["integer", "double", "boolean", "text"]),
    min_size=1,
)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=6) | st.sampled_from(
    ['":', '\\":', "12:30", " : ", '"']
)
CONFORMING = {
    "integer": st.integers(-(2**53), 2**53),
    "double": st.floats(allow_nan=False, allow_infinity=False, min_value=-1e17, max_value=1e17),
    "boolean": st.booleans(),
    "text": TEXT,
}
WILD = (
    st.none()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | TEXT
    | st.just({"x": [1]})
)


@st.composite
def requests(draw: st.DrawFn) -> list[bytes]:
    template = draw(TEMPLATE)

    out = []
    for _ in range(draw(st.integers(1, 6))):
        # most requests keep to the template; the others stray from it anywhere
        strays = draw(st.sampled_from([False, False, False, True]))
        points = []
        for _ in range(draw(st.integers(1, 4))):
            p: dict[str, Any] = {
                "keys": ["id"],
                "id": draw(st.integers(0, 4) | WILD) if strays else draw(st.integers(0, 4)),
            }
            for name, kind in template.items():
                if not strays:
                    p[name] = draw(CONFORMING[kind] | st.none())
                elif draw(st.integers(0, 3)):  # now and then a field is left out
                    p[name] = draw(CONFORMING[kind] | WILD)
            points.append(p)
        style = draw(
            st.sampled_from(["compact", "spaced", "space before colon", "twice"])
            if strays
            else st.sampled_from(["compact", "compact", "compact", "compact", "twice"])
        )
        if style == "twice":  # a name given twice in the last data point
            name, kind = draw(st.sampled_from(sorted(template.items())))
            again = draw(WILD) if strays else draw(CONFORMING[kind] | st.none())
            text = json.dumps(points, separators=(",", ":"))
            text = text[:-2] + f",{json.dumps(name)}:" + json.dumps(again) + "}]"
        else:
            separators = {"compact": (",", ":"), "spaced": (", ", ": "), "space before colon": (",", " : ")}
            text = json.dumps(points, separators=separators[style], ensure_ascii=draw(st.booleans()))
        out.append(text.encode())
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_any_requests_are_answered_and_stored_as_without_shapes(bodies: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder, open_storage(folder) as storage, pair_on(storage) as p:
        for b in bodies:
            p.push_both(b)
        p.assert_same_tables()
        event("some request read by a shape" if p.shapes.hits else "no request read by a shape")
