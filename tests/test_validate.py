"""Validation without HTTP or a database: ``importapi.rjmetrics.validate``, reading a body
(``importapi.body``) and names (``importapi.names``).

Each kind of refusal carries the ``Code``, data point and field that ``docs/errors.md``
promises, its reason line is the detail's, and a request with many problems lists 50 of
them and says how many more there were. What validation accepts is a ``Batch`` whose kinds
are what the values ask for.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importapi.body import decode_json, encoding_of, gunzip, read_body
from importapi.errors import BadRequest, Code, Detail, ImportApiError, PayloadTooLarge, UnsupportedEncoding
from importapi.kinds import Kind, join, kind_of
from importapi.names import field_name_problem, table_name
from importapi.rjmetrics.validate import MAX_REASONS, validate
from importapi.settings import Limits


def refusal(call: Callable[[], Any]) -> ImportApiError:
    """The refusal ``call`` raises, after checking that its reasons are its details' lines."""
    with pytest.raises(ImportApiError) as caught:
        call()
    exc = caught.value
    assert exc.details and exc.reasons == [d.reason for d in exc.details]
    return exc


def problems(body: Any, *, version: int = 2, limits: Limits | None = None) -> list[tuple[str, Any, Any]]:
    """(code, point, field) of each problem ``validate`` finds in ``body`` (a copy of it:
    validation takes ``keys`` out of the data points it is given)."""
    exc = refusal(lambda: validate(copy.deepcopy(body), "t", version=version, limits=limits))
    assert isinstance(exc, BadRequest) and exc.status == 400
    return [(d.code, d.point, d.field) for d in exc.details]


def point(id_: Any = 1, **fields: Any) -> dict[str, Any]:
    return {"keys": ["id"], "id": id_, **fields}


# -- the body's data points ---------------------------------------------------------------


def test_an_empty_array_and_too_many_points_are_refused_as_a_whole() -> None:
    assert problems([]) == [(Code.POINTS_EMPTY, None, None)]
    assert problems([point(n) for n in range(101)]) == [(Code.POINTS_TOO_MANY, None, None)]
    assert problems([point(n) for n in range(4)], limits=Limits(max_points=3)) == [
        (Code.POINTS_TOO_MANY, None, None)
    ]
    assert len(validate([point(n) for n in range(100)], "t").points) == 100


@pytest.mark.parametrize("bad", [5, "x", None, True, [1], 1.5])
def test_a_data_point_that_is_not_an_object_is_named_by_its_index(bad: Any) -> None:
    assert problems([point(1), bad]) == [(Code.POINT_NOT_OBJECT, 1, None)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"id": 1}, (Code.KEYS_MISSING, 0, None)),
        ({"keys": None, "id": 1}, (Code.KEYS_INVALID, 0, None)),
        ({"keys": "id", "id": 1}, (Code.KEYS_INVALID, 0, None)),
        ({"keys": [], "id": 1}, (Code.KEYS_INVALID, 0, None)),
        ({"keys": [1], "id": 1}, (Code.KEYS_INVALID, 0, None)),
        ({"keys": ["id", "id"], "id": 1}, (Code.KEYS_INVALID, 0, None)),
        ({"keys": ["keys"]}, (Code.KEYS_INVALID, 0, "keys")),
        (
            {"keys": [f"k{n}" for n in range(9)], **{f"k{n}": n for n in range(9)}},
            (Code.KEYS_TOO_MANY, 0, None),
        ),
        ({"keys": ["id"], "other": 1}, (Code.KEY_MISSING, 0, "id")),
        ({"keys": ["id"], "id": None}, (Code.KEY_INVALID, 0, "id")),
        ({"keys": ["id"], "id": {}}, (Code.KEY_INVALID, 0, "id")),
        ({"keys": ["id"], "id": [1]}, (Code.KEY_INVALID, 0, "id")),
    ],
)
def test_each_problem_with_keys_has_its_code_point_and_field(data: dict[str, Any], expected: Any) -> None:
    assert problems(data) == [expected]
    code, _, field = expected
    assert problems([point(7), data]) == [(code, 1, field)]  # after a point of the usual keys


def test_eight_key_fields_in_any_order_are_one_set_of_keys() -> None:
    names = [f"k{n}" for n in range(8)]
    batch = validate(
        [{"keys": names, **dict.fromkeys(names, 1)}, {"keys": names[::-1], **dict.fromkeys(names, 2)}], "t"
    )
    assert batch.key_fields == tuple(names)


def test_key_fields_differing_from_an_earlier_point_name_the_later_point() -> None:
    assert problems([point(1), point(2), {"keys": ["a"], "a": 1}]) == [(Code.KEYS_DIFFER, 2, None)]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("", Code.FIELD_NAME_INVALID),
        ("a\x00b", Code.FIELD_NAME_INVALID),
        ("x" * 64, Code.FIELD_NAME_INVALID),
        ("é" * 32, Code.FIELD_NAME_INVALID),
        ("xmin", Code.FIELD_NAME_RESERVED),
        ("CTID", Code.FIELD_NAME_RESERVED),
    ],
)
def test_a_field_name_no_column_can_have_is_named_with_its_point(name: str, code: Code) -> None:
    assert problems([point(1), point(2, **{name: 1})]) == [(code, 1, name)]


def test_names_equal_but_for_case_name_the_later_one_in_a_point_or_across_points() -> None:
    assert problems(point(1, Name="a", NAME="b")) == [(Code.FIELD_NAME_CASE, 0, "NAME")]
    assert problems([point(1, Name="a"), point(2, name="b")]) == [(Code.FIELD_NAME_CASE, 1, "name")]
    assert validate([point(1, Name="a"), point(2, Name="b")], "t").kinds["Name"] is Kind.TEXT


def test_nesting_deeper_than_the_limit_is_refused_in_every_point_of_a_shape() -> None:
    """A data point is depth 1: 32 levels are taken, 33 refused, also in a later point of the
    same shape (validation skips the per-name checks for a shape it has seen, not this one)."""

    def nested(levels: int) -> Any:
        value: Any = 1
        for _ in range(levels):
            value = [value]
        return value

    validate(point(1, deep=nested(31)), "t")
    assert problems(point(1, deep=nested(32))) == [(Code.NESTED_TOO_DEEP, 0, "deep")]
    assert problems([point(1, deep=[1]), point(2, deep=nested(32))]) == [(Code.NESTED_TOO_DEEP, 1, "deep")]
    assert problems(point(1, deep=nested(3)), limits=Limits(max_depth=3)) == [
        (Code.NESTED_TOO_DEEP, 0, "deep")
    ]


def test_one_problem_per_point_and_field_in_request_order() -> None:
    body = [point(1), {"id": 2}, point(None), {"keys": ["a", "b"], "c": 1}, 7]
    assert problems(body) == [
        (Code.KEYS_MISSING, 1, None),
        (Code.KEY_INVALID, 2, "id"),
        (Code.KEY_MISSING, 3, "a"),
        (Code.KEY_MISSING, 3, "b"),
        (Code.POINT_NOT_OBJECT, 4, None),
    ]


@pytest.mark.parametrize("bad", [1, 49, 50, 51, 100])
def test_at_most_50_problems_are_listed_and_one_more_counts_the_rest(bad: int) -> None:
    assert MAX_REASONS == 50  # docs/errors.md says so
    body = [point(n) for n in range(100 - bad)] + [{"id": n} for n in range(bad)]
    exc = refusal(lambda: validate(body, "t"))
    listed = exc.details[:MAX_REASONS]
    assert [d.point for d in listed] == list(range(100 - bad, 100 - bad + min(bad, MAX_REASONS)))
    assert {d.code for d in listed} == {Code.KEYS_MISSING}
    if bad <= MAX_REASONS:
        assert len(exc.details) == bad
    else:
        (more,) = exc.details[MAX_REASONS:]
        assert (more.code, more.point, more.field) == (Code.MORE_PROBLEMS, None, None)
        assert more.message == f"... and {bad - MAX_REASONS} more problems"


def test_a_reason_line_names_the_point_of_its_detail() -> None:
    exc = refusal(lambda: validate([point(1), {"keys": ["id"]}], "t"))
    assert exc.reasons == ["data point 1: key field 'id' is missing"]
    assert Detail(Code.POINTS_EMPTY, "no points").reason == "no points"


# -- what validation accepts --------------------------------------------------------------


def test_a_batch_holds_the_points_without_keys_and_the_kinds_they_ask_for() -> None:
    batch = validate(
        [point(1, b=True, n=None, big=2**64, near=2**53 + 1), point(2, b=5, s="x", o={"a": [1]})], "orders"
    )
    assert (batch.table, batch.key_fields) == ("orders", ("id",))
    assert all("keys" not in p for p in batch.points)
    assert batch.kinds == {
        "id": Kind.INTEGER,
        "b": Kind.INTEGER,
        "big": Kind.DECIMAL,
        "near": Kind.INTEGER,
        "s": Kind.TEXT,
        "o": Kind.JSON,
    }  # n has only been null: it asks for nothing
    assert batch.mixed == {"b"}
    assert "near" in batch.inexact and "id" not in batch.inexact  # beyond 2**53: no double holds it


def test_a_big_integer_in_a_later_point_of_a_known_shape_still_asks_for_decimal() -> None:
    batch = validate([point(1, n=5), point(2, n=2**64), point(3, n=-(2**60))], "t")
    assert batch.kinds["n"] is Kind.DECIMAL and batch.inexact == {"n"} and batch.mixed == {"n"}


FIELDS = st.sampled_from(["a", "b", "c"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3)
    | st.just({"x": 1})
)


@settings(deadline=None)
@given(st.lists(st.dictionaries(FIELDS, SCALARS), min_size=1, max_size=8))
def test_a_fields_kind_is_the_join_of_its_values_kinds(rows: list[dict[str, Any]]) -> None:
    body = [point(i, **r) for i, r in enumerate(rows)]
    batch = validate([dict(p) for p in body], "t")
    for name in "abc":
        asked = [k for r in rows if name in r and (k := kind_of(r[name])) is not None]
        if not asked:
            assert name not in batch.kinds
            continue
        expected = asked[0]
        for k in asked[1:]:
            expected = join(expected, k)
        assert batch.kinds[name] is expected
        if expected is not Kind.DECIMAL:  # a decimal column converts every value anyway
            assert (name in batch.mixed) == (len(set(asked)) > 1)


@settings(deadline=None)
@given(st.integers(1, 100))
def test_every_bad_point_is_counted_whatever_their_number(bad: int) -> None:
    exc = refusal(lambda: validate([{"id": n} for n in range(bad)], "t"))
    listed = min(bad, MAX_REASONS)
    assert [d.code for d in exc.details[:listed]] == [Code.KEYS_MISSING] * listed
    assert len(exc.details) == listed + (bad > MAX_REASONS)


# -- v1: data points keyed by _id ---------------------------------------------------------


@pytest.mark.parametrize(("value", "stored"), [(0, 0), (-5, -5), (2**40, 2**40), ("007", 7), ("12", 12)])
def test_v1_keys_a_point_by_an_integer_id_or_a_string_of_digits(value: Any, stored: int) -> None:
    batch = validate({"_id": value, "keys": ["ignored"], "v": 1}, "t", version=1)
    assert batch.key_fields == ("_id",)
    assert batch.points == [{"_id": stored, "v": 1}]
    assert batch.kinds["_id"] is Kind.INTEGER


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"a": 1}, Code.ID_MISSING),
        ({"_id": None}, Code.ID_INVALID),
        ({"_id": "abc"}, Code.ID_INVALID),
        ({"_id": "-1"}, Code.ID_INVALID),
        ({"_id": " 1"}, Code.ID_INVALID),
        ({"_id": ""}, Code.ID_INVALID),
        ({"_id": "١٢"}, Code.ID_INVALID),
        ({"_id": 1.0}, Code.ID_INVALID),
        ({"_id": True}, Code.ID_INVALID),
        ({"_id": [1]}, Code.ID_INVALID),
    ],
)
def test_v1_refuses_a_missing_or_bad_id_naming_the_point_and_field(data: dict[str, Any], code: Code) -> None:
    assert problems([{"_id": 1}, data], version=1) == [(code, 1, "_id")]


def test_v1_does_not_look_at_keys() -> None:
    batch = validate([{"_id": 1, "keys": "garbage"}, {"_id": 2, "keys": ["a"], "a": 1}], "t", version=1)
    assert batch.points == [{"_id": 1}, {"_id": 2, "a": 1}]
    assert set(batch.kinds) == {"_id", "a"}


# -- reading a body -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", Code.BODY_EMPTY),
        (b" \n\t", Code.BODY_EMPTY),
        (b"{", Code.BODY_NOT_JSON),
        (b'{"a": NaN}', Code.BODY_NOT_JSON),
        (b'{"a": 1e999}', Code.BODY_NOT_JSON),
        (b'{"a": 1} x', Code.BODY_NOT_JSON),
        (b'"\xff"', Code.BODY_NOT_UTF8),
        (b'{"s": "\xed\xa0\x80"}', Code.BODY_NOT_UTF8),
        (b"[" * 200_000 + b"]" * 200_000, Code.BODY_TOO_DEEP),
    ],
    ids=["empty", "blank", "truncated", "nan", "beyond-double", "trailing", "not-utf8", "surrogate", "deep"],
)
def test_a_body_that_cannot_be_read_says_why(raw: bytes, code: Code) -> None:
    exc = refusal(lambda: decode_json(raw))
    assert exc.status == 400 and [(d.code, d.point, d.field) for d in exc.details] == [(code, None, None)]


def test_an_escaped_half_surrogate_is_refused_as_the_docs_say() -> None:
    exc = refusal(lambda: decode_json(b'{"keys": ["id"], "id": 1, "s": "\\ud800"}'))
    assert exc.codes == [Code.BODY_NOT_UTF8]


@pytest.mark.parametrize(
    "raw",
    [b'{"a": 1, "a": 2}', b'{"a": 1, "\\u0061": 2}', b'[{"a": 1}, {"o": {"a": 1, "a": 2}}]'],
    ids=["plain", "escaped", "nested"],
)
def test_a_name_given_twice_in_one_object_names_the_field(raw: bytes) -> None:
    exc = refusal(lambda: decode_json(raw))
    assert [(d.code, d.field) for d in exc.details] == [(Code.NAME_REPEATED, "a")]


def test_text_with_a_nul_names_every_point_that_holds_one() -> None:
    raw = b'[{"a": "ok"}, {"a": "x\\u0000"}, {"o": {"k": ["\\u0000"]}}, {"b": 1}]'
    exc = refusal(lambda: decode_json(raw))
    assert [(d.code, d.point) for d in exc.details] == [(Code.TEXT_HAS_NUL, 1), (Code.TEXT_HAS_NUL, 2)]


def test_decoding_keeps_every_digit_of_an_integer() -> None:
    assert decode_json(b'{"n": 123456789012345678901234567890, "m": -1}') == {
        "n": 123456789012345678901234567890,
        "m": -1,
    }


@settings(deadline=None)
@given(st.binary(min_size=1, max_size=2000))
def test_gzip_inflates_to_the_limit_and_not_a_byte_more(data: bytes) -> None:
    packed = gzip.compress(data)
    assert gunzip(packed, len(data)) == data
    exc = refusal(lambda: gunzip(packed, len(data) - 1))
    assert isinstance(exc, PayloadTooLarge) and exc.codes == [Code.BODY_TOO_LARGE]


def test_gzip_members_are_read_one_after_the_other() -> None:
    assert gunzip(gzip.compress(b"[1,") + gzip.compress(b"2]"), 100) == b"[1,2]"


@pytest.mark.parametrize(
    "raw",
    [b"plain", gzip.compress(b"[1]")[:-12], gzip.compress(b"[1]") + b"junk"],
    ids=["not-gzip", "truncated", "trailing-garbage"],
)
def test_what_is_not_whole_gzip_is_refused(raw: bytes) -> None:
    assert refusal(lambda: gunzip(raw, 1000)).codes == [Code.BODY_NOT_GZIP]


def test_only_gzip_or_no_encoding_is_read() -> None:
    assert [encoding_of(h) for h in (None, b"", b"identity", b"gzip", b" GZIP ", b"x-gzip")] == [
        "",
        "",
        "",
        "gzip",
        "gzip",
        "gzip",
    ]
    for header in (b"br", b"deflate", b"gzip, br"):
        exc = refusal(lambda h=header: encoding_of(h))
        assert isinstance(exc, UnsupportedEncoding) and exc.codes == [Code.ENCODING_UNSUPPORTED]


def test_reading_a_body_checks_its_length_and_its_arrival() -> None:
    def messages(*sent: dict[str, Any]) -> Any:
        queue = list(sent)

        async def receive() -> dict[str, Any]:
            return queue.pop(0)

        return receive

    whole = {"type": "http.request", "body": b"[1]", "more_body": False}
    assert asyncio.run(read_body(messages(whole), "", b"3", 10)) == b"[1]"
    torn = messages({"type": "http.request", "body": b"[", "more_body": True}, {"type": "http.disconnect"})
    cases = [
        (messages(whole), b"12abc", 10, Code.CONTENT_LENGTH_INVALID),
        (messages(whole), b"11", 10, Code.BODY_TOO_LARGE),
        (messages(whole), None, 2, Code.BODY_TOO_LARGE),
        (torn, None, 10, Code.BODY_INCOMPLETE),
    ]
    for receive, length, limit, code in cases:
        exc = refusal(lambda r=receive, n=length, m=limit: asyncio.run(read_body(r, "", n, m)))
        assert exc.codes == [code]


# -- names --------------------------------------------------------------------------------


@settings(deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_]{1,63}", fullmatch=True))
def test_a_table_name_of_letters_digits_and_underscores_is_stored_lower_case(raw: str) -> None:
    if raw.lower().startswith(("sqlite_", "_importapi", "pg_")):
        assert refusal(lambda: table_name(raw)).codes == [Code.TABLE_NAME_RESERVED]
    else:
        assert table_name(raw) == raw.lower()


@pytest.mark.parametrize("raw", ["", "x" * 64, "a-b", "a.b", "a b", "örders", "ｏｒｄｅｒｓ", "a\x00"])
def test_any_other_table_name_is_invalid(raw: str) -> None:
    assert refusal(lambda: table_name(raw)).codes == [Code.TABLE_NAME_INVALID]


@pytest.mark.parametrize("raw", ["sqlite_master", "SQLite_x", "_importapi_tables", "_IMPORTAPIx", "pg_class"])
def test_table_names_the_system_keeps_are_reserved_ignoring_case(raw: str) -> None:
    assert refusal(lambda: table_name(raw)).codes == [Code.TABLE_NAME_RESERVED]


@settings(deadline=None)
@given(st.text(max_size=70))
def test_a_field_name_is_a_column_name_unless_empty_nul_long_or_a_system_columns(name: str) -> None:
    problem = field_name_problem(name)
    size = len(name.encode("utf-8", "surrogatepass"))
    if not name or "\x00" in name or size > 63:
        assert problem is not None and problem[0] is Code.FIELD_NAME_INVALID
    elif name.lower() in {"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"}:
        assert problem is not None and problem[0] is Code.FIELD_NAME_RESERVED
    else:
        assert problem is None
