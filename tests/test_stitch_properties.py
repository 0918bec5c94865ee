"""Properties of sequences and table versions, on both backends: for any arrival order of
batches with sequences, versions and activations, the table equals a model that applies
the records one by one (a row is replaced only by a record of a sequence not lower, or of a newer version;
records of a version older than the table's are stale; activating a version deletes the
rows of older ones), and sending a batch again (a retry) changes nothing."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Api, make_api

SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}, "v": {"type": ["null", "string"]}}}
_tables = itertools.count()

records = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6), st.text("abc", max_size=2)), max_size=8)
batches = st.lists(
    st.tuples(st.sampled_from([None, 1, 2, 3]), st.booleans(), records), min_size=1, max_size=6
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def warehouse_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from tests.backends import warehouse

    with warehouse(request.param, tmp_path_factory.mktemp("stitch-props")) as url:
        yield from make_api(url)


def body(table: str, version: int | None, activate: bool, recs: list[tuple[int, int, str]]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"action": "upsert", "sequence": seq, "data": {"id": key, "v": value}} for key, seq, value in recs
    ]
    if activate:
        messages.append({"action": "activate_version", "sequence": 0})
    out: dict[str, Any] = {"table_name": table, "schema": SCHEMA, "key_names": ["id"], "messages": messages}
    if version is not None:
        out["table_version"] = version
    return out


def model(
    batches: list[tuple[int | None, bool, list[tuple[int, int, str]]]],
) -> dict[int, tuple[int, int | None, str]]:
    rows: dict[int, tuple[int, int | None, str]] = {}
    active: int | None = None
    for version, activate, recs in batches:
        if activate and version is None:
            continue  # refused: an activation needs the batch's version
        if not recs and not activate:
            continue  # refused: a batch has at least one message
        for key, seq, value in recs:
            if version is not None and active is not None and version < active:
                continue  # stale: an older version than the table's
            held = rows.get(key)
            newer_version = version is not None and (held is None or held[1] is None or held[1] < version)
            if held is None or seq >= held[0] or newer_version:
                rows[key] = (seq, version, value)
        if activate and (active is None or version > active):  # type: ignore[operator]
            active = version
            rows = {k: r for k, r in rows.items() if r[1] is not None and r[1] >= active}
    return rows


def table_rows(api: Api, table: str) -> dict[int, tuple[int, int | None, str]]:
    if table not in {t.schema.name for t in api.storage.warehouse.tables(api.client_id)}:
        return {}
    columns, found = api.storage.warehouse.read_rows(api.client_id, table)
    rows = (dict(zip(columns, r)) for r in found)
    return {r["id"]: (r["_sdc_sequence"], r["_sdc_table_version"], r.get("v") or "") for r in rows}


def send(api: Api, payload: dict[str, Any]) -> int:
    r = api.http.post(
        "/v2/import/batch",
        content=json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"},
    )
    return r.status_code


@given(batches)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_table_is_the_model_for_any_arrival_order(warehouse_api: Api, sent: Any) -> None:
    table = f"t{next(_tables)}"
    for version, activate, recs in sent:
        status = send(warehouse_api, body(table, version, activate, recs))
        ok = (recs or activate) and not (activate and version is None)
        assert status == (201 if ok else 400)
    expected = {k: (seq, version, value) for k, (seq, version, value) in model(sent).items()}
    assert table_rows(warehouse_api, table) == expected


@given(batches)
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_batch_sent_again_changes_nothing(warehouse_api: Api, sent: Any) -> None:
    """What a client does when an answer was lost: it sends the same batch again."""
    table = f"t{next(_tables)}"
    for version, activate, recs in sent:
        send(warehouse_api, body(table, version, activate, recs))
        before = table_rows(warehouse_api, table)
        send(warehouse_api, body(table, version, activate, recs))
        assert table_rows(warehouse_api, table) == before
