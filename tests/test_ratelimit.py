"""Backpressure: per-key rate limits (429) and the bound on requests in progress (503), both
with Retry-After, both refusing before the body is read, both leaving nothing behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from importapi.app import create_app
from importapi.errors import Overloaded, TooManyRequests
from importapi.ratelimit import ConcurrencyLimit, RateLimiter
from importapi.settings import Settings
from importapi.storage import Storage
from tests.helpers import InProcessClient, in_process

POINT = {"keys": ["id"], "id": 1, "v": "x"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_one_request_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(2, burst=3, clock=clock)
    assert [limiter.wait_needed("k") for _ in range(3)] == [0, 0, 0]
    assert limiter.wait_needed("k") == pytest.approx(0.5)
    assert limiter.wait_needed("other") == 0  # buckets are per key
    clock.now += 0.5
    assert limiter.wait_needed("k") == 0
    assert limiter.wait_needed("k") > 0
    clock.now += 60
    assert [limiter.wait_needed("k") for _ in range(4)][:3] == [0, 0, 0]  # refilled to the burst, no more


def test_the_answer_says_when_to_come_back_in_whole_seconds() -> None:
    clock = Clock()
    limiter = RateLimiter(0.1, clock=clock)  # one request every 10 s
    limiter.check("k")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("k")
    assert refused.value.status == 429 and refused.value.retry_after == 10
    clock.now += 9.5
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("k")
    assert refused.value.retry_after == 1  # never 0


def test_rate_limits_are_off_by_default_and_a_zero_rate_is_off() -> None:
    assert Settings().rate_limit == 0
    limiter = RateLimiter(0)
    assert not limiter.enabled
    for _ in range(10_000):
        limiter.check("k")


def test_full_buckets_are_forgotten_when_there_are_too_many(monkeypatch: pytest.MonkeyPatch) -> None:
    from importapi import ratelimit

    monkeypatch.setattr(ratelimit, "MAX_BUCKETS", 10)
    clock = Clock()
    limiter = RateLimiter(1, burst=1, clock=clock)
    for i in range(10):
        limiter.check(f"k{i}")
    clock.now += 5  # every bucket has refilled
    limiter.check("new")
    assert len(limiter._buckets) == 1


def test_the_concurrency_bound_refuses_the_one_over_and_frees_its_slots() -> None:
    bound = ConcurrencyLimit(2)
    bound.enter()
    bound.enter()
    with pytest.raises(Overloaded) as refused:
        bound.enter()
    assert refused.value.status == 503 and refused.value.retry_after == 1
    bound.leave()
    bound.enter()
    assert bound.active == 2


# -- through the application ---------------------------------------------------------------
# Rate limits and the concurrency bound refuse before the body is read and the warehouse is
# asked anything, so one backend (SQLite) proves them.


@pytest.fixture
def limited(storage: Storage) -> Iterator[tuple[InProcessClient, int, str, str]]:
    client = storage.create_client("limited")
    _, key = storage.catalog.create_key(client.client_id)
    _, other = storage.catalog.create_key(client.client_id)
    with in_process(Settings(access_log=False, rate_limit=0.001, rate_burst=2), storage) as http:
        yield http, client.client_id, key, other


def rows(storage: Storage, client_id: int) -> list[Any]:
    if not storage.warehouse.tables(client_id):
        return []
    return storage.warehouse.query(client_id, 'SELECT id FROM "orders" ORDER BY id')[1]


@pytest.mark.backends("sqlite")
def test_a_key_over_its_rate_gets_429_with_retry_after_and_nothing_is_stored(
    limited: tuple[InProcessClient, int, str, str], storage: Storage
) -> None:
    http, cid, key, other = limited
    url = f"/v2/client/{cid}/table/orders/data?apikey="
    assert http.get(f"/v2/client/{cid}/authenticate?apikey={key}").status_code == 200  # counts too
    assert http.post(url + key, json=POINT).status_code == 201
    refused = http.post(url + key, json={**POINT, "id": 2})
    assert refused.status_code == 429
    body = refused.json()
    assert list(body)[:3] == ["code", "message", "reasons"] and body["code"] == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert rows(storage, cid) == [(1,)]
    # another key of the same client has a bucket of its own; a bad key is a 401, not a 429
    assert http.post(url + other, json={**POINT, "id": 3}).status_code == 201
    assert http.post(url + "imp_000000000000_nope", json=POINT).status_code == 401
    assert rows(storage, cid) == [(1,), (3,)]


@pytest.mark.backends("sqlite")
def test_without_a_rate_limit_a_burst_is_served(storage: Storage) -> None:
    client = storage.create_client("free")
    _, key = storage.catalog.create_key(client.client_id)
    with in_process(Settings(access_log=False), storage) as http:
        url = f"/v2/client/{client.client_id}/table/orders/data?apikey={key}"
        assert {http.post(url, json={**POINT, "id": i}).status_code for i in range(60)} == {201}


@pytest.mark.backends("sqlite")
def test_requests_over_the_concurrency_bound_get_503_and_the_held_ones_complete(storage: Storage) -> None:
    """Two pushes are held mid-body (the app is driven as a server drives it: through ASGI
    receive and send); a third request is refused at once, the status route still answers,
    and once the bodies arrive both held pushes are stored."""
    client = storage.create_client("busy")
    _, key = storage.catalog.create_key(client.client_id)
    app = create_app(Settings(access_log=False, max_concurrent=2), storage=storage)
    body = json.dumps(POINT).encode()

    async def scenario() -> tuple[list[int], int, str | None, int]:
        release = asyncio.Event()

        def request(method: str, path: str, held: bool) -> tuple[Any, Any, list[dict[str, Any]]]:
            scope = {
                "type": "http",
                "method": method,
                "path": path,
                "query_string": f"apikey={key}".encode(),
                "headers": [(b"host", b"x"), (b"content-length", str(len(body)).encode())],
            }
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                if held:
                    await release.wait()
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            return scope, (receive, send), sent

        path = f"/v2/client/{client.client_id}/table/orders/data"
        held = [request("POST", path, True) for _ in range(2)]
        tasks = [asyncio.create_task(app(scope, *io)) for scope, io, _ in held]
        while app.in_progress.active < 2:  # both held pushes are in the app  # noqa: ASYNC110
            await asyncio.sleep(0)
        over_scope, over_io, over_sent = request("POST", path, False)
        await app(over_scope, *over_io)
        status_scope, status_io, status_sent = request("GET", "/", False)
        await app(status_scope, *status_io)
        release.set()
        await asyncio.gather(*tasks)
        retry = dict(over_sent[0]["headers"]).get(b"retry-after")
        return (
            [s[0]["status"] for _, _, s in held],
            over_sent[0]["status"],
            retry.decode() if retry else None,
            status_sent[0]["status"],
        )

    try:
        held_statuses, over, retry_after, status = asyncio.run(scenario())
    finally:
        app.close(storage=False)
    assert held_statuses == [201, 201]
    assert over == 503 and retry_after == "1"
    assert status == 200
    assert app.in_progress.active == 0
    assert rows(storage, client.client_id) == [(1,)]


@pytest.mark.e2e
def test_the_real_server_answers_503_with_retry_after_when_at_its_bound(tmp_path: Any) -> None:
    import socket

    from tests.helpers import start_server, stop_server

    server = start_server(tmp_path / "warehouse", tmp_path / "server.log", {"IMPORTAPI_MAX_CONCURRENT": "2"})
    host, port = server.base.removeprefix("http://").split(":")
    url = f"{server.base}/v2/client/1/table/orders/data?apikey={server.key}"
    held: list[socket.socket] = []
    try:
        for _ in range(2):  # two pushes that send their headers and then hold their bodies
            s = socket.create_connection((host, int(port)), timeout=30)
            s.sendall(
                f"POST /v2/client/1/table/orders/data?apikey={server.key} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: 30\r\n\r\n{{".encode()
            )
            held.append(s)
        from tests.helpers import wait_until

        refused = wait_until(
            lambda: (r := httpx.post(url, json=POINT, timeout=10)).status_code == 503 and r,
            timeout=30,
            what="a 503 while two pushes are held",
        )
        assert refused.headers["retry-after"] == "1" and refused.json()["code"] == 503
        assert httpx.get(server.base + "/", timeout=10).status_code == 200
    finally:
        for s in held:
            s.close()
        stop_server(server)
