"""Observability: /metrics, /ready, and the structured access log of a full run.

The counters are read back with prometheus_client's own parser. Under ``--workers 2`` every
worker's /metrics answers the sum over both. The access log of a real server that was sent
every kind of request, keys in every place, is searched for any key: none may appear.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.soak import ProcessTarget
from importapi.errors import Code, Detail
from importapi.metrics import rejection_reason
from importapi.observe import RequestRecord
from tests.helpers import EXAMPLE_2, Api, Server, make_api, start_server, stop_server, wait_until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


# Rejections are labelled before the warehouse is touched, so their test runs on SQLite alone;
# counts of stored data points and readiness depend on the warehouse and run on every backend.


def test_metrics_count_requests_points_rejections_and_latency(api: Api) -> None:
    assert api.push(EXAMPLE_2).status_code == 201  # 2 inserted, 1 replaced
    assert api.push(EXAMPLE_2, sandbox=True).status_code == 201  # the sandbox stores nothing
    assert api.http.post(api.url(), content=b"{nope").status_code == 400
    assert api.http.post(api.url("bad-name"), json=EXAMPLE_2).status_code == 400
    assert api.push(EXAMPLE_2, key="imp_000000000000_wrong").status_code == 401
    assert api.http.get("/nowhere").status_code == 404
    assert api.http.get("/").status_code == 200
    r = api.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert metric(text, "importapi_requests_total", route="data", status="201") == 2
    assert metric(text, "importapi_requests_total", route="data", status="400") == 2
    assert metric(text, "importapi_requests_total", route="data", status="401") == 1
    assert metric(text, "importapi_requests_total", route="other", status="404") == 1
    assert metric(text, "importapi_requests_total", route="status", status="200") == 1
    assert metric(text, "importapi_data_points_total", outcome="inserted") == 2
    assert metric(text, "importapi_data_points_total", outcome="replaced") == 1
    assert metric(text, "importapi_rejections_total", reason="body_not_json") == 1
    assert metric(text, "importapi_rejections_total", reason="table_name_invalid") == 1
    assert metric(text, "importapi_rejections_total", reason="api_key_invalid") == 1
    assert metric(text, "importapi_rejections_total", reason="not_found") == 1
    assert metric(text, "importapi_request_duration_seconds_count", route="data") == 5
    assert metric(text, "importapi_request_duration_seconds_bucket", route="data", le="+Inf") == 5
    assert metric(text, "importapi_storage_errors_total") == 0


def test_metrics_cover_the_stitch_routes(api: Api) -> None:
    auth = {"Authorization": f"Bearer {api.key}"}
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "ok": {"type": ["null", "boolean"]}},
    }

    def batch(*records: dict[str, object]) -> dict[str, object]:
        messages = [{"action": "upsert", "sequence": n, "data": r} for n, r in enumerate(records, 1)]
        return {"table_name": "orders", "schema": schema, "key_names": ["id"], "messages": messages}

    assert (
        api.http.post("/v2/import/batch", json=batch({"id": 1}, {"id": 2}), headers=auth).status_code == 201
    )
    assert (
        api.http.post("/v2/import/batch", json=batch({"id": 1, "ok": "yes"}), headers=auth).status_code == 400
    )
    pushed = [
        {
            "client_id": api.client_id,
            "action": "upsert",
            "table_name": "t",
            "sequence": 1,
            "key_names": ["id"],
            "data": {"id": 1},
        }
    ]
    assert api.http.post("/v2/import/push", json=pushed, headers=auth).status_code == 201
    assert api.http.get("/v2/import/status").status_code == 200
    text = api.http.get("/metrics").text
    assert metric(text, "importapi_requests_total", route="batch", status="201") == 1
    assert metric(text, "importapi_requests_total", route="batch", status="400") == 1
    assert metric(text, "importapi_requests_total", route="push", status="201") == 1
    assert metric(text, "importapi_requests_total", route="import_status", status="200") == 1
    assert metric(text, "importapi_rejections_total", reason="record_not_conforming") == 1
    assert metric(text, "importapi_data_points_total", outcome="inserted") == 3
    assert metric(text, "importapi_request_duration_seconds_count", route="batch") == 2


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "body",
    [
        b"{nope",
        b"\xff",
        b"[]",
        b"[" + b"{}," * 100 + b"{}]",
        b'{"id": 1}',
        b'[{"keys": ["id"], "id": 1}, 3]',
        b'{"keys": ["id"], "id": 1, "ID": 2}',
        b'{"keys": ["id"], "id": {"a": 1}}',
    ],
)
def test_rejections_are_labelled_by_the_code_of_their_first_problem(api: Api, body: bytes) -> None:
    """Whatever the refusal, its label is a documented code: a bounded set, never prose."""
    answer = api.http.post(api.url(), content=body)
    code = answer.json()["details"][0]["code"]
    assert answer.status_code == 400 and code in {c.value for c in Code}
    text = api.http.get("/metrics").text
    assert metric(text, "importapi_rejections_total", reason=code) == 1


def test_a_record_without_details_is_labelled_by_its_status() -> None:
    req = RequestRecord("POST", "/", [])
    req.status = 418
    assert rejection_reason(req) == "status_418"
    req.details = [Detail(Code.RATE_LIMITED, "slow down")]
    assert rejection_reason(req) == "rate_limited"


def test_storage_errors_and_readiness_follow_the_warehouse(data_dir: Path) -> None:
    """SQLite: the data folder disappears; status and readiness say 503, metrics count it."""
    for api in make_api(data_dir):
        ready = api.http.get("/ready")
        assert ready.status_code == 200 and ready.json() == {"code": 200, "message": "Ready"}
        assert not list(data_dir.glob(".ready-*"))  # the probe cleans up after itself
        data_dir.rename(data_dir.with_name("moved"))
        try:
            for path in ("/ready", "/"):
                r = api.http.get(path)
                assert r.status_code == 503 and r.json()["reasons"], r.text
        finally:
            data_dir.with_name("moved").rename(data_dir)
        assert api.http.get("/ready").status_code == 200
        text = api.http.get("/metrics").text
        assert metric(text, "importapi_storage_errors_total") == 2
        assert metric(text, "importapi_rejections_total", reason="storage_unavailable") == 2
        assert metric(text, "importapi_requests_total", route="ready", status="503") == 1


def test_readiness_answers_on_every_backend_and_only_to_get(api: Api) -> None:
    assert api.http.get("/ready").status_code == 200
    assert api.http.request("HEAD", "/ready").status_code == 200
    r = api.http.post("/ready")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert api.http.get("/sandbox/ready").status_code == 404


@pytest.mark.e2e
def test_with_two_workers_every_scrape_sums_both(tmp_path: Path) -> None:
    target = ProcessTarget(f"sqlite:///{tmp_path / 'warehouse'}", tmp_path / "server.log", workers=2)
    from importapi.storage import open_storage

    with open_storage(target.database) as storage:
        client = storage.create_client("c")
        _, key = storage.catalog.create_key(client.client_id)
    base = target.start()
    try:
        workers = wait_until(
            lambda: len(children(target.pid() or 0)) == 2 and children(target.pid() or 0),
            timeout=60,
            what="two workers",
        )
        folders = {environ(pid).get("PROMETHEUS_MULTIPROC_DIR") for pid in workers}
        assert len(folders) == 1 and None not in folders  # one shared folder, made by serve
        for i in range(40):  # a new connection each: the kernel spreads them over the workers
            r = httpx.post(
                f"{base}/v2/client/{client.client_id}/table/t/data?apikey={key}",
                json={"keys": ["id"], "id": i},
                headers={"connection": "close"},
            )
            assert r.status_code == 201
        folder = Path(folders.pop() or "")
        writers = {m.group(1) for f in folder.iterdir() if (m := re.search(r"_(\d+)\.db$", f.name))}
        assert writers == {str(p) for p in workers}, "both workers counted requests"
        for _ in range(6):
            text = httpx.get(f"{base}/metrics", headers={"connection": "close"}).text
            assert metric(text, "importapi_requests_total", route="data", status="201") == 40
            assert metric(text, "importapi_data_points_total", outcome="inserted") == 40
    finally:
        target.kill()


def children(pid: int) -> list[int]:
    """The server's worker processes (not multiprocessing's resource tracker)."""
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        pids = [int(c) for t in tasks for c in (t / "children").read_text().split()]
        return [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
    except OSError:
        return []


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


# -- the access log of a full run ------------------------------------------------------------


@pytest.fixture
def logged_server(tmp_path: Path) -> Iterator[Server]:
    """A server whose first client and key exist before it starts, so that the one place a
    key is printed by design (the first start's banner, on the terminal) is not in its output."""
    from importapi.storage import open_storage

    with open_storage(f"sqlite:///{tmp_path / 'warehouse'}") as storage:
        storage.create_client("first")
        _, key = storage.catalog.create_key(1)
    server = start_server(tmp_path / "warehouse", tmp_path / "server.log", {"IMPORTAPI_HEADER_TIMEOUT": "1"})
    assert server.key == ""
    server.key = key
    yield server
    stop_server(server)


STITCH_BATCH = {
    "table_name": "events",
    "schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
    "key_names": ["id"],
    "messages": [{"action": "upsert", "sequence": n, "data": {"id": n}} for n in (1, 2)],
}


def raw(server: Server, data: bytes) -> bytes:
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(data)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
        return received


def test_a_full_run_logs_one_json_line_per_request_and_never_a_key(logged_server: Server) -> None:
    from importapi.storage import open_storage

    server = logged_server
    with open_storage(f"sqlite:///{server.data_dir}") as storage:
        other = storage.create_client("other")
        _, other_key = storage.catalog.create_key(other.client_id)
        revoked_info, revoked = storage.catalog.create_key(1)
        storage.catalog.revoke_key(revoked_info.key_id)
    key = server.key
    made_up = "imp_0123456789ab_" + "Z" * 32
    keys = [key, other_key, revoked, made_up]
    base = server.base
    data = f"{base}/v2/client/1/table/orders/data"
    bearer = {"authorization": f"Bearer {key}"}
    ids: list[str] = []
    with httpx.Client() as http:
        calls = [
            http.get(f"{base}/"),
            http.get(f"{base}/ready"),
            http.get(f"{base}/metrics"),
            http.get(f"{base}/openapi.json"),
            *[http.get(f"{base}/v2/client/1/authenticate?apikey={k}") for k in keys],
            http.get(f"{base}/v2/client/1/authenticate", headers=bearer),
            http.post(f"{data}?apikey={key}", json=EXAMPLE_2),
            http.put(data, json=EXAMPLE_2, headers=bearer),
            http.post(f"{data}?apikey={key}", content=b"{broken"),
            http.post(f"{data}?apikey={key}&apikey={other_key}", json=EXAMPLE_2),
            http.post(f"{data}?apikey={revoked}", json=EXAMPLE_2),
            http.post(f"{base}/v2/client/2/table/orders/data?apikey={key}", json=EXAMPLE_2),
            http.post(f"{base}/sandbox/v2/client/1/table/orders/data?apikey={key}", json=EXAMPLE_2),
            http.post(f"{base}/v1/client/1/table/legacy/data?apikey={key}", json={"_id": 1}),
            http.post(
                f"{data}?apikey={key}",
                content=gzip.compress(json.dumps(EXAMPLE_2).encode()),
                headers={"content-encoding": "gzip"},
            ),
            http.post(f"{data}?apikey={key}", content=b"x", headers={"content-encoding": "br"}),
            http.get(f"{base}/v2/client/1/nowhere?apikey={key}"),
            http.delete(f"{data}?apikey={key}"),
            http.get(
                f"{base}/v2/client/1/authenticate?apikey={key}", headers={"authorization": f"Bearer {key}"}
            ),
            http.post(f"{base}/v2/import/batch", json=STITCH_BATCH, headers=bearer),
            http.post(
                f"{base}/v2/import/batch", json=STITCH_BATCH, headers={"authorization": f"Bearer {revoked}"}
            ),
        ]
        ids = [r.headers["x-request-id"] for r in calls]
    # requests no HTTP client would send, each with a key in it
    raw(server, f"NOT-A-METHOD /v2/client/1/authenticate?apikey={key} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw(server, f"GET /v2/client/1/authenticate?apikey={key} HTTP/9.9\r\n\r\n".encode())
    raw(
        server, f"POST /v2/client/1/table/orders/data?apikey={key} HTTP/1.1\r\nHost: x\r\n".encode()
    )  # stalls
    raw(
        server,
        f"GET /v2/client/1/authenticate?apikey={key} HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".encode(),
    )
    stop_server(server)  # shutdown logs too
    log = server.log_path.read_text(errors="replace")
    for k in keys:
        assert k not in log
        assert k.split("_", 2)[2] not in log  # not even the secret part
    access = [
        json.loads(line.split("importapi.access: ", 1)[1])
        for line in log.splitlines()
        if "importapi.access: " in line
    ]
    by_id = {entry["request_id"]: entry for entry in access}
    assert set(ids) <= set(by_id) and len(by_id) == len(access)  # one line per request
    for entry in access:
        assert {
            "request_id",
            "client_id",
            "table",
            "data_points",
            "status",
            "duration_ms",
            "key_id",
            "route",
            "method",
        } <= set(entry)
    first_push = by_id[ids[9]]
    assert (
        first_push["client_id"],
        first_push["table"],
        first_push["data_points"],
        first_push["status"],
        first_push["inserted"],
        first_push["replaced"],
    ) == (1, "orders", 3, 201, 2, 1)
    assert first_push["key_id"] == key.split("_")[1] and first_push["duration_ms"] > 0
    assert by_id[ids[12]]["status"] == 401 and by_id[ids[12]]["client_id"] is None
    stitch, refused = by_id[ids[-2]], by_id[ids[-1]]
    assert (
        stitch["route"],
        stitch["table"],
        stitch["data_points"],
        stitch["status"],
        stitch["inserted"],
    ) == (
        "batch",
        "events",
        2,
        201,
        2,
    )
    assert (refused["route"], refused["status"]) == ("batch", 401)
    assert not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
