"""The contract, sections 4 and 5: the sandbox and v1.

The sandbox answers exactly as production would, against production's current state, and
leaves no trace (no row, table, column or key use). v1 keys data points by ``_id`` and
marks every answer with a ``Deprecation`` header.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    EXAMPLE_1,
    EXAMPLE_2,
    Api,
    auth_url,
    envelope,
    error_reasons,
    key_fields,
    kinds,
    limited_api,
    pushed,
    snapshot,
    user_tables,
    wait_until,
)

# A test marked backends("sqlite") is decided before the warehouse: which host is the
# sandbox, the v1 _id rules, the Deprecation header; one backend proves it. The sandbox's
# plan and its leaving nothing behind depend on the warehouse and run on every backend.

# -- 4. Sandbox --------------------------------------------------------------------------

SANDBOXES = ["/sandbox", "sandbox-connect.example.com", "sandbox.example.com"]


def sandbox_post(
    api: Api,
    how: str,
    data: Any,
    table: str = "orders",
    *,
    key: str | None = None,
    version: str = "v2",
    **kw: Any,
) -> httpx.Response:
    """A push to the sandbox, reached by the /sandbox prefix or by a sandbox Host header."""
    if how == "/sandbox":
        return api.http.post(api.url(table, sandbox=True, key=key, version=version), json=data, **kw)
    headers = {"Host": how, **kw.pop("headers", {})}
    return api.http.post(api.url(table, key=key, version=version), json=data, headers=headers, **kw)


@pytest.mark.parametrize("how", SANDBOXES)
def test_sandbox_push_answers_201_and_stores_nothing(api: Api, how: str) -> None:
    """A good push to the sandbox answers 201 with the production answer's fields, plus
    sandbox: true and the plan; no table, row or column is created."""
    body = pushed(sandbox_post(api, how, EXAMPLE_2))
    assert body["table"] == "orders" and (body["inserted"], body["replaced"]) == (2, 1)
    assert body["sandbox"] is True
    plan = body["plan"]
    assert plan["create_table"] is True
    assert [c["name"] for c in plan["add_columns"]] == ["id", "email", "status", "created_at"]
    assert {c["name"]: c["type"] for c in plan["add_columns"]} == {
        "id": "integer",
        "email": "text",
        "status": "text",
        "created_at": "text",
    }
    assert plan["widen_columns"] == []
    assert (plan["inserted"], plan["replaced"]) == (2, 1)
    assert user_tables(api) == [] and api.storage.warehouse.tables(api.client_id) == []


@pytest.mark.parametrize("how", SANDBOXES)
def test_sandbox_changes_nothing_on_an_existing_table(api: Api, how: str) -> None:
    """On an existing table the sandbox adds no column, widens none, replaces and inserts no row."""
    pushed(api.push([{"keys": ["id"], "id": 1, "n": 1, "s": "a"}, {"keys": ["id"], "id": 2, "n": 2}]))
    before = snapshot(api)
    data = [{"keys": ["id"], "id": 1, "n": 1.5, "new": True}, {"keys": ["id"], "id": 3, "n": "x"}]
    body = pushed(sandbox_post(api, how, data))
    assert body["plan"]["create_table"] is False and body["plan"]["add_columns"]
    assert snapshot(api) == before


@pytest.mark.parametrize("how", SANDBOXES)
def test_sandbox_authenticates_with_the_same_keys(api: Api, how: str) -> None:
    """The sandbox takes the same keys: 200 for a live key, 401 otherwise."""
    headers = {} if how == "/sandbox" else {"Host": how}
    prefix = "/sandbox" if how == "/sandbox" else ""
    envelope(api.http.get(prefix + auth_url(api, api.key), headers=headers), 200)
    error_reasons(api.http.get(prefix + auth_url(api, "wrong"), headers=headers), 401)
    error_reasons(sandbox_post(api, how, EXAMPLE_1, key="wrong"), 401)
    cid2 = api.storage.create_client("other").client_id
    r = api.http.post(
        f"{prefix}/v2/client/{cid2}/table/orders/data?apikey={api.key}", json=EXAMPLE_1, headers=headers
    )
    error_reasons(r, 401)


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "host", ["connect.example.com", "sandboxed.example.com", "my-sandbox.example.com", "testserver"]
)
def test_other_hosts_are_production(api: Api, host: str) -> None:
    """Only a Host starting with `sandbox-` or `sandbox.` is the sandbox: these store."""
    body = pushed(api.http.post(api.url(), json=EXAMPLE_1, headers={"Host": host}))
    assert "sandbox" not in body
    assert len(api.rows()) == 1


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("host", ["Sandbox-Connect.example.com", "SANDBOX.EXAMPLE.COM"])
def test_sandbox_host_is_matched_ignoring_case(api: Api, host: str) -> None:
    """Host names are case-insensitive (RFC 9110 4.2.3), so an upper-case sandbox host is
    still the sandbox and must not store."""
    body = pushed(api.http.post(api.url(), json=EXAMPLE_1, headers={"Host": host}))
    assert body.get("sandbox") is True
    assert user_tables(api) == []


def test_sandbox_plan_matches_what_production_then_does(api: Api) -> None:
    """The sandbox's plan (create, columns added and widened, inserted/replaced) is what the
    same push then does in production."""
    first = [{"keys": ["id"], "id": 1, "n": 1, "flag": True}, {"keys": ["id"], "id": 2, "n": 2}]
    plan = pushed(api.push(first, sandbox=True))["plan"]
    answer = pushed(api.push(first))
    assert plan["create_table"] is True and user_tables(api) == ["orders"]
    assert (plan["inserted"], plan["replaced"]) == (answer["inserted"], answer["replaced"]) == (2, 0)
    assert {c["name"]: c["type"] for c in plan["add_columns"]} == kinds(api)

    second = [
        {"keys": ["id"], "id": 2, "n": 2.5, "flag": 7, "note": "x"},
        {"keys": ["id"], "id": 3, "n": 3, "tags": ["a"]},
        {"keys": ["id"], "id": 3, "n": 4},
    ]
    before = kinds(api)
    plan = pushed(api.push(second, sandbox=True))["plan"]
    assert kinds(api) == before
    answer = pushed(api.push(second))
    after = kinds(api)
    assert plan["create_table"] is False
    assert (plan["inserted"], plan["replaced"]) == (answer["inserted"], answer["replaced"]) == (1, 2)
    assert {c["name"]: c["type"] for c in plan["add_columns"]} == {
        n: k for n, k in after.items() if n not in before
    }
    assert {(w["name"], w["from"], w["to"]) for w in plan["widen_columns"]} == {
        (n, before[n], after[n]) for n in before if before[n] != after[n]
    }
    assert {(w["name"], w["to"]) for w in plan["widen_columns"]} == {("n", "double"), ("flag", "integer")}


REFUSALS: dict[str, tuple[int, Any, dict[str, str]]] = {
    "other-key-fields": (400, {"keys": ["email"], "id": 9, "email": "a"}, {}),
    "case-of-a-column": (400, {"keys": ["id"], "id": 9, "Status": "x"}, {}),
    "column-limit": (400, {"keys": ["id"], "id": 9, "c1": 1, "c2": 2, "c3": 3}, {}),
    "no-keys": (400, {"id": 9}, {}),
    "empty": (400, [], {}),
    "too-many": (400, [{"keys": ["id"], "id": n} for n in range(101)], {}),
    "encoding": (415, EXAMPLE_1, {"Content-Encoding": "br"}),
    "too-large": (413, {"keys": ["id"], "id": 9, "big": "x" * 5000}, {}),
}


@pytest.mark.parametrize("how", SANDBOXES)
@pytest.mark.parametrize("case", list(REFUSALS))
def test_sandbox_refuses_what_production_refuses(tmp_path: Path, how: str, case: str) -> None:
    """Against production's current state, the sandbox refuses with the same status and
    reasons as production (other key fields, a column limit, ...)."""
    status, data, headers = REFUSALS[case]
    with limited_api(tmp_path / "w", max_columns=5, max_body_bytes=4096) as api:
        pushed(api.push({"keys": ["id"], "id": 1, "status": "a", "c0": 0}))
        before = snapshot(api)
        in_sandbox = sandbox_post(api, how, data, headers=headers)
        in_production = api.http.post(api.url(), json=data, headers=headers)
        assert error_reasons(in_sandbox, status) == error_reasons(in_production, status)
        assert snapshot(api) == before


def test_sandbox_leaves_no_key_use(api: Api) -> None:
    """Sandbox requests do not record key use; production requests do."""
    info2, key2 = api.storage.catalog.create_key(api.client_id)
    envelope(api.http.get("/sandbox" + auth_url(api, api.key)), 200)
    pushed(api.push(EXAMPLE_1, sandbox=True))
    pushed(sandbox_post(api, "sandbox-connect.example.com", EXAMPLE_1))
    pushed(api.push(EXAMPLE_1, key=key2))  # production, with the other key

    def used(key_id: str) -> str | None:
        return next(
            k.last_used_at for k in api.storage.catalog.list_keys(api.client_id) if k.key_id == key_id
        )

    wait_until(lambda: used(info2.key_id) is not None)
    first = next(k for k in api.storage.catalog.list_keys(api.client_id) if k.key_id != info2.key_id)
    assert first.last_used_at is None


def test_sandbox_status_and_v1(api: Api) -> None:
    """The sandbox base URL also serves GET / and the v1 routes, storing nothing."""
    envelope(api.http.get("/sandbox"), 200)
    envelope(api.http.get("/sandbox/"), 200)
    r = api.http.post(api.url(version="v1", sandbox=True), json={"_id": 1, "v": "x"})
    assert pushed(r)["sandbox"] is True
    assert "deprecation" in r.headers
    assert user_tables(api) == []


# -- 5. v1 -------------------------------------------------------------------------------


def test_v1_data_points_are_keyed_by_id(api: Api) -> None:
    """A v1 data point is keyed by `_id`: an integer, or a string of digits meaning the same
    integer."""
    body = pushed(api.push([{"_id": 1, "a": "x"}, {"_id": 2, "a": "y"}], version="v1"))
    assert (body["inserted"], body["replaced"]) == (2, 0)
    assert key_fields(api) == ["_id"]
    assert kinds(api)["_id"] == "integer"
    body = pushed(api.push({"_id": "1", "a": "z"}, version="v1"))
    assert (body["inserted"], body["replaced"]) == (0, 1)
    assert api.rows(order="_id") == [{"_id": 1, "a": "z"}, {"_id": 2, "a": "y"}]


@pytest.mark.parametrize("value", [0, -5, 2**40, "007", "123456789"])
def test_v1_id_values_accepted(api: Api, value: Any) -> None:
    """Any JSON integer, or a string of digits, is a good `_id`."""
    pushed(api.push({"_id": value, "v": 1}, version="v1"))
    expected = int(value)
    assert api.rows() == [{"_id": expected, "v": 1}]


def test_v1_keys_field_is_ignored(api: Api) -> None:
    """A `keys` field in a v1 data point is ignored: not a key, not a column, not validated."""
    pushed(api.push({"_id": 1, "keys": ["a"], "a": "x"}, version="v1"))
    pushed(api.push({"_id": 2, "keys": "garbage", "a": "y"}, version="v1"))
    body = pushed(api.push({"_id": 1, "keys": ["b"], "a": "z"}, version="v1"))
    assert (body["inserted"], body["replaced"]) == (0, 1)
    assert key_fields(api) == ["_id"]
    assert kinds(api) == {"_id": "integer", "a": "text"}
    assert api.rows(order="_id") == [{"_id": 1, "a": "z"}, {"_id": 2, "a": "y"}]


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "point",
    [
        {"a": 1},
        {"_id": None},
        {"_id": "abc"},
        {"_id": "-1"},
        {"_id": "1.5"},
        {"_id": ""},
        {"_id": " 1"},
        {"_id": 1.5},
        {"_id": 1.0},
        {"_id": True},
        {"_id": {}},
        {"_id": [1]},
        {"_id": "١٢"},
    ],
    ids=[
        "missing",
        "null",
        "letters",
        "minus-string",
        "decimal-string",
        "empty",
        "space",
        "float",
        "float-integral",
        "bool",
        "object",
        "array",
        "arabic-digits",
    ],
)
def test_v1_missing_or_bad_id_is_400(api: Api, point: dict[str, Any]) -> None:
    """A v1 data point without an integer `_id` is a 400 naming it, and nothing is stored."""
    reasons = error_reasons(api.push([{"_id": 1}, {**point, "v": 1}], version="v1"), 400)
    assert len(reasons) == 1 and re.search(r"\b1\b", reasons[0])
    assert user_tables(api) == []


def test_v1_is_otherwise_v2(api: Api) -> None:
    """Everything else is as in v2: the same table rules, column types, limits, and a v2 push
    naming `_id` as its key field reaches the same rows."""
    error_reasons(api.push({"_id": 1}, table="a-b", version="v1"), 400)
    error_reasons(api.push([{"_id": n} for n in range(101)], version="v1"), 400)
    pushed(api.push({"_id": 1, "n": 1, "o": {"x": 1}}, table="Things", version="v1"))
    assert kinds(api, "things") == {"_id": "integer", "n": "integer", "o": "json"}
    body = pushed(api.push({"keys": ["_id"], "_id": 1, "n": 2}, table="things"))
    assert (body["inserted"], body["replaced"]) == (0, 1)
    error_reasons(api.push({"keys": ["n"], "_id": 1, "n": 2}, table="things"), 400)


def _v1_requests(api: Api) -> list[tuple[int, httpx.Response]]:
    v1 = f"/v1/client/{api.client_id}"
    return [
        (200, api.http.get(f"{v1}/authenticate?apikey={api.key}")),
        (401, api.http.get(f"{v1}/authenticate?apikey=wrong")),
        (201, api.http.post(api.url(version="v1"), json={"_id": 1})),
        (201, api.http.put(api.url(version="v1"), json={"_id": 1})),
        (400, api.http.post(api.url(version="v1"), json={"a": 1})),
        (400, api.http.post(api.url("a-b", version="v1"), json={"_id": 1})),
        (401, api.http.post(api.url(version="v1", key="wrong"), json={"_id": 1})),
        (404, api.http.get("/v1/client/abc/authenticate")),
        (404, api.http.get(f"{v1}/table/orders")),
        (405, api.http.get(api.url(version="v1"))),
        (415, api.http.post(api.url(version="v1"), content=b"{}", headers={"Content-Encoding": "br"})),
        (201, api.http.post(api.url(version="v1", sandbox=True), json={"_id": 2})),
    ]


@pytest.mark.backends("sqlite")
def test_every_v1_answer_carries_a_deprecation_header(api: Api) -> None:
    """Every v1 answer, errors included, has a Deprecation header (RFC 9745: `@` and a Unix
    time); no v2 answer has one."""
    for status, r in _v1_requests(api):
        envelope(r, status)
        assert re.fullmatch(r"@-?\d+", r.headers.get("deprecation", "")), (status, r.request.url)
    for status, r in [
        (200, api.http.get(auth_url(api, api.key))),
        (201, api.push(EXAMPLE_1, table="v2_table")),
        (400, api.push([])),
        (401, api.http.get(auth_url(api, "wrong"))),
        (404, api.http.get("/v2/client/abc/authenticate")),
        (405, api.http.get(api.url())),
        (200, api.http.get("/")),
    ]:
        envelope(r, status)
        assert "deprecation" not in r.headers
