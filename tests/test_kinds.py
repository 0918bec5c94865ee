"""Column kinds without a database: ``importapi.kinds``.

The kind a value asks for, the lattice columns widen along (``join``), and the conversions
to and from what a column stores. Every backend stores through these, so a value pushed,
stored and read back, or stored and then widened, means what was pushed.
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importapi.kinds import INT64_MAX, INT64_MIN, Kind, from_storage, join, kind_of, to_storage, widen_stored

KINDS = st.sampled_from(list(Kind))
CHAIN = [Kind.BOOLEAN, Kind.INTEGER, Kind.DOUBLE, Kind.DECIMAL, Kind.TEXT, Kind.JSON]
"""The lattice as docs/architecture.md and the contract describe it for JSON values."""

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
"""Any decoded JSON value of a body (integers of any size, no NaN or Infinity)."""


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("", Kind.TEXT),
        (True, Kind.BOOLEAN),
        (False, Kind.BOOLEAN),
        (0, Kind.INTEGER),
        (INT64_MAX, Kind.INTEGER),
        (INT64_MIN, Kind.INTEGER),
        (INT64_MAX + 1, Kind.DECIMAL),
        (INT64_MIN - 1, Kind.DECIMAL),
        (1.0, Kind.DOUBLE),
        ({}, Kind.JSON),
        ([1], Kind.JSON),
        (None, None),
    ],
)
def test_the_kind_a_value_asks_for(value: Any, kind: Kind | None) -> None:
    assert kind_of(value) is kind


def test_labels_name_the_kinds_and_read_back() -> None:
    assert [k.label for k in CHAIN] == ["boolean", "integer", "double", "decimal", "text", "json"]
    assert all(Kind.from_label(k.label) is k for k in Kind)


def test_scalars_widen_along_one_chain_and_json_takes_everything() -> None:
    for lower, higher in pairwise(CHAIN):
        assert join(lower, higher) is higher and join(higher, lower) is higher
    for kind in Kind:
        assert join(kind, Kind.JSON) is Kind.JSON
    assert join(Kind.BOOLEAN, Kind.TEXT) is Kind.TEXT and join(Kind.INTEGER, Kind.DECIMAL) is Kind.DECIMAL


@settings(deadline=None)
@given(KINDS, KINDS, KINDS)
def test_join_is_a_lattice_join(a: Kind, b: Kind, c: Kind) -> None:
    assert join(a, a) is a
    assert join(a, b) is join(b, a)
    assert join(join(a, b), c) is join(a, join(b, c))
    assert join(a, join(a, b)) is join(a, b)  # what a column became still holds its old values


@pytest.mark.parametrize(
    ("value", "kind", "stored"),
    [
        (True, Kind.TEXT, "true"),
        (False, Kind.TEXT, "false"),
        (5, Kind.TEXT, "5"),
        (0.1 + 0.2, Kind.TEXT, "0.30000000000000004"),
        (1e300, Kind.TEXT, "1e+300"),
        (2**70, Kind.TEXT, str(2**70)),
        (True, Kind.INTEGER, 1),
        (True, Kind.DOUBLE, 1.0),
        (5, Kind.DOUBLE, 5.0),
        (True, Kind.DECIMAL, "1"),
        (-(2**70), Kind.DECIMAL, str(-(2**70))),
        ("s", Kind.JSON, '"s"'),
        (True, Kind.JSON, "true"),
        (1e17, Kind.JSON, "100000000000000000.0"),
        (2.5, Kind.JSON, "2.5"),
        ({"b": 1, "a": [None, 2**70]}, Kind.JSON, '{"a":[null,1180591620717411303424],"b":1}'),
        (None, Kind.TEXT, None),
    ],
)
def test_a_value_is_stored_as_its_column_kind_says(value: Any, kind: Kind, stored: Any) -> None:
    converted = to_storage(value, kind)
    assert converted == stored and type(converted) is type(stored)


def test_a_double_in_a_decimal_column_has_no_exponent() -> None:
    assert to_storage(1e300, Kind.DECIMAL) == "1" + "0" * 300
    assert to_storage(1.5e-7, Kind.DECIMAL) == "0.00000015"
    assert to_storage(-0.0, Kind.DECIMAL) == "0" and to_storage(3.0, Kind.DECIMAL) == "3"
    assert to_storage(2.5, Kind.DECIMAL) == "2.5" and to_storage(1e16, Kind.DECIMAL) == "1" + "0" * 16


@settings(deadline=None)
@given(JSON_VALUES)
def test_a_value_stored_as_its_own_kind_reads_back_equal(value: Any) -> None:
    kind = kind_of(value)
    if kind is None:
        assert to_storage(value, Kind.TEXT) is None and from_storage(None, Kind.TEXT) is None
        return
    back = from_storage(to_storage(value, kind), kind)
    assert back == value and type(back) is type(value)


@settings(deadline=None)
@given(JSON_VALUES, KINDS)
def test_a_stored_value_widened_is_what_the_value_would_be_in_the_wider_column(
    value: Any, other: Kind
) -> None:
    old = kind_of(value)
    if old is None:
        return
    new = join(old, other)
    widened = widen_stored(to_storage(value, old), old, new)
    assert widened == to_storage(value, new)
    meaning = from_storage(widened, new)
    if new is Kind.JSON:
        assert json.loads(widened) == value
    elif new is Kind.DECIMAL and isinstance(value, float):
        # the shortest digits of the double: a decimal that reads back as that double
        assert float(meaning) == value
    elif new is Kind.DECIMAL:
        assert meaning == value  # every digit of an integer kept
    elif new is Kind.DOUBLE:
        assert meaning == float(value)
    elif new is Kind.TEXT:
        assert isinstance(meaning, str)
    elif new is Kind.INTEGER:
        assert meaning == int(value) and type(meaning) is int  # a boolean as 1 or 0
    else:
        assert meaning is value and new is old is Kind.BOOLEAN


@pytest.mark.parametrize(
    ("stored", "kind", "value"),
    [
        (1, Kind.BOOLEAN, True),
        (0, Kind.BOOLEAN, False),
        ("12", Kind.DECIMAL, 12),
        ("2.5", Kind.DECIMAL, 2.5),
        ('{"a":[1,null]}', Kind.JSON, {"a": [1, None]}),
        ("x", Kind.TEXT, "x"),
        (None, Kind.JSON, None),
    ],
)
def test_a_stored_value_reads_back_as_the_json_value_it_holds(stored: Any, kind: Kind, value: Any) -> None:
    back = from_storage(stored, kind)
    assert back == value and type(back) is type(value)
