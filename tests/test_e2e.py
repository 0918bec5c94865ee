"""End to end: the real ``importapi serve`` process, spoken to over real sockets by curl,
httpx, raw sockets and the command line, and stopped by real signals."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import (
    EXAMPLE_1,
    EXAMPLE_2,
    Server,
    cli_json,
    integrity_ok,
    query_rows,
    run_cli,
    start_server,
    stop_server,
    wait_until,
)

pytestmark = pytest.mark.e2e

# The seed's Example 1 and Example 2, as a user would save them to a file for curl -d @file.
EXAMPLE_1_TEXT = """{
  "keys": ["id"],
  "id": 1,
  "email": "joe@schmo.com",
  "status": "pending",
  "created_at": "2012-08-01 14:22:32"
}
"""
EXAMPLE_2_TEXT = """[{
  "keys": ["id"],
  "id": 1,
  "email": "joe@schmo.com",
  "status": "pending",
  "created_at": "2012-08-01 14:22:32"
},{
  "keys": ["id"],
  "id": 2,
  "email": "anne@schmo.com",
  "status": "pending",
  "created_at": "2012-08-03 23:12:30"
},{
  "keys": ["id"],
  "id": 1,
  "email": "joe@schmo.com",
  "status": "complete",
  "created_at": "2012-08-05 04:51:02"
}]
"""

# uvicorn re-raises the signal it shut down for once it is done, so a graceful stop may end
# with the signal's own status.
GRACEFUL_EXIT = (0, -signal.SIGTERM)

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def data_url(server: Server, table: str, key: str | None = None, cid: int = 1, prefix: str = "") -> str:
    return f"{server.base}{prefix}/v2/client/{cid}/table/{table}/data?apikey={key or server.key}"


def auth_url(server: Server, key: str | None = None, cid: int = 1) -> str:
    return f"{server.base}/v2/client/{cid}/authenticate?apikey={key or server.key}"


def port_of(server: Server) -> int:
    port = urlsplit(server.base).port
    assert port is not None
    return port


def curl(*args: str) -> tuple[int, str]:
    """Run curl; return the HTTP status and the body."""
    done = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", *args], check=False, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"curl failed ({done.returncode}): {done.stderr}"
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


# -- status and the seed's examples ------------------------------------------------


def test_status_answers_200_with_the_json_envelope(server: Server) -> None:
    r = httpx.get(server.base + "/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json()["code"] == 200 and r.json()["message"]


@needs_curl
def test_the_seeds_curl_examples_work_as_written(server: Server, tmp_path: Path) -> None:
    (tmp_path / "example1.json").write_text(EXAMPLE_1_TEXT)
    (tmp_path / "example2.json").write_text(EXAMPLE_2_TEXT)
    assert json.loads(EXAMPLE_1_TEXT) == EXAMPLE_1 and json.loads(EXAMPLE_2_TEXT) == EXAMPLE_2

    # curl -v https://connect.rjmetrics.com/
    assert curl(server.base + "/")[0] == 200
    # curl -v https://connect.rjmetrics.com/v2/client/:cid/authenticate?apikey=:apikey
    assert curl(auth_url(server))[0] == 200
    # curl -X POST -d @filename .../v2/client/:cid/table/:table/data?apikey=:apikey --header ...
    url = data_url(server, "users")
    for name, inserted, replaced in (("example1.json", 1, 0), ("example2.json", 1, 2)):
        status, body = curl(
            "-X", "POST", "-d", f"@{tmp_path / name}", url, "--header", "Content-type: application/json"
        )
        assert status == 201, body
        answer = json.loads(body)
        assert (answer["code"], answer["inserted"], answer["replaced"]) == (201, inserted, replaced)

    rows = query_rows(1, "SELECT * FROM users ORDER BY id", server.data_dir)
    assert rows == [
        {"id": 1, "email": "joe@schmo.com", "status": "complete", "created_at": "2012-08-05 04:51:02"},
        {"id": 2, "email": "anne@schmo.com", "status": "pending", "created_at": "2012-08-03 23:12:30"},
    ]


@needs_curl
def test_curl_without_a_content_type_header_is_read_as_json(server: Server, tmp_path: Path) -> None:
    # curl -d sends application/x-www-form-urlencoded unless told otherwise.
    (tmp_path / "example1.json").write_text(EXAMPLE_1_TEXT)
    status, body = curl("-X", "POST", "-d", f"@{tmp_path / 'example1.json'}", data_url(server, "users"))
    assert status == 201, body
    assert query_rows(1, "SELECT id, status FROM users", server.data_dir) == [{"id": 1, "status": "pending"}]


# -- the first key ------------------------------------------------------------------


def test_the_first_start_prints_one_key_and_a_restart_prints_none(server: Server, tmp_path: Path) -> None:
    assert server.key, "the first start printed no key"
    assert re.fullmatch(r"[A-Za-z0-9_-]+", server.key)
    assert server.log_path.read_text().count(server.key) == 1
    assert httpx.get(auth_url(server)).status_code == 200
    stop_server(server)

    again = start_server(server.data_dir, tmp_path / "second.log")
    try:
        assert again.key == "", "a second start on the same folder printed a key"
        assert "First start" not in again.log_path.read_text()
        assert httpx.get(auth_url(again, key=server.key)).status_code == 200
        clients = cli_json("clients", "list", "--json", database=server.data_dir)
        assert [c["client_id"] for c in clients] == [1]
        assert len(cli_json("keys", "list", "1", "--json", database=server.data_dir)) == 1
    finally:
        stop_server(again)


# -- Connection: close ----------------------------------------------------------------


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response framed by Content-Length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-headers: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"header {name} sent twice"
        headers[name.lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def _closed_by_peer(sock: socket.socket, timeout: float = 10) -> bool:
    """True if the peer closes the connection (EOF) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def _request(method: str, path: str, host: str, extra: str = "", body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    )
    return head.encode() + body


def test_connection_close_is_answered_in_kind_and_the_socket_closed(server: Server) -> None:
    host = f"127.0.0.1:{port_of(server)}"
    push_path = urlsplit(data_url(server, "orders"))
    path = f"{push_path.path}?{push_path.query}"
    requests = [
        _request("GET", "/", host, "Connection: close\r\n"),
        _request(
            "POST",
            path,
            host,
            "Connection: close\r\nUser-Agent: Needle/0.6.3\r\n",
            json.dumps(EXAMPLE_1).encode(),
        ),
    ]
    for raw in requests:
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as sock:
            sock.sendall(raw)
            status, headers, _ = _read_response(sock)
            assert status in (200, 201)
            assert headers.get("connection", "").lower() == "close"
            assert _closed_by_peer(sock), "the server kept the connection open after Connection: close"


def test_without_connection_close_the_connection_is_kept_for_another_request(server: Server) -> None:
    # The control for the test above: the server closes because it was asked to.
    host = f"127.0.0.1:{port_of(server)}"
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(_request("GET", "/", host))
            status, headers, _ = _read_response(sock)
            assert status == 200
            assert headers.get("connection", "").lower() != "close"


# -- the sandbox, by host name ------------------------------------------------------------


def test_a_sandbox_host_header_stores_nothing(server: Server) -> None:
    assert httpx.post(data_url(server, "orders"), json=EXAMPLE_1).status_code == 201
    sandbox_made = cli_json("keys", "create", "1", "--json", database=server.data_dir)
    production_made = cli_json("keys", "create", "1", "--json", database=server.data_dir)
    sandbox_only, production = sandbox_made["api_key"], production_made["api_key"]
    host = {"Host": "sandbox-connect.rjmetrics.com"}

    r = httpx.get(auth_url(server, key=sandbox_only), headers=host)
    assert r.status_code == 200
    for table in ("orders", "fresh_table"):
        r = httpx.post(data_url(server, table, key=sandbox_only), json=EXAMPLE_2, headers=host)
        assert r.status_code == 201, r.text
        assert r.json()["sandbox"] is True

    tables = cli_json("tables", "1", "--json", database=server.data_dir)
    assert [(t["table"], t["row_count"]) for t in tables] == [("orders", 1)]
    assert query_rows(1, "SELECT id, status FROM orders", server.data_dir) == [{"id": 1, "status": "pending"}]

    # Key use is recorded off the request path: wait for the production key's, then the
    # sandbox key must still show none.
    assert httpx.get(auth_url(server, key=production)).status_code == 200

    def last_used() -> dict[str, Any]:
        return {
            k["key_id"]: k["last_used_at"]
            for k in cli_json("keys", "list", "1", "--json", database=server.data_dir)
        }

    wait_until(lambda: last_used()[production_made["key_id"]], what="the production key's last use")
    assert last_used()[sandbox_made["key_id"]] is None


@needs_curl
def test_the_sandbox_host_name_works_for_curl(server: Server, tmp_path: Path) -> None:
    # curl -v https://sandbox-connect.rjmetrics.com/v2/client/:cid/:endpoint?apikey=:apikey,
    # with the name resolved to this server as DNS would.
    port = port_of(server)
    (tmp_path / "example2.json").write_text(EXAMPLE_2_TEXT)
    url = f"http://sandbox-connect.rjmetrics.com:{port}/v2/client/1/table/orders/data?apikey={server.key}"
    status, body = curl(
        "--resolve",
        f"sandbox-connect.rjmetrics.com:{port}:127.0.0.1",
        "-X",
        "POST",
        "-d",
        f"@{tmp_path / 'example2.json'}",
        url,
        "--header",
        "Content-type: application/json",
    )
    assert status == 201, body
    assert json.loads(body)["sandbox"] is True
    assert cli_json("tables", "1", "--json", database=server.data_dir) == []


# -- the Node.js client's user agent --------------------------------------------------------


def test_needle_gets_text_plain_and_everyone_else_json(server: Server) -> None:
    needle = {"User-Agent": "Needle/0.6.3"}
    answers = [
        httpx.get(server.base + "/", headers=needle),
        httpx.get(auth_url(server), headers=needle),
        httpx.post(data_url(server, "orders"), json=EXAMPLE_2, headers=needle),
        httpx.post(data_url(server, "orders", key="imp_000000000000_nope"), json=EXAMPLE_2, headers=needle),
    ]
    assert [r.status_code for r in answers] == [200, 200, 201, 401]
    for r in answers:
        assert r.headers["content-type"].startswith("text/plain")
        assert r.json()["code"] == r.status_code
    assert httpx.get(server.base + "/").headers["content-type"] == "application/json"


# -- keys stay out of the log -----------------------------------------------------------------


def test_a_key_never_appears_in_the_log(server: Server) -> None:
    second = cli_json("keys", "create", "1", "--json", database=server.data_dir)["api_key"]
    wrong = second[:-6] + ("AAAAAA" if not second.endswith("AAAAAA") else "BBBBBB")
    statuses = [
        httpx.get(auth_url(server, key=second)).status_code,
        httpx.post(data_url(server, "orders", key=second), json=EXAMPLE_2).status_code,
        httpx.put(data_url(server, "orders", key=second), json=EXAMPLE_1).status_code,
        httpx.post(
            f"{server.base}/v2/client/1/table/orders/data",
            headers={"Authorization": f"Bearer {second}"},
            json=EXAMPLE_1,
        ).status_code,
        httpx.post(data_url(server, "orders", key=second), content=b"{not json").status_code,
        httpx.post(data_url(server, "orders", key=second, cid=2), json=EXAMPLE_1).status_code,
        httpx.post(data_url(server, "orders", key=wrong), json=EXAMPLE_1).status_code,
        httpx.get(auth_url(server, key=wrong)).status_code,
        httpx.get(f"{server.base}/v2/client/1/nowhere?apikey={second}").status_code,
        httpx.get(data_url(server, "orders", key=second)).status_code,
        httpx.post(data_url(server, "orders", key=second, prefix="/sandbox"), json=EXAMPLE_1).status_code,
    ]
    assert statuses == [200, 201, 201, 201, 400, 401, 401, 401, 404, 405, 201]
    stop_server(server)  # flushes everything the server had to say

    log = server.log_path.read_text()
    # The requests were logged (so the check below looks at something) ...
    assert len(re.findall(r'"status":\s*40[0-9]', log)) >= 6, log
    # ... but never a key: not the new one, not a wrong one, not the secret half of either.
    for secret in (second, wrong, second[-20:], wrong[-20:]):
        assert secret not in log
    # The first key is printed once, by design, in the first-start banner, and never again.
    assert log.count(server.key) == 1


# -- stopping: gracefully, and not ------------------------------------------------------------


class Pushers:
    """Threads that push distinct ids as fast as the server takes them, remembering every
    id that was acknowledged with a 201, until the server goes away."""

    def __init__(self, server: Server, table: str, threads: int = 4, batch: int = 25) -> None:
        self.url = data_url(server, table)
        self.batch = batch
        self.acked: set[int] = set()
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, n: int) -> None:
        with httpx.Client(timeout=30) as client:
            for i in range(10**6):
                if self.stop.is_set():
                    return
                ids = [n * 10**9 + i * self.batch + j for j in range(self.batch)]
                # A new column every so often, and one widening (integer -> text) early on,
                # so that schema changes are in flight too when the server goes away.
                body = [
                    {"keys": ["id"], "id": k, "thread": n, f"c{i % 30}": i, "w": f"s{i}" if i >= 3 else i}
                    for k in ids
                ]
                try:
                    r = client.post(self.url, json=body)
                except httpx.TransportError:
                    return
                with self.lock:
                    self.statuses.append(r.status_code)
                    if r.status_code == 201:
                        self.acked.update(ids)
                if r.status_code != 201:
                    return

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
            assert not t.is_alive()


def stored_ids(server: Server, table: str) -> set[int]:
    return {row["id"] for row in query_rows(1, f"SELECT id FROM {table}", server.data_dir)}


def test_sigterm_during_pushes_keeps_every_acknowledged_row(server: Server) -> None:
    pushers = Pushers(server, "events")
    wait_until(lambda: pushers.count() >= 1000, what="1000 acknowledged rows")
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) in GRACEFUL_EXIT
    pushers.join()

    assert set(pushers.statuses) == {201}, "a push was answered with an error during shutdown"
    assert pushers.acked <= stored_ids(server, "events")
    assert integrity_ok(server.data_dir / "client_1.sqlite3")
    assert integrity_ok(server.data_dir / "catalog.sqlite3")
    log = server.log_path.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log


def test_sigterm_after_pushes_leaves_readable_data(server: Server) -> None:
    for i in range(5):
        body = [{"keys": ["id"], "id": i * 100 + j, "n": j} for j in range(100)]
        assert httpx.post(data_url(server, "plain"), json=body).status_code == 201
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) in GRACEFUL_EXIT
    assert query_rows(1, "SELECT count(*) AS n, sum(n) AS s FROM plain", server.data_dir) == [
        {"n": 500, "s": 5 * sum(range(100))}
    ]
    tables = cli_json("tables", "1", "--json", database=server.data_dir)
    assert [(t["table"], t["row_count"]) for t in tables] == [("plain", 500)]


def test_a_201_survives_sigkill_and_restart(server: Server, tmp_path: Path) -> None:
    assert httpx.post(data_url(server, "orders"), json=EXAMPLE_2).status_code == 201
    pushers = Pushers(server, "events")
    wait_until(lambda: pushers.count() >= 1000, what="1000 acknowledged rows")
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=30)
    pushers.join()
    assert set(pushers.statuses) == {201}

    # Readable straight after the kill, before any server has recovered the files ...
    assert pushers.acked <= stored_ids(server, "events")
    again = start_server(server.data_dir, tmp_path / "after-kill.log")
    try:
        # ... and after a restart, which takes pushes with the same key and prints no new one.
        assert again.key == ""
        assert pushers.acked <= stored_ids(again, "events")
        assert query_rows(1, "SELECT id, status FROM orders ORDER BY id", server.data_dir) == [
            {"id": 1, "status": "complete"},
            {"id": 2, "status": "pending"},
        ]
        r = httpx.post(data_url(again, "orders", key=server.key), json=EXAMPLE_1)
        assert r.status_code == 201 and r.json()["replaced"] == 1
        # The schema the server keeps agrees with the table SQLite holds: a push naming
        # every column, each with its type, goes in.
        every = {"keys": ["id"], "id": -1, "thread": 0, "w": "text", **{f"c{i}": i for i in range(30)}}
        r = httpx.post(data_url(again, "events", key=server.key), json=every)
        assert r.status_code == 201, r.text
        assert r.json()["inserted"] == 1
    finally:
        stop_server(again)
    assert integrity_ok(server.data_dir / "client_1.sqlite3")
    assert run_cli("clients", "list", database=server.data_dir).stdout.count("\n") == 1
