"""Helpers shared by the tests: the application in process (``Api``), the real server as a
subprocess, the ``importapi`` command line, the contract's checks of an answer and of the
warehouse, polling with a deadline, and pushing a batch straight into a warehouse.

Fixtures and pytest hooks live in ``conftest.py``, which imports from here; nothing imports
from ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from importapi.app import create_app
from importapi.errors import Code
from importapi.push import Batch, Push, PushResult
from importapi.settings import Limits, Settings
from importapi.storage import Storage
from tests.backends import insertion_order, sql_objects
from tests.backends import user_tables as backend_user_tables

T = TypeVar("T")

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

# -- the application in process ----------------------------------------------------------


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


@contextlib.contextmanager
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


@contextlib.contextmanager
def limited_api(folder: Path, **limits: int) -> Iterator[Api]:
    """An in-process app on its own warehouse with small limits."""
    gen = make_api(folder, Limits(**limits))
    try:
        yield next(gen)
    finally:
        gen.close()


def auth_url(api: Api, key: str | None = None, cid: int | None = None, version: str = "v2") -> str:
    url = f"/{version}/client/{cid or api.client_id}/authenticate"
    return url if key is None else f"{url}?apikey={key}"


def second_client(api: Api) -> tuple[int, str]:
    client = api.storage.create_client("other")
    _, key = api.storage.catalog.create_key(client.client_id)
    return client.client_id, key


# -- the contract's checks of an answer ---------------------------------------------------

CODES = {c.value for c in Code}


def envelope(r: httpx.Response, status: int) -> dict[str, Any]:
    """The answer's JSON object, after checking the status and the leading code/message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body, dict)
    assert list(body)[:2] == ["code", "message"], body
    assert body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    return body


def error_reasons(r: httpx.Response, status: int) -> list[str]:
    """The reasons of an error answer, after checking the whole error envelope."""
    body = envelope(r, status)
    assert list(body)[:4] == ["code", "message", "reasons", "details"], body
    reasons = body["reasons"]
    assert isinstance(reasons, list) and reasons, body
    assert all(isinstance(x, str) and x for x in reasons), body
    assert_details_match(body)
    return reasons


def assert_details_match(body: dict[str, Any]) -> None:
    """``details`` says what ``reasons`` says, one to one, as data: a documented code, the
    data point and field when there is one, and the message the reason line is made of."""
    details = body["details"]
    assert isinstance(details, list) and len(details) == len(body["reasons"]), body
    for detail, reason in zip(details, body["reasons"]):
        assert set(detail) <= {"code", "point", "field", "message"} and detail["code"] in CODES, detail
        prefix = f"data point {detail['point']}: " if "point" in detail else ""
        assert reason == prefix + detail["message"], (reason, detail)


def pushed(r: httpx.Response) -> dict[str, Any]:
    """The body of a stored push: exactly 201 (the Node.js client accepts nothing else)."""
    return envelope(r, 201)


# -- the contract's checks of the warehouse -----------------------------------------------


def snapshot(api: Api) -> dict[str, Any]:
    """Everything a push could change in the client's warehouse: the SQL objects (with their
    DDL), the schema as the storage reports it, and every row of every table."""
    objects = sql_objects(api.storage, api.client_id)
    tables = {}
    for info in api.storage.warehouse.tables(api.client_id):
        d = info.as_dict()
        tables[d["table"]] = (
            d["key_fields"],
            [(c["name"], c["type"]) for c in d["columns"]],
            api.rows(d["table"]),
        )
    return {"objects": objects, "tables": tables}


def user_tables(api: Api) -> list[str]:
    """Tables in the client's warehouse that are not the system's own."""
    return backend_user_tables(api.storage, api.client_id)


def kinds(api: Api, table: str = "orders") -> dict[str, str]:
    """Column name -> column kind, as the storage records them."""
    for info in api.storage.warehouse.tables(api.client_id):
        if info.schema.name == table:
            return {c.name: c.kind.label for c in info.schema.columns.values()}
    raise AssertionError(f"no table {table!r}")


def key_fields(api: Api, table: str = "orders") -> list[str]:
    for info in api.storage.warehouse.tables(api.client_id):
        if info.schema.name == table:
            return list(info.schema.key_fields)
    raise AssertionError(f"no table {table!r}")


def sql(api: Api, query: str) -> list[tuple[Any, ...]]:
    return api.storage.warehouse.query(api.client_id, query)[1]


# -- the real server process --------------------------------------------------------------


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


# -- the command line ---------------------------------------------------------------------


def sqlite_url(folder: Path) -> str:
    """The ``--database`` URL of a SQLite folder (absolute paths give four slashes)."""
    return f"sqlite:///{folder}"


def run_cli(
    *args: str,
    database: Path | str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m importapi ARGS [--database URL]``, with ``stdin`` typed in; never raises
    on a non-zero exit."""
    full_env = {k: v for k, v in os.environ.items() if k != "IMPORTAPI_DATABASE"}
    full_env.update(env or {})
    argv = [sys.executable, "-m", "importapi", *args]
    if database is not None:
        argv += ["--database", database if isinstance(database, str) else sqlite_url(database)]
    return subprocess.run(
        argv, check=False, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout, input=stdin
    )


@contextlib.contextmanager
def console_server(root: Path, password: str) -> Iterator[Server]:
    """The real server on a new warehouse in ``root``, whose owner password was set with the
    command line (``importapi admin set-password``)."""
    done = run_cli("admin", "set-password", database=root / "warehouse", stdin=password + "\n")
    assert done.returncode == 0, done.stderr
    server = start_server(root / "warehouse", root / "server.log")
    try:
        yield server
    finally:
        stop_server(server)


def cli_json(*args: str, database: Path | str, **kw: Any) -> Any:
    """Run a subcommand that prints JSON; fail the test with its stderr if it fails."""
    done = run_cli(*args, database=database, **kw)
    assert done.returncode == 0, f"importapi {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return json.loads(done.stdout)


def query_rows(client_id: int, sql: str, database: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = cli_json("query", str(client_id), sql, "--format", "json", database=database)
    return rows


# -- polling, files, and the warehouse without HTTP ---------------------------------------


def wait_until(probe: Callable[[], T], *, timeout: float = 15, what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def integrity_ok(path: Path) -> bool:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def apply(
    storage: Storage, client_id: int, batch: Batch, *, sandbox: bool = False, timeout: float = 60
) -> PushResult:
    """Push one validated batch through the warehouse, as the server does; its result."""
    (result,) = storage.warehouse.submit(Push(client_id, [batch], sandbox)).result(timeout)
    return result


def submit(storage: Storage, client_id: int, batch: Batch) -> Future[list[PushResult]]:
    """Queue one validated batch, without waiting for it."""
    return storage.warehouse.submit(Push(client_id, [batch]))
