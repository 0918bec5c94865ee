"""Every command of the command line on a PostgreSQL warehouse, given as ``--database`` or as
``IMPORTAPI_DATABASE``, run for real: serve (first start makes client 1 and its key), clients,
keys, tables, query, copy. ``test_cli.py`` covers the same commands in depth on SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.backends import fresh_postgres, warehouse
from tests.helpers import EXAMPLE_2, cli_json, run_cli, start_server, stop_server


@pytest.fixture
def pg() -> Iterator[str]:
    with fresh_postgres() as url:
        yield url


def test_clients_keys_tables_and_query_on_postgresql(pg: str) -> None:
    env = {"IMPORTAPI_DATABASE": pg}
    made = run_cli("clients", "create", "shop", "--json", env=env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == {"client_id": 1, "name": "shop"}
    key = cli_json("keys", "create", "1", "--json", database=pg)
    assert key["api_key"].startswith("imp_")
    listed = cli_json("keys", "list", "1", "--json", database=pg)
    assert [k["key_id"] for k in listed] == [key["key_id"]] and listed[0]["revoked_at"] is None
    assert run_cli("keys", "revoke", key["key_id"], database=pg).returncode == 0
    assert cli_json("keys", "list", "1", "--json", database=pg)[0]["revoked_at"]
    assert cli_json("tables", "1", "--json", database=pg) == []
    bad = run_cli("query", "1", 'DELETE FROM "importapi"."clients"', database=pg)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: query is read-only")
    assert cli_json("clients", "list", "--json", database=pg)[0]["name"] == "shop"
    missing = run_cli("tables", "7", database=pg)
    assert missing.returncode == 1 and "client 7 does not exist" in missing.stderr


def test_serve_on_postgresql_first_start_then_push_and_read(pg: str, tmp_path: Path) -> None:
    server = start_server(tmp_path / "unused", tmp_path / "server.log", database=pg)
    try:
        assert server.key, server.log_path.read_text()
        r = httpx.post(
            f"{server.base}/v2/client/1/table/orders/data",
            params={"apikey": server.key},
            json=EXAMPLE_2,
            timeout=30,
        )
        assert r.status_code == 201 and (r.json()["inserted"], r.json()["replaced"]) == (2, 1)
    finally:
        stop_server(server)
    rows = cli_json(
        "query", "1", 'SELECT "id", "status" FROM "orders" ORDER BY "id"', "--format", "json", database=pg
    )
    assert rows == [{"id": 1, "status": "complete"}, {"id": 2, "status": "pending"}]
    (table,) = cli_json("tables", "1", "--json", database=pg)
    assert table["row_count"] == 2 and {c["name"]: c["type"] for c in table["columns"]} == {
        "id": "integer",
        "email": "text",
        "status": "text",
        "created_at": "text",
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_servers_starting_together_on_a_new_warehouse_make_one_client(backend: str, tmp_path: Path) -> None:
    """Several `importapi serve` started at once on an empty warehouse: one makes client 1 and
    prints its key, and that key works on all of them."""
    with warehouse(backend, tmp_path / "warehouse") as database, ThreadPoolExecutor(3) as pool:
        servers = list(
            pool.map(
                lambda n: start_server(tmp_path / "unused", tmp_path / f"server{n}.log", database=database),
                range(3),
            )
        )
        try:
            keys = [s.key for s in servers if s.key]
            assert len(keys) == 1, [s.log_path.read_text() for s in servers]
            for s in servers:
                r = httpx.get(f"{s.base}/v2/client/1/authenticate", params={"apikey": keys[0]}, timeout=30)
                assert r.status_code == 200, r.text
        finally:
            for s in servers:
                stop_server(s)
        assert [c["client_id"] for c in cli_json("clients", "list", "--json", database=database)] == [1]


def test_a_database_that_cannot_be_used_is_a_clear_error(pg: str) -> None:
    missing = pg.rpartition("/")[0] + "/importapi_no_such_database"
    done = run_cli("clients", "list", database=missing)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: cannot connect to the warehouse database:")
    assert 'database "importapi_no_such_database" does not exist' in done.stderr
