"""Shared fixtures: real SQLite warehouses in temporary folders, the ASGI app in process,
and the real server process on a free port."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from importapi.app import create_app
from importapi.settings import Limits, Settings
from importapi.storage import Storage, open_storage
from tests.backends import BACKENDS, insertion_order, warehouse

EXAMPLE_1 = {
    "keys": ["id"],
    "id": 1,
    "email": "joe@schmo.com",
    "status": "pending",
    "created_at": "2012-08-01 14:22:32",
}
EXAMPLE_2 = [
    {
        "keys": ["id"],
        "id": 1,
        "email": "joe@schmo.com",
        "status": "pending",
        "created_at": "2012-08-01 14:22:32",
    },
    {
        "keys": ["id"],
        "id": 2,
        "email": "anne@schmo.com",
        "status": "pending",
        "created_at": "2012-08-03 23:12:30",
    },
    {
        "keys": ["id"],
        "id": 1,
        "email": "joe@schmo.com",
        "status": "complete",
        "created_at": "2012-08-05 04:51:02",
    },
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "warehouse"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses a warehouse (``database``, ``storage``, ``api``) runs on each
    backend; ``@pytest.mark.backends("sqlite")`` narrows that for a backend-specific test."""
    if "database" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("database", marker.args if marker else BACKENDS, indirect=True)


@pytest.fixture
def database(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[str]:
    """The URL of an empty warehouse: a SQLite folder, or a PostgreSQL database of its own."""
    with warehouse(request.param, data_dir) as url:
        yield url


@pytest.fixture
def storage(database: str) -> Iterator[Storage]:
    with open_storage(database) as s:
        yield s


class InProcessClient:
    """A synchronous HTTP client that talks to the ASGI app in this process.

    The app runs on an event loop in a background thread, as it would under a server, and
    each request goes through httpx's ASGI transport: no socket, no mock.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        future = asyncio.run_coroutine_threadsafe(self.client.request(method, url, **kwargs), self.loop)
        return future.result(timeout=60)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.client.aclose(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@contextmanager
def in_process(settings: Settings, storage: Storage | None = None) -> Iterator[InProcessClient]:
    """The application as ``create_app`` makes it, in this process; a ``storage`` given
    stays open (its owner closes it)."""
    app = create_app(settings, storage=storage)
    http = InProcessClient(app)
    try:
        yield http
    finally:
        http.close()
        app.close(storage=storage is None)


@dataclass
class Api:
    """An in-process client of the ASGI app, with client 1 and its key ready."""

    http: InProcessClient
    storage: Storage
    client_id: int
    key: str

    def url(
        self,
        table: str = "orders",
        *,
        version: str = "v2",
        cid: int | None = None,
        sandbox: bool = False,
        key: str | None = None,
    ) -> str:
        prefix = "/sandbox" if sandbox else ""
        return (
            f"{prefix}/{version}/client/{cid or self.client_id}/table/{table}/data?apikey={key or self.key}"
        )

    def push(self, data: object, table: str = "orders", **kw: object) -> httpx.Response:
        return self.http.post(self.url(table, **kw), json=data)  # type: ignore[arg-type]

    def rows(self, table: str = "orders", order: str = "rowid") -> list[dict[str, object]]:
        if order == "rowid":
            order = insertion_order(self.storage)
        columns, rows = self.storage.warehouse.query(
            self.client_id, f'SELECT * FROM "{table}" ORDER BY {order}'
        )
        return [dict(zip(columns, r)) for r in rows]


def make_api(data_dir: Path | str, limits: Limits | None = None) -> Iterator[Api]:
    settings = Settings(database=str(data_dir), limits=limits or Limits(), access_log=False)
    app = create_app(settings)
    client = app.storage.create_client("test")
    _, key = app.storage.catalog.create_key(client.client_id)
    http = InProcessClient(app)
    try:
        yield Api(http, app.storage, client.client_id, key)
    finally:
        http.close()
        app.close()


@pytest.fixture
def api(database: str) -> Iterator[Api]:
    yield from make_api(database)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """The real server process, started by ``importapi serve`` on a free port."""

    base: str
    key: str
    data_dir: Path
    process: subprocess.Popen[str]
    log_path: Path


def start_server(
    data_dir: Path, log_path: Path, extra_env: dict[str, str] | None = None, database: str | None = None
) -> Server:
    """``database`` (a URL) replaces the SQLite folder ``data_dir`` when given."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    env.pop("IMPORTAPI_DATABASE", None)
    with log_path.open("w") as log:  # the child keeps its own handle
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "importapi",
                "serve",
                "--port",
                str(port),
                "--database",
                database or f"sqlite:///{data_dir}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()}")
        try:
            if httpx.get(base + "/", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not start: {log_path.read_text()}")
        time.sleep(0.05)
    match = re.search(r"imp_[A-Za-z0-9_-]+", log_path.read_text())
    return Server(base, match.group(0) if match else "", data_dir, process, log_path)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = start_server(tmp_path / "warehouse", tmp_path / "server.log")
    yield s
    stop_server(s)
