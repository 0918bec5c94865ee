"""The command line, run for real (``python -m importapi ...`` in a subprocess) against
SQLite warehouses in temporary folders: what scripts and operators rely on (contract §8)."""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from importapi.app import create_app
from importapi.rjmetrics.validate import validate
from importapi.settings import Settings
from importapi.storage import open_storage
from tests.helpers import EXAMPLE_2, InProcessClient, apply, cli_json, run_cli, sqlite_url, wait_until

URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "warehouse"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory that is not the warehouse, so a default ./importapi-data shows."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    return folder


def cli(how: str, *args: str, db: Path, cwd: Path) -> Any:
    """Run a JSON subcommand with the database given as an option or in the environment."""
    if how == "option":
        return cli_json(*args, database=db, cwd=cwd)
    done = run_cli(*args, env={"IMPORTAPI_DATABASE": sqlite_url(db)}, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def push(db: Path, client_id: int, table: str, body: Any) -> None:
    """Store a push the way the server does, through the storage library."""
    with open_storage(sqlite_url(db)) as storage:
        apply(storage, client_id, validate(copy.deepcopy(body), table))


@contextmanager
def app_on(db: Path) -> Iterator[InProcessClient]:
    """The ASGI app over the same warehouse the command line writes to, in this process."""
    app = create_app(Settings(database=sqlite_url(db), access_log=False))
    http = InProcessClient(app)
    try:
        yield http
    finally:
        http.close()
        app.close()


def assert_error(done: Any, *fragments: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.startswith("Error: "), done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in done.stderr


@pytest.fixture
def client_with_data(db: Path) -> Path:
    """Client 1 with the seed's Example 2 in ``orders`` and typed values in ``events``."""
    assert cli_json("clients", "create", "acme", "--json", database=db)["client_id"] == 1
    push(db, 1, "orders", EXAMPLE_2)
    push(
        db,
        1,
        "events",
        [
            {
                "keys": ["kind", "n"],
                "kind": "click",
                "n": 1,
                "price": 1.5,
                "paid": True,
                "meta": {"page": "/"},
                "note": None,
            },
            {
                "keys": ["kind", "n"],
                "kind": "view",
                "n": 2,
                "price": 2.25,
                "paid": False,
                "meta": [1, 2],
                "note": None,
            },
            {
                "keys": ["n", "kind"],
                "kind": "view",
                "n": 3,
                "price": 0.5,
                "paid": True,
                "meta": None,
                "note": None,
            },
        ],
    )
    return db


# -- clients -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "env"])
def test_clients_create_prints_id_and_name(how: str, db: Path, elsewhere: Path) -> None:
    assert cli(how, "clients", "create", "acme", "--json", db=db, cwd=elsewhere) == {
        "client_id": 1,
        "name": "acme",
    }
    assert cli(how, "clients", "create", "Beta Corp", "--json", db=db, cwd=elsewhere) == {
        "client_id": 2,
        "name": "Beta Corp",
    }
    listed = cli(how, "clients", "list", "--json", db=db, cwd=elsewhere)
    assert [(c["client_id"], c["name"]) for c in listed] == [(1, "acme"), (2, "Beta Corp")]
    assert (db / "catalog.sqlite3").is_file()
    assert not (elsewhere / "importapi-data").exists()


def test_a_relative_sqlite_url_is_relative_to_the_working_directory(elsewhere: Path) -> None:
    assert cli_json("clients", "create", "acme", "--json", database="sqlite:///rel/wh", cwd=elsewhere)
    assert (elsewhere / "rel" / "wh" / "catalog.sqlite3").is_file()


def test_the_option_wins_over_the_environment(db: Path, tmp_path: Path, elsewhere: Path) -> None:
    other = tmp_path / "other"
    done = run_cli(
        "clients",
        "create",
        "acme",
        "--json",
        database=db,
        cwd=elsewhere,
        env={"IMPORTAPI_DATABASE": sqlite_url(other)},
    )
    assert done.returncode == 0, done.stderr
    assert (db / "catalog.sqlite3").is_file() and not other.exists()


# -- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "env"])
def test_keys_create_prints_the_key_once_in_json(how: str, db: Path, elsewhere: Path) -> None:
    cli(how, "clients", "create", "acme", "--json", db=db, cwd=elsewhere)
    made = cli(how, "keys", "create", "1", "--json", db=db, cwd=elsewhere)
    assert set(made) == {"client_id", "key_id", "api_key"}
    assert made["client_id"] == 1
    assert URL_SAFE.fullmatch(made["api_key"]) and made["key_id"]
    with app_on(db) as http:
        assert http.get(f"/v2/client/1/authenticate?apikey={made['api_key']}").status_code == 200


def _secret_part(api_key: str, key_id: str) -> str:
    """What of a key is not its public id."""
    return api_key.replace(key_id, "", 1) if key_id in api_key else api_key


def test_keys_are_url_safe_distinct_and_carry_at_least_128_bits(db: Path) -> None:
    cli_json("clients", "create", "acme", "--json", database=db)
    made = [cli_json("keys", "create", "1", "--json", database=db) for _ in range(6)]
    keys = [m["api_key"] for m in made]
    assert len(set(keys)) == len(keys) and len({m["key_id"] for m in made}) == len(made)
    secrets = [_secret_part(m["api_key"], m["key_id"]) for m in made]
    # Drop what all keys share (a fixed prefix or separator carries no randomness).
    prefix = 0
    while all(len(s) > prefix and s[prefix] == secrets[0][prefix] for s in secrets):
        prefix += 1
    random_parts = [s[prefix:] for s in secrets]
    for part in random_parts:
        assert URL_SAFE.fullmatch(part)
        # Each character of [A-Za-z0-9_-] holds at most 6 bits: 128 bits need 22 of them.
        assert len(part) * 6 >= 128, part
    # Random text uses much of the alphabet; a counter or a timestamp would not.
    assert len(set("".join(random_parts))) >= 30


def test_keys_list_shows_times_and_never_the_key(db: Path) -> None:
    cli_json("clients", "create", "acme", "--json", database=db)
    used = cli_json("keys", "create", "1", "--json", database=db)
    revoked = cli_json("keys", "create", "1", "--json", database=db)
    idle = cli_json("keys", "create", "1", "--json", database=db)
    assert run_cli("keys", "revoke", revoked["key_id"], database=db).returncode == 0
    with app_on(db) as http:
        assert http.get(f"/v2/client/1/authenticate?apikey={used['api_key']}").status_code == 200

        def listed() -> dict[str, dict[str, Any]]:
            return {k["key_id"]: k for k in cli_json("keys", "list", "1", "--json", database=db)}

        wait_until(lambda: listed()[used["key_id"]]["last_used_at"], what="the key's last use")
    keys = listed()
    assert set(keys) == {used["key_id"], revoked["key_id"], idle["key_id"]}
    for k in keys.values():
        assert {"key_id", "created_at", "last_used_at", "revoked_at"} <= set(k)
        dt.datetime.fromisoformat(k["created_at"])
    assert keys[used["key_id"]]["revoked_at"] is None
    dt.datetime.fromisoformat(keys[used["key_id"]]["last_used_at"])
    dt.datetime.fromisoformat(keys[revoked["key_id"]]["revoked_at"])
    assert keys[idle["key_id"]]["last_used_at"] is None and keys[idle["key_id"]]["revoked_at"] is None

    for args in (("keys", "list", "1", "--json"), ("keys", "list", "1")):
        out = run_cli(*args, database=db).stdout
        for made in (used, revoked, idle):
            assert made["api_key"] not in out
            assert _secret_part(made["api_key"], made["key_id"])[-16:] not in out
        assert used["key_id"] in out


def test_a_revoked_key_is_refused_and_the_others_still_work(db: Path) -> None:
    cli_json("clients", "create", "acme", "--json", database=db)
    old = cli_json("keys", "create", "1", "--json", database=db)
    new = cli_json("keys", "create", "1", "--json", database=db)
    with app_on(db) as http:
        for made in (old, new):  # both work, and the app has seen (and cached) both
            assert http.get(f"/v2/client/1/authenticate?apikey={made['api_key']}").status_code == 200

        done = run_cli("keys", "revoke", old["key_id"], database=db)
        assert done.returncode == 0 and old["key_id"] in done.stdout
        assert http.get(f"/v2/client/1/authenticate?apikey={old['api_key']}").status_code == 401
        r = http.post(f"/v2/client/1/table/orders/data?apikey={old['api_key']}", json=EXAMPLE_2)
        assert r.status_code == 401 and r.json()["reasons"]
        assert cli_json("tables", "1", "--json", database=db) == []

        assert http.get(f"/v2/client/1/authenticate?apikey={new['api_key']}").status_code == 200
        r = http.post(f"/v2/client/1/table/orders/data?apikey={new['api_key']}", json=EXAMPLE_2)
        assert r.status_code == 201
    revoked = {k["key_id"]: k["revoked_at"] for k in cli_json("keys", "list", "1", "--json", database=db)}
    assert revoked[old["key_id"]] and revoked[new["key_id"]] is None


def test_revoking_an_unknown_key_is_an_error(db: Path) -> None:
    cli_json("clients", "create", "acme", "--json", database=db)
    assert_error(run_cli("keys", "revoke", "000000000000", database=db), "000000000000")


# -- tables ------------------------------------------------------------------------------


def test_tables_shows_key_fields_typed_columns_and_row_counts(client_with_data: Path) -> None:
    tables = {t["table"]: t for t in cli_json("tables", "1", "--json", database=client_with_data)}
    assert set(tables) == {"events", "orders"}
    orders, events = tables["orders"], tables["events"]
    assert orders["key_fields"] == ["id"] and orders["row_count"] == 2
    assert [(c["name"], c["type"]) for c in orders["columns"]] == [
        ("id", "integer"),
        ("email", "text"),
        ("status", "text"),
        ("created_at", "text"),
    ]
    assert sorted(events["key_fields"]) == ["kind", "n"] and events["row_count"] == 3
    # "note" was only ever null: a null never decides a type, so there is no column yet.
    assert {c["name"]: c["type"] for c in events["columns"]} == {
        "kind": "text",
        "n": "integer",
        "price": "double",
        "paid": "boolean",
        "meta": "json",
    }

    text = run_cli("tables", "1", database=client_with_data)
    assert text.returncode == 0
    for word in ("orders", "events", "2 rows", "3 rows", "email", "boolean", "json"):
        assert word in text.stdout


def test_tables_of_a_client_without_tables(db: Path) -> None:
    cli_json("clients", "create", "acme", "--json", database=db)
    assert cli_json("tables", "1", "--json", database=db) == []


# -- query ----------------------------------------------------------------------------------

SQL = "SELECT id, status FROM orders ORDER BY id"


def test_query_as_json_is_an_array_of_objects(client_with_data: Path) -> None:
    assert cli_json("query", "1", SQL, "--format", "json", database=client_with_data) == [
        {"id": 1, "status": "complete"},
        {"id": 2, "status": "pending"},
    ]
    typed = cli_json(
        "query",
        "1",
        "SELECT n, price, kind FROM events ORDER BY n",
        "--format",
        "json",
        database=client_with_data,
    )
    assert typed == [
        {"n": 1, "price": 1.5, "kind": "click"},
        {"n": 2, "price": 2.25, "kind": "view"},
        {"n": 3, "price": 0.5, "kind": "view"},
    ]


def test_query_as_csv(client_with_data: Path) -> None:
    done = run_cli("query", "1", SQL, "--format", "csv", database=client_with_data)
    assert done.returncode == 0, done.stderr
    assert list(csv.reader(io.StringIO(done.stdout))) == [
        ["id", "status"],
        ["1", "complete"],
        ["2", "pending"],
    ]


@pytest.mark.parametrize("fmt", [["--format", "table"], []])
def test_query_as_a_table_is_the_default(client_with_data: Path, fmt: list[str]) -> None:
    done = run_cli("query", "1", SQL, *fmt, database=client_with_data)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["id", "status"]
    assert set(lines[1]) <= {"-", " "}
    assert [line.split() for line in lines[2:4]] == [["1", "complete"], ["2", "pending"]]
    assert lines[-1] == "(2 rows)"


def snapshot(path: Path) -> str:
    """Every schema object and row of a SQLite file, as SQL text."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


WRITES = [
    "DELETE FROM orders",
    "DROP TABLE orders",
    "INSERT INTO orders (id, status) VALUES (99, 'forged')",
    "UPDATE orders SET status = 'forged'",
    "CREATE TABLE evil (a)",
    "ALTER TABLE orders ADD COLUMN evil TEXT",
    "DELETE FROM _importapi_columns",
    "SELECT 1; DELETE FROM orders",
    "VACUUM",
]


@pytest.mark.parametrize("sql", WRITES)
def test_a_write_statement_is_refused_and_nothing_changes(client_with_data: Path, sql: str) -> None:
    before = snapshot(client_with_data / "client_1.sqlite3")
    assert "forged" not in before and "evil" not in before and "complete" in before

    done = run_cli("query", "1", sql, "--format", "json", database=client_with_data)
    assert_error(done)
    assert done.stdout == ""

    assert snapshot(client_with_data / "client_1.sqlite3") == before


def test_a_bad_query_is_an_error(client_with_data: Path) -> None:
    assert_error(
        run_cli("query", "1", "SELECT * FROM no_such_table", database=client_with_data), "no_such_table"
    )


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["query", "99", "SELECT 1"],
        ["tables", "99"],
        ["keys", "create", "99"],
        ["keys", "list", "99"],
    ],
)
def test_an_unknown_client_is_an_error(db: Path, args: list[str]) -> None:
    cli_json("clients", "create", "acme", "--json", database=db)
    assert_error(run_cli(*args, database=db), "99")


@pytest.mark.parametrize(
    "args",
    [
        ["clients", "create"],
        ["keys", "create"],
        ["keys", "revoke"],
        ["keys", "list"],
        ["tables"],
        ["query", "1"],
        ["keys", "create", "not-a-number"],
        ["query", "1", "SELECT 1", "--format", "xml"],
        ["no-such-command"],
    ],
)
def test_a_usage_error_exits_2(db: Path, args: list[str]) -> None:
    done = run_cli(*args, database=db)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Usage:" in done.stderr and "Error:" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("url", ["mysql://x", "sqlite:///"])
@pytest.mark.parametrize(
    "args",
    [
        ["clients", "create", "acme"],
        ["tables", "1"],
        ["query", "1", "SELECT 1"],
        ["serve", "--port", "0"],
    ],
)
def test_a_bad_database_url_is_an_error(url: str, args: list[str], elsewhere: Path) -> None:
    assert_error(run_cli(*args, database=url, cwd=elsewhere, timeout=30))
    assert_error(run_cli(*args, env={"IMPORTAPI_DATABASE": url}, cwd=elsewhere, timeout=30))
    assert list(elsewhere.iterdir()) == []
