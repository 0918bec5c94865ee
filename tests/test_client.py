"""``importapi.client``: the sync and async clients against the real app in process and the
real server process, with faults injected in front of them (never a mocked transport)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from importapi.client import AsyncClient, Client, PushFailed, PushRefused, Retry
from importapi.client._batching import Batcher, batches
from importapi.client._core import Reply, Send, Wait, bases, exchange
from importapi.client._retry import parse_retry_after
from importapi.settings import Limits
from tests.faults import FaultProxy, Faults, LoopTransport, faulty
from tests.helpers import EXAMPLE_2, Api, Server, make_api, start_server, stop_server

FAST = Retry(attempts=3, backoff=0.001, max_backoff=0.01)
# The client's own work (cutting requests, gzip, retries, naming the records of a refusal the
# server's validation made) does not depend on the warehouse: those tests run on SQLite. What
# concurrent requests leave stored runs on every backend.


def rows(n: int, start: int = 0, **extra: Any) -> Iterator[dict[str, Any]]:
    for i in range(start, start + n):
        yield {"keys": ["id"], "id": i, "name": f"customer {i}", "amount": i + 0.5, **extra}


def client_for(api: Api, faults: Faults | None = None, **kw: Any) -> Client:
    app = api.http.app if faults is None else faulty(api.http.app, faults)
    kw.setdefault("retry", FAST)
    return Client(
        api.client_id, api.key, url="http://testserver", transport=LoopTransport(app, api.http.loop), **kw
    )


def async_client_for(api: Api, faults: Faults | None = None, **kw: Any) -> AsyncClient:
    app = api.http.app if faults is None else faulty(api.http.app, faults)
    kw.setdefault("retry", FAST)
    return AsyncClient(
        api.client_id, api.key, url="http://testserver", transport=httpx.ASGITransport(app=app), **kw
    )


def count(api: Api, table: str = "orders") -> int:
    return int(api.storage.warehouse.query(api.client_id, f'SELECT count(*) FROM "{table}"')[1][0][0])


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("client")
    server = start_server(folder / "warehouse", folder / "server.log", {"IMPORTAPI_ACCESS_LOG": "0"})
    yield server
    stop_server(server)


# --- the original client's names -----------------------------------------------------------

LEGACY_SNIPPET = """
import json, sys
from importapi.client import Client

client_id, api_key = int(sys.argv[1]), sys.argv[2]
test_data = json.load(sys.stdin)

client = Client(client_id, api_key)
if client.authenticate():
    responses = client.push_data(
        "table_name",
        test_data
    )
    sandbox = client.push_data(
        "table_name",
        test_data,
        Client.SANDBOX_BASE
    )
    bad = Client(client_id, "imp_000000000000_wrong").authenticate()
    print(json.dumps({
        "statuses": [r.status_code for r in responses],
        "bodies": [r.json() for r in responses],
        "sandbox": [r.json() for r in sandbox],
        "bad_key_authenticates": bad,
        "bases": [Client.API_BASE, Client.SANDBOX_BASE],
    }))
"""


def test_code_written_for_the_original_client_runs_by_changing_only_the_import(real_server: Server) -> None:
    # The seed's snippets, with ``from rjmetrics.client`` changed to ``from importapi.client``;
    # the server's address comes from the environment, as the hosted one came built in.
    env = {**os.environ, "IMPORTAPI_URL": real_server.base}
    done = subprocess.run(
        [sys.executable, "-c", LEGACY_SNIPPET, "1", real_server.key],
        input=json.dumps(EXAMPLE_2),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["statuses"] == [201]
    assert out["bodies"][0]["inserted"] == 2 and out["bodies"][0]["replaced"] == 1
    assert out["sandbox"][0]["sandbox"] is True
    assert out["bad_key_authenticates"] is False
    assert out["bases"] == [f"{real_server.base}/v2", f"{real_server.base}/sandbox/v2"]


def test_constructor_checks_its_arguments_as_the_original_did() -> None:
    with pytest.raises(ValueError, match="must be an integer"):
        Client("1", "imp_x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a string"):
        Client(1, 12)  # type: ignore[arg-type]


def test_bases_come_from_a_url_argument() -> None:
    with Client(1, "k", url="http://example.test:9000/") as client:
        assert (client.API_BASE, client.SANDBOX_BASE) == (
            "http://example.test:9000/v2",
            "http://example.test:9000/sandbox/v2",
        )
    assert bases("http://h/v2") == ("http://h/v2", "http://h/sandbox/v2")


def test_authenticate(api: Api) -> None:
    with client_for(api) as good:
        assert good.authenticate() is True
    with Client(
        api.client_id,
        "imp_000000000000_nope",
        url="http://testserver",
        transport=LoopTransport(api.http.app, api.http.loop),
    ) as bad:
        assert bad.authenticate() is False


# --- what can be pushed, and how it is cut into requests --------------------------------------


def test_one_dict_a_list_and_a_generator(api: Api) -> None:
    with client_for(api) as client:
        one = client.push_data("orders", {"keys": ["id"], "id": 1, "status": "pending"})
        many = client.push_data("orders", EXAMPLE_2)
        streamed = client.push_data("orders", rows(250, start=10))
    assert (one.requests, one.inserted) == (1, 1)
    assert (many.inserted, many.replaced) == (1, 2)
    assert (streamed.requests, streamed.records, streamed.inserted) == (3, 250, 250)
    assert [a.json()["inserted"] for a in streamed] == [100, 100, 50]
    assert count(api) == 252


@pytest.mark.backends("sqlite")
def test_a_string_or_a_number_is_not_data(api: Api) -> None:
    with client_for(api) as client:
        for wrong in ("not records", b"bytes", 42):
            with pytest.raises(ValueError, match="must be a dict or an iterable"):
                client.push_data("orders", wrong)


@pytest.mark.backends("sqlite")
def test_empty_data_sends_nothing(api: Api) -> None:
    faults = Faults()
    with client_for(api, faults) as client:
        summary = client.push_data("orders", [])
    assert not summary and list(summary) == [] and faults.seen == []


@pytest.mark.backends("sqlite")
def test_requests_hold_at_most_max_points(api: Api) -> None:
    faults = Faults()
    with client_for(api, faults, max_points=7) as client:
        summary = client.push_data("orders", rows(30))
    assert summary.requests == 5
    assert [a.json()["inserted"] for a in summary] == [7, 7, 7, 7, 2]


def test_requests_stay_under_the_byte_limit(data_dir: Path) -> None:
    # The server's own limit is tight here: a request over it would be a 413.
    limit = 2000
    for api in make_api(data_dir, Limits(max_body_bytes=limit)):
        faults = Faults()
        with client_for(api, faults, max_bytes=limit) as client:
            summary = client.push_data("orders", rows(200, note="x" * 150))
        sizes = [s.body_bytes for s in faults.data_requests()]
        assert summary.records == 200 and count(api) == 200
        assert max(sizes) <= limit
        assert len(sizes) > 200 * 200 // limit  # cut by bytes, long before 100 data points


@pytest.mark.backends("sqlite")
def test_big_records_fill_requests_up_to_the_default_5_mib(api: Api) -> None:
    faults = Faults()
    big = ({"keys": ["id"], "id": i, "blob": "b" * (1024 * 1024)} for i in range(11))
    with client_for(api, faults) as client:
        summary = client.push_data("blobs", big)
    sizes = [s.body_bytes for s in faults.data_requests()]
    assert summary.records == 11 and sizes and max(sizes) <= 5 * 1024 * 1024
    assert [a.json()["inserted"] for a in summary] == [4, 4, 3]


def test_a_record_bigger_than_any_request_goes_alone_and_is_refused(data_dir: Path) -> None:
    records = [*rows(3), {"keys": ["id"], "id": 99, "blob": "b" * 3000}, *rows(2, start=3)]
    for api in make_api(data_dir, Limits(max_body_bytes=2000)):
        faults = Faults()
        with (
            client_for(api, faults, max_bytes=2000, concurrency=1) as client,
            pytest.raises(PushRefused) as refused,
        ):
            client.push_data("orders", records)
        assert refused.value.status == 413
        assert refused.value.records == range(3, 4)
        assert refused.value.summary.acknowledged == 3
        assert [s.fault for s in faults.data_requests()] == ["pass", "pass"]


def test_batcher_cuts_by_count_in_input_order() -> None:
    batcher = Batcher(max_points=3, max_bytes=10_000)
    cut = list(batches(({"keys": ["id"], "id": i} for i in range(7)), batcher))
    assert [(b.first, b.count) for b in cut] == [(0, 3), (3, 3), (6, 1)]
    assert json.loads(cut[2].body) == [{"keys": ["id"], "id": 6}]
    one = list(batches(({"id": i} for i in range(3)), Batcher(max_points=1, max_bytes=10)))
    assert [(b.first, b.count) for b in one] == [(0, 1), (1, 1), (2, 1)]


@pytest.mark.backends("sqlite")
def test_gzip_compressed_requests(api: Api) -> None:
    faults = Faults()
    with client_for(api, faults, gzip=True) as client:
        summary = client.push_data("orders", rows(150, note="same text " * 10))
    seen = faults.data_requests()
    assert {s.content_encoding for s in seen} == {"gzip"}
    assert summary.inserted == 150 and count(api) == 150


def test_with_many_requests_in_flight_later_records_still_win(api: Api) -> None:
    # 40 keys written 50 times each, spread over many requests: the last write of each key
    # must be the one that stays, whatever order concurrent requests finish in.
    data = ({"keys": ["id"], "id": i % 40, "seq": i} for i in range(2000))
    with client_for(api, concurrency=8, max_points=10) as client:
        summary = client.push_data("orders", data)
    assert summary.requests == 200 and summary.acknowledged == 2000
    _, stored = api.storage.warehouse.query(api.client_id, "SELECT id, seq FROM orders ORDER BY id")
    assert stored == [(i, 1960 + i) for i in range(40)]


def test_a_slow_request_is_not_overtaken_by_a_later_write_of_the_same_keys(api: Api) -> None:
    # The server holds the first request back until a later one is answered: a client that
    # sent the second batch (the same keys) meanwhile would see its newer values overwritten.
    faults = Faults("hold")
    data = [{"keys": ["id"], "id": i % 10, "seq": i} for i in range(20)]
    with client_for(api, faults, concurrency=4, max_points=10) as client:
        client.push_data("orders", data)
    _, stored = api.storage.warehouse.query(api.client_id, "SELECT id, seq FROM orders ORDER BY id")
    assert stored == [(i, 10 + i) for i in range(10)]


def test_sandbox_checks_and_stores_nothing(api: Api) -> None:
    with client_for(api) as client:
        summary = client.push_data("orders", EXAMPLE_2, client.SANDBOX_BASE)
    assert summary.sandbox is True and summary.inserted == 2
    assert api.storage.warehouse.tables(api.client_id) == []


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.backends("sqlite")
def test_a_refused_request_names_the_input_records_it_held(api: Api) -> None:
    data = list(rows(250))
    data[153] = {"keys": ["id"], "name": "no id"}
    faults = Faults()
    with client_for(api, faults, concurrency=1) as client, pytest.raises(PushRefused) as caught:
        client.push_data("orders", iter(data))
    err = caught.value
    assert (err.status, err.message) == (400, "Bad Request")
    assert err.records == range(100, 200)
    assert err.points == {153: ["key field 'id' is missing"]}
    assert err.reasons == ["data point 53: key field 'id' is missing"]
    assert err.summary.acknowledged == 100
    assert count(api) == 100  # nothing of the refused request, and it stopped there
    assert len(faults.data_requests()) == 2  # no retry, and nothing after it


@pytest.mark.backends("sqlite")
def test_a_refusal_with_requests_in_flight_still_reports_the_earliest(api: Api) -> None:
    data = list(rows(1000))
    data[437] = {"keys": ["id"], "id": None}
    with client_for(api, concurrency=4) as client, pytest.raises(PushRefused) as caught:
        client.push_data("orders", data)
    assert caught.value.records == range(400, 500)
    assert list(caught.value.points) == [437]
    assert caught.value.summary.acknowledged == 400


@pytest.mark.backends("sqlite")
def test_503_and_429_are_retried_and_400_is_not(api: Api) -> None:
    data = list(rows(300))
    data[250] = {"keys": ["id"], "id": {"not": "a key value"}}
    faults = Faults("503", "429", "pass", "503")
    with client_for(api, faults, concurrency=1) as client, pytest.raises(PushRefused) as caught:
        client.push_data("orders", data)
    # request 1: 503, 429, stored; request 2: 503, stored; request 3: refused once, not retried
    assert [s.fault for s in faults.data_requests()] == ["503", "429", "pass", "503", "pass", "pass"]
    assert caught.value.status == 400 and caught.value.records == range(200, 300)
    assert caught.value.summary.retries == 3 and caught.value.summary.acknowledged == 200
    assert count(api) == 200


@pytest.mark.backends("sqlite")
def test_retries_run_out(api: Api) -> None:
    faults = Faults("pass", *["503"] * 10)
    with client_for(api, faults, concurrency=1) as client, pytest.raises(PushFailed) as caught:
        client.push_data("orders", rows(150))
    assert caught.value.status == 503 and caught.value.records == range(100, 150)
    assert caught.value.summary.acknowledged == 100
    assert len(faults.data_requests()) == 1 + 1 + FAST.attempts


def test_no_server_at_all_is_a_push_failed(tmp_path: Path) -> None:
    from tests.helpers import free_port

    with (
        Client(1, "k", url=f"http://127.0.0.1:{free_port()}", retry=FAST) as client,
        pytest.raises(PushFailed) as caught,
    ):
        client.push_data("orders", rows(5))
    assert caught.value.status == 0 and "Connect" in caught.value.reasons[0]


# --- the retry policy (pure) -------------------------------------------------------------


def test_retry_after_is_honoured_in_seconds_or_as_a_date() -> None:
    policy = Retry(backoff=0.25, max_backoff=30, max_retry_after=120)
    assert policy.delay(0, "7") == 7
    assert policy.delay(5, "1000") == 120
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now=784111767.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_doubles_with_jitter_up_to_a_ceiling() -> None:
    policy = Retry(backoff=1, max_backoff=8)
    rng = random.Random(7)
    for retry, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (10, 8)]:
        waits = [policy.delay(retry, None, rng) for _ in range(200)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling / 4  # jitter: not all the same


def test_a_429_with_retry_after_makes_the_request_wait_that_long() -> None:
    steps = exchange(Send("POST", "http://x/data", {}), Retry(attempts=2))
    assert isinstance(steps.send(None), Send)
    assert steps.send(Reply(429, b"{}", "7")) == Wait(7.0)
    assert isinstance(steps.send(None), Send)
    with pytest.raises(StopIteration) as done:
        steps.send(Reply(201, b"{}"))
    assert done.value.value[1] == 1


# --- the async client shares all of it -----------------------------------------------------


async def arows(n: int) -> AsyncIterator[dict[str, Any]]:
    for record in rows(n):
        await asyncio.sleep(0)
        yield record


def test_async_client_pushes_lists_generators_and_async_generators(api: Api) -> None:
    async def go() -> list[Any]:
        async with async_client_for(api) as client:
            assert await client.authenticate()
            return [
                await client.push_data("orders", EXAMPLE_2),
                await client.push_data("orders", rows(150, start=100)),
                await client.push_data("orders", arows(120)),
                await client.push_data("orders", EXAMPLE_2, client.SANDBOX_BASE),
            ]

    listed, streamed, async_streamed, sandbox = asyncio.run(go())
    assert (listed.inserted, listed.replaced) == (2, 1)
    assert (streamed.requests, streamed.inserted) == (2, 150)
    assert (async_streamed.requests, async_streamed.records) == (2, 120)
    assert sandbox.sandbox and sandbox.replaced == 3
    assert count(api) == 250


@pytest.mark.backends("sqlite")
def test_async_client_retries_and_refuses_the_same_way(api: Api) -> None:
    faults = Faults("429", "503")
    data = list(rows(300))
    data[250] = {"keys": ["id"]}

    async def go() -> PushRefused:
        async with async_client_for(api, faults, concurrency=2) as client:
            with pytest.raises(PushRefused) as caught:
                await client.push_data("orders", data)
            return caught.value

    err = asyncio.run(go())
    assert err.records == range(200, 300) and list(err.points) == [250]
    assert err.summary.acknowledged == 200 and err.summary.retries == 2


# --- the real server process, with a real proxy injecting faults ----------------------------


def test_dropped_connections_are_retried_against_the_real_server(real_server: Server) -> None:
    # "drop": the request never reached the server; "drop-after": it was stored, and the
    # answer was lost, so the retry finds the rows already there (and replaces them).
    faults = Faults("drop", "pass", "drop-after", "503", "429")
    with (
        FaultProxy(real_server.base, faults) as proxy,
        Client(1, real_server.key, url=proxy.url, retry=FAST, concurrency=1) as client,
    ):
        summary = client.push_data("dropped", rows(300))
    assert summary.records == 300 and summary.retries == 4
    assert summary.inserted + summary.replaced == 300 and summary.replaced == 100
    assert [s.fault for s in faults.data_requests()] == [
        "drop",
        "pass",
        "drop-after",
        "503",
        "429",
        "pass",
        "pass",
    ]


def test_async_client_against_the_real_server_through_a_dropping_proxy(real_server: Server) -> None:
    faults = Faults("drop", "drop-after")

    async def go() -> Any:
        async with AsyncClient(1, real_server.key, url=proxy.url, retry=FAST) as client:
            return await client.push_data("adropped", arows(250))

    with FaultProxy(real_server.base, faults) as proxy:
        summary = asyncio.run(go())
    assert summary.records == 250 and summary.retries == 2 and summary.acknowledged == 250


def test_streaming_100000_records_from_a_generator_keeps_memory_bounded(real_server: Server) -> None:
    n = 100_000
    record_bytes = len(json.dumps(next(rows(1, start=n))))
    with Client(1, real_server.key, url=real_server.base) as client:
        tracemalloc.start()
        try:
            summary = client.push_data("streamed", rows(n), keep_answers=False)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert summary.records == n and summary.inserted == n and summary.acknowledged == n
    # The input is ~6 MB of JSON and would be ~40 MB as a list of dicts; the client holds
    # a few requests' worth at a time.
    assert n * record_bytes > 5_000_000
    assert peak < 3_000_000, f"peak {peak} bytes"


def test_the_readme_python_examples_run_as_written(real_server: Server) -> None:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text.split("## Pushing from Python and from files", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 3
    outputs = []
    for code in blocks:
        done = subprocess.run(
            [sys.executable, "-c", code.replace("imp_...", real_server.key)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "IMPORTAPI_URL": real_server.base},
        )
        assert done.returncode == 0, f"{code}\n{done.stderr}"
        outputs.append(done.stdout.split())
    requests, records, inserted, replaced, retries = map(int, outputs[1])
    assert (requests, records, inserted + replaced, retries) == (100, 10_000, 10_000, 0)
    assert outputs[2] == ["1"]
