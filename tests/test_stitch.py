"""The Stitch Import API's contract (``shared/spec/stitch.md``): routes, answers, every error
row of section 5 on a real path (each changing nothing), sequences, table versions,
append-only tables, types from the JSON Schema and the system columns, on both backends."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest

from importapi.errors import Code
from importapi.settings import Settings
from tests.helpers import Api, in_process

CODES = {c.value for c in Code}
SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["null", "string"]},
        "amount": {"type": ["null", "number"], "multipleOf": 0.01},
        "ratio": {"type": ["null", "number"]},
        "created_at": {"type": ["null", "string"], "format": "date-time"},
        "birthday": {"type": ["null", "string"], "format": "date"},
        "active": {"type": ["null", "boolean"]},
        "either": {"type": ["null", "integer", "string"]},
    },
}
SEQ = 1_796_113_870_373_400_000  # about where target-stitch's sequences are: beyond 2**53


def record(i: int, **data: Any) -> dict[str, Any]:
    return {
        "id": i,
        "email": f"u{i}@example.com",
        "amount": 12.5,
        "created_at": "2012-08-01T14:22:32.000000Z",
        **data,
    }


def upsert(seq: int, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"action": "upsert", "sequence": seq, "data": data, **extra}


def batch(
    messages: list[dict[str, Any]],
    *,
    table: str = "orders",
    keys: list[str] | None = None,
    version: int | None = None,
    schema: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "table_name": table,
        "schema": schema or SCHEMA,
        "key_names": ["id"] if keys is None else keys,
        "messages": messages,
        **extra,
    }
    if version is not None:
        body["table_version"] = version
    return body


def post(
    api: Api,
    route: str,
    body: Any,
    *,
    key: str | None = None,
    sandbox: bool = False,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    prefix = "/sandbox" if sandbox else ""
    sent = {
        "Authorization": f"Bearer {key or api.key}",
        "Content-Type": "application/json",
        **(headers or {}),
    }
    data = content if content is not None else json.dumps(body).encode()
    return api.http.post(f"{prefix}/v2/import/{route}", content=data, headers=sent)


def accepted(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body: dict[str, Any] = r.json()
    assert body["status"] == "OK" and body["message"] == (
        "Batch is valid!" if status == 200 else "Batch Accepted!"
    )
    return body


def refused(r: httpx.Response, status: int) -> dict[str, Any]:
    """An error answer: the status, JSON, and details made of documented codes."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body: dict[str, Any] = r.json()
    assert body["details"] and all(d["code"] in CODES for d in body["details"]), body
    return body


def rows(api: Api, table: str = "orders", columns: str = "*") -> list[dict[str, Any]]:
    names = {t.schema.name for t in api.storage.warehouse.tables(api.client_id)}
    if table not in names:
        return []
    cols, found = api.storage.warehouse.query(api.client_id, f'SELECT {columns} FROM "{table}" ORDER BY 1')
    return [dict(zip(cols, r)) for r in found]


def snapshot(api: Api) -> Any:
    return [
        (t.schema.name, t.row_count, [(c.name, c.kind) for c in t.schema.columns.values()])
        for t in api.storage.warehouse.tables(api.client_id)
    ]


def kinds(api: Api, table: str = "orders") -> dict[str, str]:
    (info,) = [t for t in api.storage.warehouse.tables(api.client_id) if t.schema.name == table]
    return {c.name: c.kind.label for c in info.schema.columns.values()}


# -- 1. routes ------------------------------------------------------------------------------


def test_status_needs_no_key_and_says_ok(api: Api) -> None:
    r = api.http.get("/v2/import/status")
    assert r.status_code == 200 and r.json()["status"] == "OK"
    assert api.http.get("/sandbox/v2/import/status").json()["sandbox"] is True


def test_a_batch_is_stored_and_answered_201_after_the_commit(api: Api) -> None:
    body = accepted(post(api, "batch", batch([upsert(SEQ + i, record(i)) for i in range(3)])))
    assert (body["records"], body["inserted"], body["replaced"], body["stale"]) == (3, 3, 0, 0)
    assert [r["id"] for r in rows(api)] == [0, 1, 2]


def test_types_come_from_the_schema(api: Api) -> None:
    data = record(1, ratio=0.5, birthday="1980-02-29", active=True, either=7)
    accepted(post(api, "batch", batch([upsert(SEQ, data, time_extracted="2026-12-01T07:46:49.376708Z")])))
    assert kinds(api) == {
        "id": "integer",
        "email": "text",
        "amount": "decimal",
        "ratio": "double",
        "created_at": "timestamp",
        "birthday": "date",
        "active": "boolean",
        "either": "integer",
        "_sdc_received_at": "timestamp",
        "_sdc_batched_at": "timestamp",
        "_sdc_sequence": "integer",
        "_sdc_table_version": "integer",
        "_sdc_extracted_at": "timestamp",
    }
    (row,) = api.storage.warehouse.read_rows(api.client_id, "orders")[1]
    values = dict(zip(kinds(api), row))
    assert values["amount"] in (12.5, "12.50") and values["created_at"] == "2012-08-01T14:22:32.000000Z"
    assert values["birthday"] == "1980-02-29" and values["_sdc_extracted_at"] == "2026-12-01T07:46:49.376708Z"
    assert values["_sdc_sequence"] == SEQ  # beyond 2**53, every digit


def test_decimals_keep_their_cents_exactly(api: Api) -> None:
    content = json.dumps(batch([upsert(SEQ, record(1, amount=0))])).replace(
        '"amount": 0', '"amount": 99999999.99'
    )
    accepted(post(api, "batch", None, content=content.encode()))
    content = json.dumps(batch([upsert(SEQ + 1, record(2, amount=0))])).replace(
        '"amount": 0', '"amount": 12.50'
    )
    accepted(post(api, "batch", None, content=content.encode()))
    _, found = api.storage.warehouse.query(
        api.client_id, 'SELECT id, CAST(amount AS TEXT) FROM "orders" ORDER BY id'
    )
    assert found == [(1, "99999999.99"), (2, "12.50")]


def test_several_types_widen_the_column_as_everywhere(api: Api) -> None:
    accepted(post(api, "batch", batch([upsert(SEQ, record(1, either=5))])))
    accepted(post(api, "batch", batch([upsert(SEQ + 1, record(2, either="five"))])))
    assert kinds(api)["either"] == "text"
    assert [r["either"] for r in rows(api, columns="id, either")] == ["5", "five"]


@pytest.mark.parametrize(
    "text",
    [
        "2012-08-01T14:22:32+0000",
        "2012-08-01 16:22:32+02:00",
        "2012-08-01T14:22:32",
        "2012-08-01T14:22:32.000Z",
    ],
)
def test_date_times_are_read_leniently_and_stored_in_utc(api: Api, text: str) -> None:
    accepted(post(api, "batch", batch([upsert(SEQ, record(1, created_at=text))])))
    assert rows(api, columns="created_at")[0]["created_at"] in ("2012-08-01T14:22:32.000000Z",)


def test_the_push_route_takes_records_of_several_tables_typed_by_their_values(api: Api) -> None:
    records = [
        {
            "client_id": api.client_id,
            "table_name": "customers",
            "sequence": 1,
            "action": "upsert",
            "key_names": ["id"],
            "data": {"id": 1, "name": "Finn", "score": 2.5},
        },
        {
            "client_id": api.client_id,
            "table_name": "events",
            "sequence": 2,
            "action": "upsert",
            "key_names": [],
            "data": {"what": "signup"},
        },
    ]
    body = accepted(post(api, "push", records))
    assert body["records"] == 2
    assert rows(api, "customers", "id, name, score") == [{"id": 1, "name": "Finn", "score": 2.5}]
    assert [r["what"] for r in rows(api, "events", "what")] == ["signup"]
    assert kinds(api, "events")["__sdc_primary_key"] == "text"


def test_validate_checks_in_full_and_stores_nothing(api: Api) -> None:
    records = [
        {
            "client_id": api.client_id,
            "table_name": "customers",
            "sequence": 1,
            "action": "upsert",
            "key_names": ["id"],
            "data": {"id": 1},
        }
    ]
    accepted(post(api, "validate", records), 200)
    assert snapshot(api) == []
    refused(post(api, "validate", [{**records[0], "key_names": ["nope"]}]), 422)


def test_the_sandbox_answers_as_production_and_stores_nothing(api: Api) -> None:
    body = accepted(post(api, "batch", batch([upsert(SEQ, record(1))]), sandbox=True))
    assert (
        body["sandbox"] is True
        and body["inserted"] == 1
        and body["tables"][0]["plan"]["create_table"] is True
    )
    assert snapshot(api) == []
    refused(post(api, "batch", batch([upsert(SEQ, {"id": "x"})]), sandbox=True), 400)


def test_the_key_names_the_client(api: Api) -> None:
    cid = api.storage.create_client("other").client_id
    _, other = api.storage.catalog.create_key(cid)
    accepted(post(api, "batch", batch([upsert(SEQ, record(1))]), key=other))
    assert {t.schema.name for t in api.storage.warehouse.tables(cid)} == {"orders"}
    assert rows(api) == []


# -- 4. sequences, versions, append-only ------------------------------------------------------


def test_an_older_record_never_replaces_a_newer_row(api: Api) -> None:
    accepted(post(api, "batch", batch([upsert(SEQ + 10, record(1, email="new"))])))
    body = accepted(post(api, "batch", batch([upsert(SEQ + 5, record(1, email="old"))])))
    assert (body["stale"], body["inserted"], body["replaced"]) == (1, 0, 0)
    assert rows(api, columns="email")[0]["email"] == "new"


def test_within_a_request_the_highest_sequence_wins_and_the_later_on_a_tie(api: Api) -> None:
    messages = [
        upsert(SEQ + 3, record(1, email="three")),
        upsert(SEQ + 1, record(1, email="one")),
        upsert(SEQ + 3, record(1, email="three again")),
        upsert(SEQ, record(2, email="a")),
        upsert(SEQ, record(2, email="b")),
    ]
    body = accepted(post(api, "batch", batch(messages)))
    assert body["stale"] == 1 and body["inserted"] == 2
    assert [r["email"] for r in rows(api, columns="id, email")] == ["three again", "b"]


def test_a_request_sent_twice_changes_nothing_but_when_it_arrived(api: Api) -> None:
    body = batch([upsert(SEQ + i, record(i % 3, email=f"v{i}")) for i in range(7)])
    accepted(post(api, "batch", body))
    first = rows(api, columns="id, email, _sdc_sequence")
    accepted(post(api, "batch", body))
    assert rows(api, columns="id, email, _sdc_sequence") == first


def test_system_columns_hold_each_records_values_shared_or_its_own(api: Api) -> None:
    """A value every record of a batch shares (its table version, when it arrived, a
    time_extracted a tap gives all) is stored in every row as a value of its own would be."""
    shared = "2026-12-01T07:46:49.376708Z"
    body = batch([upsert(SEQ + i, record(i), time_extracted=shared) for i in range(3)], version=7)
    accepted(post(api, "batch", body))
    own = [
        upsert(SEQ + 10 + i, record(i), **({"time_extracted": f"2026-12-01T08:00:0{i}Z"} if i != 3 else {}))
        for i in range(3, 6)
    ]
    accepted(post(api, "batch", batch(own, version=7)))
    cols = "id, _sdc_extracted_at, _sdc_table_version, _sdc_received_at, _sdc_batched_at, _sdc_sequence"
    stored = rows(api, columns=cols)
    assert [(r["id"], r["_sdc_extracted_at"], r["_sdc_table_version"]) for r in stored] == [
        (0, shared, 7),
        (1, shared, 7),
        (2, shared, 7),
        (3, None, 7),
        (4, "2026-12-01T08:00:04.000000Z", 7),
        (5, "2026-12-01T08:00:05.000000Z", 7),
    ]
    assert [r["_sdc_sequence"] for r in stored] == [SEQ, SEQ + 1, SEQ + 2, SEQ + 13, SEQ + 14, SEQ + 15]
    for group in (stored[:3], stored[3:]):  # one arrival and one write per batch, in every row
        assert len({(str(r["_sdc_received_at"]), str(r["_sdc_batched_at"])) for r in group}) == 1
        assert all(r["_sdc_received_at"] is not None and r["_sdc_batched_at"] is not None for r in group)


def test_activating_a_version_deletes_the_rows_of_older_ones(api: Api) -> None:
    v1, v2 = 1_000, 2_000
    activate = {"action": "activate_version", "sequence": SEQ}
    full = [activate, *(upsert(SEQ + i, record(i)) for i in range(1, 5)), {**activate, "sequence": SEQ + 9}]
    accepted(post(api, "batch", batch(full, version=v1)))
    assert [r["id"] for r in rows(api)] == [1, 2, 3, 4]
    # the second full sync: rows 3 and 4 are gone from the source
    second = [upsert(SEQ + 10 + i, record(i)) for i in (1, 2)]
    accepted(post(api, "batch", batch(second, version=v2)))
    assert [r["id"] for r in rows(api)] == [1, 2, 3, 4]  # not yet activated: both versions are visible
    body = accepted(post(api, "batch", batch([{**activate, "sequence": SEQ + 20}], version=v2)))
    assert body["records"] == 0
    assert [(r["id"], r["_sdc_table_version"]) for r in rows(api, columns="id, _sdc_table_version")] == [
        (1, v2),
        (2, v2),
    ]
    # a record of the older version now is stale
    stale = accepted(post(api, "batch", batch([upsert(SEQ + 30, record(7))], version=v1)))
    assert stale["stale"] == 1 and [r["id"] for r in rows(api)] == [1, 2]


def test_an_activation_alone_makes_an_empty_table(api: Api) -> None:
    accepted(post(api, "batch", batch([{"action": "activate_version", "sequence": SEQ}], version=5)))
    assert rows(api) == [] and "id" in kinds(api)


def test_append_only_tables_are_keyed_by_a_uuid_of_the_record(api: Api) -> None:
    for keys in ([], None):
        body = batch([upsert(SEQ + i, {"id": i % 2}) for i in range(4)], table="events", keys=keys)
        if keys is None:
            body["key_names"] = None
        accepted(post(api, "batch", body))
    found = rows(api, "events", "__sdc_primary_key, id")
    assert (
        len(found) == 4 and len({r["__sdc_primary_key"] for r in found}) == 4
    )  # the second time added nothing


def test_switch_view_activates_the_records_version(api: Api) -> None:
    base = {"client_id": api.client_id, "table_name": "items", "key_names": ["id"], "action": "upsert"}
    post(
        api,
        "push",
        [
            {**base, "sequence": 1, "table_version": 1, "data": {"id": 1}},
            {**base, "sequence": 2, "table_version": 1, "data": {"id": 2}},
        ],
    )
    accepted(
        post(
            api,
            "push",
            [
                {**base, "sequence": 3, "table_version": 2, "data": {"id": 2}},
                {**base, "sequence": 4, "table_version": 2, "action": "switch_view"},
            ],
        )
    )
    assert [r["id"] for r in rows(api, "items")] == [2]


# -- 5. errors, each changing nothing ----------------------------------------------------------


def changes_nothing(api: Api, r: httpx.Response, status: int) -> dict[str, Any]:
    before = snapshot(api)
    body = refused(r, status)
    assert snapshot(api) == before
    return body


def test_missing_extra_or_mistyped_arguments_are_400(api: Api) -> None:
    accepted(post(api, "batch", batch([upsert(SEQ, record(1))])))
    good = batch([upsert(SEQ + 1, record(2))])
    without = {k: v for k, v in good.items() if k != "schema"}
    body = changes_nothing(api, post(api, "batch", without), 400)
    assert body["error"] == "Request failed validation:#: required key [schema] not found"
    assert changes_nothing(api, post(api, "batch", {**good, "extra": 1}), 400)["error"] == (
        "Request failed validation:#: extraneous key [extra] is not permitted"
    )
    changes_nothing(api, post(api, "batch", {**good, "table_name": 5}), 400)
    changes_nothing(api, post(api, "batch", {**good, "messages": []}), 400)
    changes_nothing(api, post(api, "batch", batch([{"action": "upsert", "data": record(3)}])), 400)
    assert [r["id"] for r in rows(api)] == [1]


def test_a_record_that_does_not_fit_its_schema_is_400_naming_record_and_field(api: Api) -> None:
    messages = [upsert(SEQ, record(1)), upsert(SEQ + 1, record(2, active="yes"))]
    body = changes_nothing(api, post(api, "batch", batch(messages)), 400)
    assert (
        body["error"]
        == "Record 1 did not conform to schema: #/active: expected type: Boolean or Null, found: String"
    )
    assert body["details"][0] | {} == {
        "code": "record_not_conforming",
        "point": 1,
        "field": "active",
        "message": "#/active: expected type: Boolean or Null, found: String",
    }
    body = changes_nothing(api, post(api, "batch", batch([upsert(SEQ, record(1, amount=12.345))])), 400)
    assert "not a multiple of 0.01" in body["error"]


def test_a_key_field_missing_or_null_is_400(api: Api) -> None:
    body = changes_nothing(api, post(api, "batch", batch([upsert(SEQ, {"email": "x"})])), 400)
    assert body["error"] == "Record is missing key property id"
    changes_nothing(api, post(api, "batch", batch([upsert(SEQ, {"id": None})])), 400)


def test_a_push_body_that_is_not_an_array_is_400(api: Api) -> None:
    body = changes_nothing(api, post(api, "push", {"client_id": api.client_id}), 400)
    assert (body["status"], body["message"]) == ("ERROR", "An array of records is expected")


def test_malformed_json_is_400(api: Api) -> None:
    for route in ("batch", "push"):
        body = changes_nothing(api, post(api, route, None, content=b'{"table_name": '), 400)
        assert (body["status"], body["message"]) == ("ERROR", "Malformed json in the body!")


def test_a_missing_or_unknown_key_is_401(api: Api) -> None:
    r = api.http.post("/v2/import/batch", json=batch([upsert(SEQ, record(1))]))
    assert changes_nothing(api, r, 401)["message"] == "Not Authorized"
    changes_nothing(
        api, post(api, "batch", batch([upsert(SEQ, record(1))]), key="imp_000000000000_" + "x" * 32), 401
    )


def test_records_of_another_client_are_403(api: Api) -> None:
    records = [
        {
            "client_id": api.client_id + 1,
            "table_name": "t",
            "sequence": 1,
            "action": "upsert",
            "key_names": ["id"],
            "data": {"id": 1},
        }
    ]
    body = changes_nothing(api, post(api, "push", records), 403)
    assert body["errors"] == {"error": "Access token is not associated with this client."}


def test_records_that_disagree_or_lack_fields_are_422(api: Api) -> None:
    good = {
        "client_id": api.client_id,
        "table_name": "t",
        "sequence": 1,
        "action": "upsert",
        "key_names": ["id"],
        "data": {"id": 1},
    }
    for bad in (
        [good, {**good, "client_id": api.client_id + 1}],
        [{**good, "sequence": "soon"}],
        [good, {**good, "key_names": ["other"], "data": {"other": 1}}],
        [{**good, "action": "delete"}],
    ):
        body = changes_nothing(api, post(api, "push", bad), 422)
        assert body["error"] == "Request cannot be processed; see errors." and body["errors"]


def test_a_body_over_20_mb_is_413(api: Api) -> None:
    content = b'{"table_name": "t", "padding": "' + b"x" * (20 * 1024 * 1024 + 10) + b'"}'
    body = changes_nothing(api, post(api, "batch", None, content=content), 413)
    assert body["message"] == "Request rejected: request size exceeds the maximum"
    packed = gzip.compress(content)
    changes_nothing(api, post(api, "batch", None, content=packed, headers={"Content-Encoding": "gzip"}), 413)


def test_other_content_types_and_encodings_are_415(api: Api) -> None:
    good = json.dumps(batch([upsert(SEQ, record(1))])).encode()
    for headers in (
        {"Content-Type": "text/csv"},
        {"Content-Type": "application/transit+json"},
        {"Content-Encoding": "br"},
    ):
        body = changes_nothing(api, post(api, "batch", None, content=good, headers=headers), 415)
        assert body["status"] == "ERROR"


def test_gzip_bodies_are_taken(api: Api) -> None:
    packed = gzip.compress(json.dumps(batch([upsert(SEQ, record(1))])).encode())
    accepted(post(api, "batch", None, content=packed, headers={"Content-Encoding": "gzip"}))
    assert len(rows(api)) == 1


def test_the_record_and_field_limits(api: Api) -> None:
    many = batch([upsert(SEQ + i, record(i)) for i in range(20_001)])
    changes_nothing(api, post(api, "batch", many), 400)
    wide = {"id": 1, **{f"f{i}": i for i in range(10_001)}}
    body = changes_nothing(
        api, post(api, "batch", batch([upsert(SEQ, wide)], schema={"type": "object"})), 400
    )
    assert body["details"][0]["code"] == "too_many_fields"


def test_a_key_over_its_rate_limit_is_503_never_429(api: Api) -> None:
    """target-stitch gives up on any 4xx and retries a 5xx: a limit that will pass is a 503."""
    settings = Settings(database="unused", access_log=False, rate_limit=0.001, rate_burst=1)
    with in_process(settings, api.storage) as http:
        limited = Api(http, api.storage, api.client_id, api.key)
        accepted(post(limited, "batch", batch([upsert(SEQ, record(1))])))
        r = post(limited, "batch", batch([upsert(SEQ + 1, record(2))]))
        body = changes_nothing(limited, r, 503)
    assert int(r.headers["retry-after"]) >= 1 and body["details"][0]["code"] == "rate_limited"
