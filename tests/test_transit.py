"""Transit as the Stitch clients write it, read into typed values (``importapi.stitch.transit``):
the key cache filled in document order, instants, exact decimals, big integers, escapes,
sets and maps with other keys; and what is not Transit refused. No HTTP, no database."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from importapi.errors import BadRequest
from importapi.stitch.transit import decode


def test_maps_keys_and_the_cache_in_document_order() -> None:
    body = [
        [
            "^ ",
            "action",
            "upsert",
            "data",
            ["^ ", "id", 1, "address", ["^ ", "city", "Berlin"]],
            "sequence",
            1,
        ],
        ["^ ", "^0", "upsert", "^1", ["^ ", "id", 2, "^2", ["^ ", "^3", "Paris"]], "^4", 2],
    ]
    assert decode(json.dumps(body).encode()) == [
        {"action": "upsert", "data": {"id": 1, "address": {"city": "Berlin"}}, "sequence": 1},
        {"action": "upsert", "data": {"id": 2, "address": {"city": "Paris"}}, "sequence": 2},
    ]


def test_typed_values_arrive_typed() -> None:
    body = [
        "^ ",
        "when",
        "~m1796111209376",
        "at",
        "~t2026-12-01T07:46:49.376Z",
        "cents",
        "~f12.50",
        "big",
        "~n18446744073709551617",
        "mid",
        "~i9007199254740993",
        "dbl",
        "~d1.5",
        "kw",
        "~:name",
        "tilde",
        "~~not a tag",
        "caret",
        "~^x",
        "uuid",
        "~u5e1d2c3b-4a59-4c6d-8e7f-90a1b2c3d4e5",
        "none",
        "~_",
        "yes",
        "~?t",
        "tags",
        ["~#set", ["a", "b"]],
        "plain",
        "text",
    ]
    value = decode(json.dumps(body).encode())
    assert value["when"] == dt.datetime(2026, 12, 1, 7, 46, 49, 376000, tzinfo=dt.UTC)
    assert value["at"] == dt.datetime(2026, 12, 1, 7, 46, 49, 376000, tzinfo=dt.UTC)
    assert value["cents"] == Decimal("12.50") and type(value["cents"]) is Decimal
    assert value["big"] == 2**64 + 1 and value["mid"] == 2**53 + 1 and value["dbl"] == 1.5
    assert (value["kw"], value["tilde"], value["caret"], value["plain"]) == (
        "name",
        "~not a tag",
        "^x",
        "text",
    )
    assert value["uuid"] == "5e1d2c3b-4a59-4c6d-8e7f-90a1b2c3d4e5"
    assert value["none"] is None and value["yes"] is True and value["tags"] == ["a", "b"]


def test_tags_and_keywords_are_cached_too() -> None:
    body = [["~#set", [1]], ["^0", [2]], ["^ ", "~:kind", "~:kind"], ["^ ", "^1", "^1"]]
    assert decode(json.dumps(body).encode()) == [[1], [2], {"kind": "kind"}, {"kind": "kind"}]


def test_maps_with_other_keys_and_the_verbose_form() -> None:
    assert decode(json.dumps(["~#cmap", [1, "one", True, "yes"]]).encode()) == {"1": "one", "true": "yes"}
    assert decode(json.dumps({"name": "x", "when": {"~#m": 0}}).encode()) == {
        "name": "x",
        "when": dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    }


@pytest.mark.parametrize(
    "body", [b"[", b'["^5"]', b'["~zNaN"]', b'["~m12x"]', b'["~#nope", 1]', b'["^ ", "a"]']
)
def test_what_is_not_transit_is_refused(body: bytes) -> None:
    with pytest.raises(BadRequest) as refused:
        decode(body)
    assert refused.value.details[0].code == "body_not_json"
