"""``importapi copy``: a warehouse moves from SQLite to PostgreSQL and back, and reads the same.

The warehouse is filled through the API (two clients, keys of which one is revoked, tables
with single and composite keys, every column kind, widened columns, nulls, big integers,
unicode), copied with the real command line to a fresh PostgreSQL database and from there
to a new SQLite folder. The same queries then give identical results on the first and the
last warehouse, the PostgreSQL one holds the same values, and the keys still work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from importapi.storage import Storage, open_storage
from tests.backends import fresh_postgres
from tests.helpers import Api, cli_json, make_api, run_cli, sqlite_url


def _fill(api: Api) -> None:
    def push(table: str, data: Any, key: str | None = None) -> None:
        r = api.push(data, table=table, key=key)
        assert r.status_code == 201, r.text

    push(
        "orders",
        [
            {
                "keys": ["id"],
                "id": n,
                "status": "pending",
                "total": n * 1.25,
                "paid": n % 2 == 0,
                "note": None if n % 3 else f"note {n} – ü 🙂",
                "meta": {"n": n, "tags": ["a", n]},
            }
            for n in range(1, 101)
        ],
    )
    push("orders", [{"keys": ["id"], "id": 5, "status": "complete", "total": 7}])  # replaced
    # widening: boolean -> integer -> double -> text, integer -> decimal, scalar -> json
    push("widened", [{"keys": ["k"], "k": "a", "flag": True, "n": 1, "x": 1.5, "j": 3}])
    push("widened", [{"keys": ["k"], "k": "b", "flag": 2, "n": 2**70, "x": "text", "j": {"z": 1, "a": 2}}])
    push("widened", [{"keys": ["k"], "k": "c", "flag": 2.5, "n": -3, "x": 0.1 + 0.2, "j": [1, None]}])
    push(
        "events",
        [
            {
                "keys": ["user", "day"],
                "user": u,
                "day": f"2024-01-{d:02}",
                "count": u * d,
                "big": 2**64 + d,
                "ok": d != 3,
            }
            for u in range(1, 6)
            for d in range(1, 8)
        ],
    )


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[Path, Api]]:
    folder = tmp_path / "first"
    gen = make_api(folder)
    api = next(gen)
    try:
        _fill(api)
        other = api.storage.create_client("second")
        _, key2 = api.storage.catalog.create_key(other.client_id)
        revoked, _ = api.storage.catalog.create_key(api.client_id)
        api.storage.catalog.revoke_key(revoked.key_id)
        api.storage.catalog.set_setting("owner_note", "kept")
        r = api.http.post(
            f"/v2/client/{other.client_id}/table/Things/data?apikey={key2}",
            json={"keys": ["id"], "id": 1, "v": "second client"},
        )
        assert r.status_code == 201, r.text
        yield folder, api
    finally:
        gen.close()


QUERIES = {
    "orders": 'SELECT * FROM "orders" ORDER BY "id"',
    "widened": 'SELECT * FROM "widened" ORDER BY "k"',
    "events": 'SELECT * FROM "events" ORDER BY "user", "day"',
    "count": 'SELECT count(*) AS n, sum("count") AS s FROM "events" WHERE "ok"',
}


def _everything(storage: Storage) -> dict[str, Any]:
    """What a user sees of a warehouse: clients, keys, tables with schemas, rows as JSON."""
    seen: dict[str, Any] = {
        "clients": storage.catalog.list_clients(),
        "settings": storage.catalog.get_setting("owner_note"),
    }
    for client in storage.catalog.list_clients():
        cid = client.client_id
        seen[f"keys {cid}"] = storage.catalog.list_keys(cid)
        for info in storage.warehouse.tables(cid):
            seen[f"table {cid} {info.schema.name}"] = (info.as_dict(), info.last_push_at)
            columns, rows = storage.warehouse.read_rows(cid, info.schema.name)
            seen[f"rows {cid} {info.schema.name}"] = (columns, list(rows))
    return seen


def test_sqlite_to_postgresql_and_back_reads_the_same(source: tuple[Path, Api], tmp_path: Path) -> None:
    first, api = source
    last = tmp_path / "last"
    with fresh_postgres() as pg:
        done = run_cli("copy", "--from", sqlite_url(first), "--to", pg)
        assert done.returncode == 0, done.stderr
        assert "Copied 2 clients, 3 keys, 4 tables and 139 rows" in done.stdout
        done = run_cli("copy", "--from", pg, "--to", sqlite_url(last))
        assert done.returncode == 0, done.stderr

        with open_storage(pg) as middle, open_storage(str(last)) as back:
            before = _everything(api.storage)
            assert _everything(middle) == before
            assert _everything(back) == before
        for name, sql in QUERIES.items():
            expected = cli_json("query", "1", sql, "--format", "json", database=first)
            assert cli_json("query", "1", sql, "--format", "json", database=last) == expected, name
        assert cli_json("tables", "1", "--json", database=last) == cli_json(
            "tables", "1", "--json", database=first
        )

        # the keys came along: the first client's key pushes into the PostgreSQL copy
        gen = make_api(pg)
        moved = next(gen)
        try:
            r = moved.http.post(
                f"/v2/client/1/table/orders/data?apikey={api.key}",
                json={"keys": ["id"], "id": 1000, "status": "after the move"},
            )
            assert r.status_code == 201, r.text
            revoked = [k for k in moved.storage.catalog.list_keys(1) if k.revoked_at]
            assert len(revoked) == 1
        finally:
            gen.close()


def test_copy_refuses_a_target_that_is_not_empty(source: tuple[Path, Api], tmp_path: Path) -> None:
    first, _ = source
    with fresh_postgres() as pg:
        with open_storage(pg) as target:
            target.create_client("already here")
        done = run_cli("copy", "--from", sqlite_url(first), "--to", pg)
        assert done.returncode == 1
        assert "Error: the target warehouse already has clients" in done.stderr
        with open_storage(pg) as target:
            assert [c.name for c in target.catalog.list_clients()] == ["already here"]
