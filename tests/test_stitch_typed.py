"""The batch route's fast way in (``importapi.stitch.typed``) decides how fast a batch is
read, never what is stored: for any batch it takes, the rows are those the general way
(``importapi.stitch.batch``) gives; what it does not take, the general way takes or refuses
with its reasons. No HTTP, no database: the two pushes are compared as the warehouse gets them."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importapi.errors import BadRequest, Code
from importapi.push import Push
from importapi.schema import Plan, Rows, make_plan, prepare_rows
from importapi.settings import Limits
from importapi.stitch import typed
from importapi.stitch.batch import read_batch
from importapi.stitch.records import PRIMARY_KEY

LIMITS = Limits(max_points=20_000, max_body_bytes=20 * 1024 * 1024)
NOW = dt.datetime(2026, 12, 1, 7, 46, 49, 376708, tzinfo=dt.UTC)
SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["null", "string"]},
        "amount": {"type": ["null", "number"], "multipleOf": 0.01},
        "ratio": {"type": ["null", "number"]},
        "at": {"type": ["null", "string"], "format": "date-time"},
        "day": {"type": ["null", "string"], "format": "date"},
        "ok": {"type": ["null", "boolean"]},
    },
}
NESTED = {"type": "object", "properties": {**SCHEMA["properties"], "doc": {"type": ["null", "object"]}}}

times = st.sampled_from(
    [
        "2026-11-30T10:11:12.000000Z",
        "2026-11-30T10:11:12Z",
        "2026-11-30T12:11:12+02:00",
        "2026-11-30 10:11:12",
        "2026-11-30T10:11:12.5+0000",
        "not a time",
        "2026-13-01T00:00:00Z",
    ]
)
values = {
    "name": st.one_of(st.none(), st.text(max_size=5)),
    "amount": st.one_of(
        st.none(), st.integers(-(10**6), 10**6).map(lambda c: f"{c / 100:.2f}"), st.just("12.345")
    ),
    "ratio": st.one_of(
        st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(-5, 5)
    ),
    "at": st.one_of(st.none(), times),
    "day": st.one_of(st.none(), st.sampled_from(["2026-11-30", "1980-02-29", "2026-02-30", "x"])),
    "ok": st.one_of(st.none(), st.booleans(), st.just("yes")),
}
records = st.fixed_dictionaries({"id": st.integers(0, 20)}, optional=values)


def raw_body(
    recs: list[dict[str, Any]],
    *,
    keys: list[str] | None,
    version: int | None,
    activate: bool,
    schema: dict[str, Any] = SCHEMA,
    extracted: str = "same",
) -> bytes:
    """``extracted``: every record's time_extracted the same, each its own ("varying"), or
    every other one missing ("some")."""
    messages: list[str] = []
    for i, rec in enumerate(recs):
        data = ", ".join(
            f'"{k}": {v if k == "amount" and v is not None else json.dumps(v)}' for k, v in rec.items()
        )
        at = "2026-12-01T07:46:49.376708Z" if extracted == "same" else f"2026-12-01T07:46:{i % 60:02d}.5Z"
        time = "" if extracted == "some" and i % 2 else f', "time_extracted": "{at}"'
        messages.append(
            f'{{"action": "upsert", "sequence": {1796113870373400000 + i}, "data": {{{data}}}{time}}}'
        )
    if activate:
        messages.append('{"action": "activate_version", "sequence": 1}')
    head = {"table_name": "orders", "schema": schema, "key_names": keys}
    if version is not None:
        head["table_version"] = version
    return (json.dumps(head)[:-1] + ', "messages": [' + ", ".join(messages) + "]}").encode()


def as_written(plan: Plan, rows: Rows) -> list[dict[str, Any]]:
    """The rows as a writer binds them into the table's columns: each by its name (a null
    where the rows lack it), a constant's value (the stamp's among them) for every row."""
    out = []
    for r in rows.rows:
        held = dict(zip(rows.columns, r))
        out.append({c: rows.constants[c] if c in rows.constants else held.get(c) for c in plan.kinds})
    return out


def stored(push: Push) -> tuple[dict[str, str], list[dict[str, Any]], int | None]:
    """What the warehouse would store for the push's batch (a new table): the column kinds,
    the rows, the version it activates."""
    (batch,) = push.batches
    plan = make_plan(None, batch, LIMITS)
    rows = prepare_rows(plan, batch, "2026-12-01T07:46:50.000000Z")
    table = [{c: v for c, v in r.items() if c != PRIMARY_KEY} for r in as_written(plan, rows)]
    return {c: k.label for c, k in plan.kinds.items()}, sorted(table, key=repr), plan.activate


def both(raw: bytes) -> tuple[Push | None, Push | BadRequest]:
    fast = typed.read(raw, 1, sandbox=False, received=NOW, limits=LIMITS)
    try:
        general: Push | BadRequest = read_batch(raw, 1, sandbox=False, received=NOW, limits=LIMITS)
    except BadRequest as exc:
        general = exc
    return fast, general


@given(
    st.lists(records, min_size=1, max_size=6),
    st.sampled_from([["id"], [], None]),
    st.sampled_from([None, 7]),
    st.booleans(),
    st.sampled_from(["same", "varying", "some"]),
)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_fast_way_stores_what_the_general_way_stores(
    recs: list[dict[str, Any]], keys: list[str] | None, version: int | None, activate: bool, extracted: str
) -> None:
    fast, general = both(raw_body(recs, keys=keys, version=version, activate=activate, extracted=extracted))
    if fast is None:
        return  # read the general way, whatever it answers
    assert isinstance(general, Push), f"the fast way took a batch the general way refuses: {general}"
    assert stored(fast) == stored(general)


def test_batches_of_target_stitchs_shape_take_the_fast_way() -> None:
    recs = [
        {
            "id": i,
            "name": "x",
            "amount": "12.50",
            "ratio": 0.5,
            "at": "2026-11-30T10:11:12.000000Z",
            "day": "2026-11-30",
            "ok": True,
        }
        for i in range(50)
    ]
    fast, general = both(raw_body(recs, keys=["id"], version=3, activate=True))
    assert fast is not None and isinstance(general, Push)
    kinds, rows, activate = stored(fast)
    assert activate == 3 and kinds["amount"] == "decimal" and kinds["at"] == "timestamp"
    assert rows[0]["amount"] == "12.50" and rows[0]["at"] == "2026-11-30T10:11:12.000000Z"


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b.replace(b'"name": "x"', b'"name": "x", "name": "y"', 1),  # a name given twice
        lambda b: b.replace(b'"ok": true', b'"ok": "yes"', 1),  # a value of another type
        lambda b: b.replace(b'"ok": true', b'"extra": 1', 1),  # a field the schema does not name
        lambda b: b.replace(b'"name": "x"', b'"name": "\\u0000"', 1),  # a NUL
    ],
)
def test_what_the_fast_way_does_not_take_goes_the_general_way(change: Any) -> None:
    recs = [{"id": 1, "name": "x", "ok": True}, {"id": 2, "name": "x", "ok": True}]
    fast, general = both(change(raw_body(recs, keys=["id"], version=None, activate=False)))
    assert fast is None
    assert isinstance(general, (BadRequest, Push))


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda b: b.replace(b'"name": "x"', b'"name": "x", "name": "a:b"', 1), Code.NAME_REPEATED),
        (lambda b: b.replace(b'"name": "x"', b'"name": "x", "name": "\\u003a"', 1), Code.NAME_REPEATED),
        (lambda b: b.replace(b'"name": "x"', b'"name": "a\\u0000:"', 1), Code.TEXT_HAS_NUL),
        (lambda b: b.replace(b'"type": "object"', b'"type": "object", "title": "\\u0000"', 1), None),
    ],
    ids=["twice_with_a_colon", "twice_behind_an_escaped_colon", "nul_beside_a_colon", "nul_in_the_schema"],
)
def test_names_given_twice_and_nuls_are_found_among_colons(change: Any, code: Code | None) -> None:
    """Bodies whose strings hold colons (date-times, text) are proved free of repeated names
    by counting colons; a repeat, even behind an escaped colon, or a NUL anywhere sends the
    batch the general way, which refuses a repeated name or a NUL in a record with its code
    (a NUL in the schema's title it may take)."""
    recs = [{"id": i, "name": "x", "at": "2026-11-30T10:11:12.000000Z", "ok": True} for i in range(3)]
    raw = raw_body(recs, keys=["id"], version=None, activate=False)
    fast, _ = both(raw)
    assert fast is not None  # as it is, the fast way takes it
    fast, general = both(change(raw))
    assert fast is None
    if code is not None:
        assert isinstance(general, BadRequest), "the general way took what it must refuse"
        assert general.details[0].code == code, general.details


def test_decimals_stay_exact() -> None:
    raw = raw_body([{"id": 1, "amount": "99999999.99"}], keys=["id"], version=None, activate=False)
    fast, _ = both(raw)
    assert fast is not None and stored(fast)[1][0]["amount"] == "99999999.99"
    assert Decimal(stored(fast)[1][0]["amount"]) == Decimal("99999999.99")


def test_objects_and_arrays_go_the_general_way_which_flattens_them() -> None:
    raw = raw_body([{"id": 1, "doc": {"a": 1}}], keys=["id"], version=None, activate=False, schema=NESTED)
    fast, general = both(raw)
    assert fast is None and isinstance(general, Push)
    assert stored(general)[1][0]["doc__a"] == 1


# -- nested records: objects flattened, arrays as subtables ---------------------------------

# mostly values that fit, now and then one that does not (the fast way must then leave it)
cents = st.one_of(
    st.none(), *[st.integers(-(10**6), 10**6).map(lambda c: c / 100)] * 4, st.integers(-5, 5), st.just(12.345)
)
scalars = {
    "p": st.one_of(st.none(), *[st.integers(-100, 100)] * 6, st.just("x")),
    "q": st.one_of(st.none(), st.text("xy\u00e9", max_size=3)),
    "d": cents,
    "t": st.one_of(
        st.none(),
        *[st.sampled_from(["2026-11-30T10:11:12.000000Z", "2026-11-30T10:11:12+02:00", "2026-11-30T10:11Z"])]
        * 5,
        times,
    ),
}


def nested_schema(depth: int) -> dict[str, Any]:
    """An object of every scalar kind, and at each level above the last an object, an array
    of objects and an array of integers."""
    props: dict[str, Any] = {
        "p": {"type": ["null", "integer"]},
        "q": {"type": ["null", "string"]},
        "d": {"type": ["null", "number"], "multipleOf": 0.01},
        "t": {"type": ["null", "string"], "format": "date-time"},
    }
    if depth:
        inner = nested_schema(depth - 1)
        props["o"] = {"type": ["null", "object"], "properties": inner["properties"]}
        props["l"] = {"type": ["null", "array"], "items": {**inner, "type": ["null", "object"]}}
        props["v"] = {"type": ["null", "array"], "items": {"type": ["null", "integer"]}}
    return {"type": "object", "properties": props}


def nested_values(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, Any] = dict(scalars)
    if depth:
        inner = nested_values(depth - 1)
        optional["o"] = st.one_of(st.none(), inner)
        optional["l"] = st.one_of(st.none(), st.lists(st.one_of(st.none(), inner), max_size=3))
        optional["v"] = st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(0, 9)), max_size=3))
    return st.fixed_dictionaries({}, optional=optional)


NESTED_SCHEMA = nested_schema(2)
NESTED_SCHEMA["properties"]["id"] = {"type": "integer"}


def json_body(
    recs: list[dict[str, Any]], *, keys: list[str] | None, version: int | None, schema: dict[str, Any]
) -> bytes:
    messages = [
        {"action": "upsert", "sequence": 1796113870373400000 + i % 3, "data": rec}
        for i, rec in enumerate(recs)
    ]
    head: dict[str, Any] = {"table_name": "orders", "schema": schema, "key_names": keys, "messages": messages}
    if version is not None:
        head["table_version"] = version
    return json.dumps(head).encode()


def stored_tables(push: Push) -> dict[str, Any]:
    """What the warehouse would store for each of the push's batches (new tables): column
    kinds, rows, parent and its key fields."""
    out = {}
    for batch in push.batches:
        plan = make_plan(None, batch, LIMITS)
        rows = prepare_rows(plan, batch, "2026-12-01T07:46:50.000000Z")
        table = as_written(plan, rows)
        kinds = {c: k.label for c, k in plan.kinds.items()}
        out[batch.table] = (kinds, sorted(table, key=repr), batch.parent, batch.parent_keys, batch.paths)
    return out


@given(
    st.lists(
        st.fixed_dictionaries({"id": st.integers(0, 3)}).flatmap(
            lambda r: nested_values(2).map(lambda v: {**r, **v})
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([["id"], []]),
    st.sampled_from([None, 7]),
)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_nested_records_the_fast_way_store_what_the_general_way_stores(
    recs: list[dict[str, Any]], keys: list[str], version: int | None
) -> None:
    fast, general = both(json_body(recs, keys=keys, version=version, schema=NESTED_SCHEMA))
    if fast is None:
        return  # read the general way, whatever it answers
    assert isinstance(general, Push), f"the fast way took a batch the general way refuses: {general}"
    assert stored_tables(fast) == stored_tables(general)


def test_nested_batches_of_target_stitchs_shape_take_the_fast_way() -> None:
    recs = [
        {
            "id": i,
            "d": 12.5,
            "t": "2026-11-30T10:11:12.000000Z",
            "o": {"q": "x", "o": {"p": 1}},
            "l": [{"p": k, "d": 3, "l": [{"q": "deep"}], "v": [1, None]} for k in range(3)],
            "v": [1, 2],
        }
        for i in range(20)
    ]
    fast, general = both(json_body(recs, keys=["id"], version=None, schema=NESTED_SCHEMA))
    assert fast is not None and isinstance(general, Push)
    tables = stored_tables(fast)
    assert tables == stored_tables(general)
    assert set(tables) == {"orders", "orders__l", "orders__l__l", "orders__l__v", "orders__v"}
    kinds, rows, *_ = tables["orders__l__l"]
    assert kinds["_sdc_source_key_id"] == "integer" and kinds["_sdc_level_1_id"] == "integer"
    assert len(rows) == 60 and rows[0]["q"] == "deep"
    assert tables["orders"][1][0]["o__o__p"] == 1 and tables["orders__l"][1][0]["d"] == "3"


def test_a_streams_next_batch_is_decoded_in_one_pass_and_stored_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A body that begins as an earlier one (a tap's next batch of the stream) is decoded
    by that one's decoder in one pass, its head not read on its own, and gives the push the
    same body read the two-pass way gives."""
    recs = [{"id": i, "name": f"n{i}", "amount": "1.25", "ok": i % 2 == 0} for i in range(5)]
    first = raw_body(recs, keys=["id"], version=None, activate=False, schema={**SCHEMA, "title": "one pass"})
    second = first.replace(b'"n1"', b'"renamed"')
    assert typed.read(first, 1, sandbox=False, received=NOW, limits=LIMITS) is not None
    two_pass = typed.read(second, 1, sandbox=False, received=NOW, limits=LIMITS)  # its prefix known now
    heads: list[bytes] = []
    real = typed._decode_head
    monkeypatch.setattr(typed, "_decode_head", lambda raw: heads.append(raw) or real(raw))
    one_pass = typed.read(second, 1, sandbox=False, received=NOW, limits=LIMITS)
    assert heads == []
    assert one_pass is not None and two_pass is not None
    assert stored(one_pass) == stored(two_pass)
    assert {"id": 1, "name": "renamed"}.items() <= stored(one_pass)[1][1].items()


def test_a_body_beginning_as_another_of_another_schema_is_read_by_its_own() -> None:
    """Two schemas whose texts agree up to a field named ``messages``: the bodies begin
    alike, and the second, which the first's decoder could decode, is still typed by its
    own schema (``x`` a number, not an integer)."""

    def schema(x: str) -> dict[str, Any]:
        return {"type": "object", "properties": {"messages": {"type": "integer"}, "x": {"type": x}}}

    for x, kind in (("integer", "integer"), ("number", "double")):
        raw = raw_body([{"messages": 1, "x": 2}], keys=None, version=None, activate=False, schema=schema(x))
        push = typed.read(raw, 1, sandbox=False, received=NOW, limits=LIMITS)
        assert push is not None
        assert stored(push)[0]["x"] == kind
