"""Slow clients against the real server process, over raw sockets.

A client that trickles its body a byte at a time, one that trickles its headers, and one
that connects and says nothing: each is answered 408 in the envelope and disconnected once
its deadline passes, while other clients are served meanwhile and nothing is stored. The
deadlines are shortened for the test (``IMPORTAPI_BODY_TIMEOUT``, ``IMPORTAPI_HEADER_TIMEOUT``);
the test waits for the answer with a generous bound and asserts no durations.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server, start_server, stop_server

pytestmark = pytest.mark.e2e
PATIENCE = 60.0  # seconds before the test gives up on an answer; the deadlines are 1.5 s


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[Server]:
    server = start_server(
        tmp_path / "warehouse",
        tmp_path / "server.log",
        {"IMPORTAPI_BODY_TIMEOUT": "1.5", "IMPORTAPI_HEADER_TIMEOUT": "1.5"},
    )
    yield server
    stop_server(server)


def connect(server: Server) -> socket.socket:
    host, port = server.base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=PATIENCE)


def trickle_until_answered(s: socket.socket, first: bytes, drip: bytes, every: float = 0.1) -> bytes:
    """Send ``first``, then one byte of ``drip`` each time ``every`` seconds pass without an
    answer, until the server answers and closes; return everything it sent."""
    s.sendall(first)
    received = b""
    position = 0
    give_up = time.monotonic() + PATIENCE
    while time.monotonic() < give_up:
        readable, _, _ = select.select([s], [], [], every)
        if readable:
            chunk = s.recv(65536)
            if not chunk:
                return received  # closed by the server
            received += chunk
            continue
        if position < len(drip):
            try:
                s.sendall(drip[position : position + 1])
            except (BrokenPipeError, ConnectionResetError):
                pass
            position += 1
    raise AssertionError(f"no answer and no close within {PATIENCE}s; got {received!r}")


def parse(answer: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_a_body_sent_a_byte_at_a_time_is_cut_off_with_408(impatient: Server) -> None:
    body = json.dumps({"keys": ["id"], "id": 1, "pad": "x" * 2000}).encode()
    head = (
        f"POST /v2/client/1/table/orders/data?apikey={impatient.key} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with connect(impatient) as s:
        answer = trickle_until_answered(s, head + body[:5], body[5:])
        status, headers, envelope = parse(answer)
        assert status == 408 and envelope["code"] == 408 and envelope["reasons"]
        assert headers["connection"] == "close"
    with httpx.Client() as http:  # the server serves others, and stored nothing
        auth = http.get(f"{impatient.base}/v2/client/1/authenticate?apikey={impatient.key}")
        assert auth.status_code == 200
        fresh = http.post(
            f"{impatient.base}/v2/client/1/table/orders/data?apikey={impatient.key}",
            json={"keys": ["id"], "id": 2},
        )
        assert fresh.json()["inserted"] == 1


def test_headers_sent_a_byte_at_a_time_are_cut_off_with_408(impatient: Server) -> None:
    head = (
        f"POST /v2/client/1/table/orders/data?apikey={impatient.key} HTTP/1.1\r\nHost: x\r\n"
        + "".join(f"X-Padding-{i}: {'y' * 40}\r\n" for i in range(50))
        + "\r\n"
    ).encode()
    with connect(impatient) as s:
        answer = trickle_until_answered(s, head[:10], head[10:])
    status, headers, envelope = parse(answer)
    assert status == 408 and headers["connection"] == "close" and envelope["code"] == 408


def test_a_connection_that_sends_nothing_is_closed(impatient: Server) -> None:
    with connect(impatient) as s:
        answer = trickle_until_answered(s, b"", b"")
    status, _, envelope = parse(answer)
    assert status == 408 and envelope["reasons"]


def test_a_prompt_client_on_a_kept_alive_connection_is_not_cut_off(impatient: Server) -> None:
    with httpx.Client(base_url=impatient.base) as http:
        for i in range(20):
            r = http.post(
                f"/v2/client/1/table/orders/data?apikey={impatient.key}", json={"keys": ["id"], "id": i}
            )
            assert r.status_code == 201
