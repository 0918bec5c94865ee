"""The activity window: what the observer records, that it stays off the request path and
bounded, and that every process sharing a warehouse feeds the same window."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from importapi.activity import ActivityRecorder
from importapi.app import create_app
from importapi.observe import RequestRecord
from importapi.settings import Settings
from importapi.storage import Storage, open_storage
from tests.helpers import EXAMPLE_2, InProcessClient, wait_until


@pytest.fixture
def served(data_dir: Path) -> Iterator[tuple[InProcessClient, Storage, ActivityRecorder, str]]:
    """The API with a recorder that writes only when told (a flush interval of a minute)."""
    storage = open_storage(str(data_dir))
    client = storage.create_client("shop")
    _, key = storage.catalog.create_key(client.client_id)
    recorder = ActivityRecorder(storage.catalog, keep=5, flush_seconds=60)
    api = create_app(Settings(database=str(data_dir), access_log=False), storage=storage, recorder=recorder)
    http = InProcessClient(api)
    yield http, storage, recorder, key
    http.close()
    api.close()


def test_pushes_and_refusals_are_recorded_and_nothing_else(
    served: tuple[InProcessClient, Storage, ActivityRecorder, str],
) -> None:
    http, storage, recorder, key = served
    ok = http.post(f"/v2/client/1/table/orders/data?apikey={key}", json=EXAMPLE_2)
    sandbox = http.post(f"/sandbox/v2/client/1/table/orders/data?apikey={key}", json=EXAMPLE_2)
    bad = http.post(f"/v2/client/1/table/Orders!/data?apikey={key}", json=EXAMPLE_2)
    no_key = http.post("/v2/client/1/table/orders/data", json=EXAMPLE_2)
    auth_fail = http.get("/v1/client/1/authenticate?apikey=nope")
    missing = http.get("/v2/client/1/nothing")
    for quiet in (
        http.get("/"),
        http.get(f"/v2/client/1/authenticate?apikey={key}"),
        http.get("/favicon.ico"),
    ):
        assert quiet.status_code in (200, 404)
    assert storage.catalog.recent_activity(10, refused=False) == []  # nothing written on the request path
    recorder.flush()
    pushes = storage.catalog.recent_activity(10, refused=False)
    assert [a.request_id for a in pushes] == [sandbox.headers["x-request-id"], ok.headers["x-request-id"]]
    first = pushes[1]
    assert (
        first.client_id,
        first.table,
        first.points,
        first.inserted,
        first.replaced,
        first.sandbox,
        first.status,
        first.route,
    ) == (1, "orders", 3, 2, 1, False, 201, "data")
    assert first.key_id == key.split("_")[1] and pushes[0].sandbox
    refusals = {a.request_id: a for a in storage.catalog.recent_activity(10, refused=True)}
    assert set(refusals) == {r.headers["x-request-id"] for r in (bad, no_key, auth_fail, missing)}
    assert refusals[bad.headers["x-request-id"]].reasons == bad.json()["reasons"]
    refused_key = refusals[no_key.headers["x-request-id"]]
    assert (refused_key.client_id, refused_key.table, refused_key.status) == (1, "orders", 401)
    assert refusals[auth_fail.headers["x-request-id"]].route == "authenticate"


def test_the_window_keeps_only_the_newest(
    served: tuple[InProcessClient, Storage, ActivityRecorder, str],
) -> None:
    http, storage, recorder, key = served
    ids = []
    for n in range(12):
        answer = http.post(f"/v2/client/1/table/orders/data?apikey={key}", json={"keys": ["id"], "id": n})
        ids.append(answer.headers["x-request-id"])
        if n == 6:
            recorder.flush()
    for _ in range(8):
        http.get("/v2/client/1/authenticate?apikey=bad")
    recorder.flush()
    assert [a.request_id for a in storage.catalog.recent_activity(100, refused=False)] == ids[::-1][:5]
    assert len(storage.catalog.recent_activity(100, refused=True)) == 5


def test_a_flood_between_flushes_is_bounded_in_memory(storage: Storage) -> None:
    recorder = ActivityRecorder(storage.catalog, keep=5, flush_seconds=60)
    try:
        storage.create_client("shop")
        api = create_app(Settings(database="unused", access_log=False), storage=storage, recorder=recorder)
        http = InProcessClient(api)
        try:
            for _ in range(100):
                http.get("/v2/client/1/authenticate?apikey=bad")
        finally:
            http.close()
        assert len(recorder._pending) == 20  # 4 x keep: the rest was older than the window needs
    finally:
        recorder.close()
    assert len(storage.catalog.recent_activity(100, refused=True)) == 5


def test_events_written_together_keep_each_its_own_second(storage: Storage) -> None:
    """A write's events keep the time each finished, to the second (the stamps are made
    once for each second, not once for each write)."""
    recorder = ActivityRecorder(storage.catalog, keep=10, flush_seconds=60)
    try:
        storage.create_client("shop")
        midnight = 1_764_633_600.0  # 2025-12-02T00:00:00Z
        for n, offset in enumerate([0.1, 0.9, 1.0, 1.5, 61.2]):
            req = RequestRecord("POST", "/v2/client/1/table/t/data", [])
            req.rid, req.route, req.client_id, req.status = f"r{n}", "data", 1, 201
            recorder._pending.append((midnight + offset, req))
        recorder.flush()
    finally:
        recorder.close()
    stamps = {a.request_id: a.at for a in storage.catalog.recent_activity(100, refused=False)}
    assert stamps == {
        "r0": "2025-12-02T00:00:00Z",
        "r1": "2025-12-02T00:00:00Z",
        "r2": "2025-12-02T00:00:01Z",
        "r3": "2025-12-02T00:00:01Z",
        "r4": "2025-12-02T00:01:01Z",
    }


def test_the_background_writer_records_without_being_asked(storage: Storage) -> None:
    storage.create_client("shop")
    recorder = ActivityRecorder(storage.catalog, flush_seconds=0.01)
    api = create_app(Settings(database="unused", access_log=False), storage=storage, recorder=recorder)
    http = InProcessClient(api)
    try:
        answer = http.get("/v2/client/1/authenticate?apikey=bad")
        recorded = wait_until(
            lambda: storage.catalog.recent_activity(1, refused=True), what="the background write"
        )
        assert recorded[0].request_id == answer.headers["x-request-id"]
    finally:
        http.close()
        recorder.close()


def test_closing_writes_what_is_still_queued(data_dir: Path) -> None:
    with open_storage(str(data_dir)) as storage:
        storage.create_client("shop")
        recorder = ActivityRecorder(storage.catalog, flush_seconds=60)
        api = create_app(
            Settings(database=str(data_dir), access_log=False), storage=storage, recorder=recorder
        )
        http = InProcessClient(api)
        http.get("/v2/client/1/authenticate?apikey=bad")
        http.close()
        recorder.close()
    with open_storage(str(data_dir)) as reopened:
        assert len(reopened.catalog.recent_activity(10, refused=True)) == 1


def test_every_process_feeds_the_same_window(data_dir: Path) -> None:
    """Two storages on one warehouse stand for two server processes."""
    with open_storage(str(data_dir)) as one, open_storage(str(data_dir)) as two:
        one.create_client("shop")
        for storage in (one, two):
            recorder = ActivityRecorder(storage.catalog, flush_seconds=60)
            api = create_app(
                Settings(database=str(data_dir), access_log=False), storage=storage, recorder=recorder
            )
            http = InProcessClient(api)
            http.get("/v2/client/1/authenticate?apikey=bad")
            http.close()
            recorder.close()
        assert len(one.catalog.recent_activity(10, refused=True)) == 2
        assert len(two.catalog.recent_activity(10, refused=True)) == 2
