"""Isolation: one client's key can never read, write, create or alter anything of another.

Two clients, each with data in a table of the same name. Client A's key (and keys forged
from it) is tried on every route, every version, the sandbox by prefix and by host, in the
query and in the header, with every method; each attempt on client B is a 401 and B's
warehouse and key records are exactly as they were. A's own pushes land in A's warehouse
only. Nothing a key can reach answers with data, and the service routes carry no client.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.helpers import Api

ROUTES = [
    "/{v}/client/{cid}/authenticate",
    "/{v}/client/{cid}/table/orders/data",
    "/{v}/client/{cid}/table/brand_new/data",
]
BODIES = {
    "v2": [{"keys": ["id"], "id": 1, "owner": "A", "extra_column": True}],
    "v1": [{"_id": 1, "owner": "A", "extra_column": True}],
}


@dataclass
class Two:
    api: Api
    a: int
    key_a: str
    b: int
    key_b: str


@pytest.fixture
def two(api: Api) -> Iterator[Two]:
    b = api.storage.create_client("B")
    _, key_b = api.storage.catalog.create_key(b.client_id)
    t = Two(api, api.client_id, api.key, b.client_id, key_b)
    for cid, key, owner in ((t.a, t.key_a, "A"), (t.b, t.key_b, "B")):
        r = api.http.post(
            f"/v2/client/{cid}/table/orders/data?apikey={key}", json={"keys": ["id"], "id": 1, "owner": owner}
        )
        assert r.status_code == 201, r.text
        r = api.http.post(f"/v1/client/{cid}/table/legacy/data?apikey={key}", json={"_id": 1, "owner": owner})
        assert r.status_code == 201, r.text
    yield t


def warehouse(api: Api, client_id: int) -> dict[str, Any]:
    """Everything of a client: tables with schemas and rows, and its keys' records."""
    tables = {}
    for info in api.storage.warehouse.tables(client_id):
        order = ", ".join(f'"{k}"' for k in info.schema.key_fields)
        rows = api.storage.warehouse.query(client_id, f'SELECT * FROM "{info.schema.name}" ORDER BY {order}')
        tables[info.schema.name] = (info.as_dict()["columns"], rows)
    keys = [k.as_dict() for k in api.storage.catalog.list_keys(client_id)]
    return {"tables": tables, "keys": keys}


def forged_keys(two: Two) -> list[str]:
    """A's key, and keys built from A's and B's parts: none is a key of B."""
    _, id_a, secret_a = two.key_a.split("_", 2)
    _, id_b, secret_b = two.key_b.split("_", 2)
    other_last = "B" if secret_b.endswith("A") else "A"  # B's secret with its last character changed
    return [
        two.key_a,
        f"imp_{id_b}_{secret_a}",
        f"imp_{id_b}_{secret_b[:-1]}{other_last}",
        f"imp_{id_b}_",
        f"imp_{id_b}_{secret_b}"[:-2],
        f"imp_{id_a}_{secret_b}",
        id_b,
        secret_b,
    ]


def attempts(two: Two) -> Iterator[tuple[str, str, dict[str, str], Any]]:
    """(method, url, headers, body) for every way of reaching client B without B's key."""
    for key, version, route in itertools.product(forged_keys(two), ("v2", "v1"), ROUTES):
        for prefix, host in (("", "testserver"), ("/sandbox", "testserver"), ("", "sandbox-x.example")):
            path = prefix + route.format(v=version, cid=two.b)
            for cid_text in (str(two.b), f"000{two.b}"):
                path_variant = path.replace(f"/client/{two.b}/", f"/client/{cid_text}/")
                methods = ("GET", "HEAD") if route.endswith("authenticate") else ("POST", "PUT")
                for method in methods:
                    yield method, f"{path_variant}?apikey={key}", {"host": host}, BODIES[version]
                    yield (
                        method,
                        path_variant,
                        {"host": host, "authorization": f"Bearer {key}"},
                        BODIES[version],
                    )


def test_no_key_but_bs_own_reaches_b_on_any_route(two: Two) -> None:
    api = two.api
    before = warehouse(api, two.b)
    tried = 0
    for method, url, headers, body in attempts(two):
        r = api.http.request(method, url, headers=headers, json=body if method in ("POST", "PUT") else None)
        assert r.status_code == 401, (method, url, headers, r.text)
        if method != "HEAD":
            assert r.json()["code"] == 401 and "owner" not in r.text
        tried += 1
    assert tried > 500
    assert warehouse(api, two.b) == before


def test_a_keys_own_pushes_land_in_its_warehouse_only(two: Two) -> None:
    api = two.api
    before_b = warehouse(api, two.b)
    # v2 tables are keyed by "id", v1 tables by "_id"
    for version, table in (("v2", "orders"), ("v2", "brand_new"), ("v1", "legacy"), ("v1", "brand_new_v1")):
        r = api.http.put(
            f"/{version}/client/{two.a}/table/{table}/data?apikey={two.key_a}", json=BODIES[version]
        )
        assert r.status_code == 201, r.text
    assert warehouse(api, two.b) == before_b
    a_tables = {t.schema.name for t in api.storage.warehouse.tables(two.a)}
    assert {"orders", "brand_new", "legacy", "brand_new_v1"} <= a_tables
    assert {t.schema.name for t in api.storage.warehouse.tables(two.b)} == {"orders", "legacy"}


def test_a_revoked_key_reaches_nothing_and_the_others_still_work(two: Two) -> None:
    api = two.api
    _, spare = api.storage.catalog.create_key(two.b)
    api.storage.catalog.revoke_key(spare.split("_")[1])
    before = warehouse(api, two.b)
    r = api.http.post(f"/v2/client/{two.b}/table/orders/data?apikey={spare}", json=BODIES["v2"])
    assert r.status_code == 401
    assert warehouse(api, two.b) == before
    ok = api.http.post(
        f"/v2/client/{two.b}/table/orders/data?apikey={two.key_b}",
        json={"keys": ["id"], "id": 2, "owner": "B"},
    )
    assert ok.status_code == 201


def test_no_route_answers_with_stored_data_or_another_clients_identity(two: Two) -> None:
    api = two.api
    marker = "B-only-secret-value"
    r = api.http.post(
        f"/v2/client/{two.b}/table/orders/data?apikey={two.key_b}",
        json={"keys": ["id"], "id": 7, "owner": marker},
    )
    assert r.status_code == 201
    paths = ("/", "/ready", "/metrics", "/openapi.json", "/sandbox/", f"/v2/client/{two.b}/authenticate")
    answers = [api.http.get(f"{path}?apikey={key}") for path in paths for key in (two.key_a, two.key_b)]
    answers += [
        api.http.request(method, f"/v2/client/{two.b}/table/orders/data?apikey={two.key_b}")
        for method in ("GET", "HEAD", "DELETE", "PATCH", "OPTIONS")
    ]
    for answer in answers:
        assert marker not in answer.text
        assert "owner" not in answer.text
    metrics = api.http.get("/metrics").text
    # no label names a client, table or key, and no value is one (refusal codes are bounded words)
    assert not re.search(r'[{,](client|client_id|table|key|key_id)="', metrics), metrics
    assert "orders" not in metrics and two.key_b.split("_")[1] not in metrics


def test_keys_are_compared_in_constant_time_on_the_request_path(
    two: Two, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key check ends in hmac.compare_digest of two SHA-256 digests, never ``==``."""
    import hmac

    from importapi import apikeys

    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", recording)
    api = two.api
    forged = forged_keys(two)[1]  # B's key id with A's secret: found by id, refused by digest
    assert api.http.get(f"/v2/client/{two.b}/authenticate?apikey={forged}").status_code == 401
    assert api.http.get(f"/v2/client/{two.b}/authenticate?apikey={two.key_b}").status_code == 200
    assert len(compared) == 2 and all(len(a) == len(b) == 32 for a, b in compared)
