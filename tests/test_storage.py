"""The storage interface, on each backend (SQLite and PostgreSQL) alike.

Widening converts stored values exactly as ``kinds.widen_stored`` does (on PostgreSQL that
is SQL, so every kind of double is tried), read-only queries stay read-only, the key cache's
catalog version follows other processes, and the PostgreSQL layout is what the docs say.
"""

from __future__ import annotations

import itertools
import math
import random
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importapi.errors import BadRequest
from importapi.kinds import Kind, widen_stored
from importapi.push import PushResult
from importapi.rjmetrics.validate import validate
from importapi.settings import Limits
from importapi.storage import Storage, open_storage
from importapi.storage.postgres_rows import JSON_ROWS_MIN
from tests.backends import backend_of, fresh_postgres, refusing_connections
from tests.helpers import apply, wait_until


def push(
    storage: Storage, table: str, points: list[dict[str, Any]], client_id: int = 1, sandbox: bool = False
) -> PushResult:
    return apply(storage, client_id, validate([dict(p) for p in points], table), sandbox=sandbox)


def rows(storage: Storage, table: str) -> dict[Any, dict[str, Any]]:
    columns, found = storage.warehouse.read_rows(1, table)
    return {r[0]: dict(zip(columns, r)) for r in found}


def _doubles() -> list[float]:
    edges = [
        0.0,
        -0.0,
        3.0,
        -3.0,
        0.1 + 0.2,
        1e15,
        1.5e15,
        9007199254740992.0,
        9007199254740994.0,
        9999999999999998.0,
        1e16,
        1.2345678901234567e16,
        1e22,
        1e23,
        1e300,
        -1e300,
        1e-4,
        1e-5,
        1.5e-7,
        5e-324,
        2.2250738585072014e-308,
        1.7976931348623157e308,
        -1.7976931348623157e308,
        123456789.125,
        2.5,
        0.5,
    ]
    rng = random.Random(20)
    bits = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(250)]
    scaled = [rng.random() * 10 ** rng.randint(-8, 20) * rng.choice([1, -1]) for _ in range(150)]
    whole = [float(rng.randint(-(10**18), 10**18)) for _ in range(74)]
    return [d for d in edges + bits + scaled + whole if math.isfinite(d)]


@pytest.mark.parametrize("later", ["text", 2**70, {"a": 1}], ids=["to_text", "to_decimal", "to_json"])
def test_widening_stored_doubles_writes_them_as_python_does(storage: Storage, later: Any) -> None:
    """Every kind of double (tiny, huge, integral beyond 2**53, negative zero) widened to
    text, decimal or JSON is stored as ``kinds.widen_stored`` says: on PostgreSQL this is
    SQL in ALTER COLUMN ... USING, so it must agree with Python digit for digit. A stored
    negative zero is zero (SQLite keeps no sign on a stored zero, so neither backend does)."""
    storage.create_client("c")
    doubles = _doubles()
    for start in range(0, len(doubles), 100):
        push(
            storage,
            "t",
            [{"keys": ["id"], "id": i, "v": d} for i, d in enumerate(doubles[start : start + 100], start)],
        )
    push(storage, "t", [{"keys": ["id"], "id": -1, "v": later}])
    kind = {str: Kind.TEXT, int: Kind.DECIMAL, dict: Kind.JSON}[type(later)]
    stored = rows(storage, "t")
    _, raw = storage.warehouse.query(1, 'SELECT "id", "v" FROM "t" WHERE "id" >= 0 ORDER BY "id"')
    for (i, value), d in zip(raw, doubles):
        expected = widen_stored(d or 0.0, Kind.DOUBLE, kind)
        if kind is Kind.JSON:
            # a JSON number is decimal: jsonb may give 1e+23 back as 100000000000000000000000,
            # the same number, which reads as the same double
            assert float(stored[i]["v"]) == d, d
        else:
            assert value == expected, (d, value, expected)


def test_an_integral_double_is_the_same_decimal_key_as_the_integer(storage: Storage) -> None:
    """In a decimal key column, 3 and 3.0 are one key (PostgreSQL's numeric says so)."""
    storage.create_client("c")
    push(storage, "t", [{"keys": ["id"], "id": 2**70, "v": 0}])
    result = push(storage, "t", [{"keys": ["id"], "id": 3, "v": 1}, {"keys": ["id"], "id": 3.0, "v": 2}])
    assert (result.inserted, result.replaced) == (1, 1)
    assert rows(storage, "t")[3]["v"] == 2


@pytest.mark.parametrize(
    ("first", "later", "after"),
    [
        (True, 7, 1),
        (True, 2.5, 1.0),
        (True, 2**70, 1),
        (True, "s", "true"),
        (False, [1], False),
        (5, 2.5, 5.0),
        (5, 2**70, 5),
        (5, "s", "5"),
        (5, {"a": 1}, 5),
        (2.5, 2**70, 2.5),
        (2**70, "s", str(2**70)),
        ("s", {"a": 1}, "s"),
    ],
)
def test_every_widening_keeps_what_was_stored(storage: Storage, first: Any, later: Any, after: Any) -> None:
    """Each step up the lattice, through the storage: the first value reads back (as JSON
    values, ``read_rows``) as what it meant."""
    storage.create_client("c")
    push(storage, "t", [{"keys": ["id"], "id": 1, "v": first}])
    push(storage, "t", [{"keys": ["id"], "id": 2, "v": later}])
    got = rows(storage, "t")
    assert got[1]["v"] == after and type(got[1]["v"]) is type(after)
    assert got[2]["v"] == later


@pytest.mark.parametrize(
    "sql",
    [
        'DELETE FROM "t"',
        'DROP TABLE "t"',
        'INSERT INTO "t" ("id") VALUES (9)',
        'UPDATE "t" SET "v" = 0',
        'COMMIT; DROP TABLE "t"',
        'SELECT 1; DROP TABLE "t"',
        'CREATE TABLE "x" ("a" TEXT)',
    ],
)
def test_queries_cannot_write(storage: Storage, sql: str) -> None:
    storage.create_client("c")
    push(storage, "t", [{"keys": ["id"], "id": 1, "v": 1}])
    with pytest.raises(BadRequest):
        storage.warehouse.query(1, sql)
    assert rows(storage, "t") == {1: {"id": 1, "v": 1}}
    assert [t.schema.name for t in storage.warehouse.tables(1)] == ["t"]
    assert storage.warehouse.query(1, "SELECT 'a%b' AS x")[1] == [("a%b",)]  # no placeholder parsing


def test_catalog_version_follows_other_processes(storage: Storage, database: str) -> None:
    client = storage.create_client("c")
    info, _ = storage.catalog.create_key(client.client_id)
    before = storage.catalog.version()
    with open_storage(database) as other:
        other.catalog.revoke_key(info.key_id)
    # SQLite sees it on the next read of its change counter; PostgreSQL's notification
    # reaches this process's listener within milliseconds of the commit
    wait_until(lambda: storage.catalog.version() != before, timeout=5, what="the catalog's change")
    stored = storage.catalog.find_key(info.key_id)
    assert stored is not None and stored.revoked


def test_sqlite_catalog_version_sees_this_processs_own_change_at_once(tmp_path: Path) -> None:
    """SQLite's change counter is read at most every few milliseconds on the request path,
    but a change this process made is seen by the very next look."""
    with open_storage(str(tmp_path)) as storage:
        client = storage.create_client("c")
        for _ in range(3):
            info, _ = storage.catalog.create_key(client.client_id)
            before = storage.catalog.version()
            storage.catalog.revoke_key(info.key_id)
            assert storage.catalog.version() != before


def test_racing_first_pushes_create_one_table_with_every_column(storage: Storage) -> None:
    """Within one process too: many threads' first pushes to a new table, each with a column
    of its own, make one table with all the columns and every row."""
    storage.create_client("c")
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda n: push(storage, "new", [{"keys": ["id"], "id": n, f"c{n}": n}]), range(16))
        )
    assert sum(r.inserted for r in results) == 16
    (info,) = storage.warehouse.tables(1)
    assert set(info.schema.columns) == {"id", *(f"c{n}" for n in range(16))} and info.row_count == 16


def test_sandbox_counts_keys_of_a_widening_key_column(storage: Storage) -> None:
    """The sandbox compares keys as the column will hold them after widening."""
    storage.create_client("c")
    push(storage, "t", [{"keys": ["id"], "id": n, "v": n} for n in (1, 2)])
    plan = push(
        storage, "t", [{"keys": ["id"], "id": "1", "v": 0}, {"keys": ["id"], "id": "x", "v": 0}], sandbox=True
    )
    assert (plan.inserted, plan.replaced) == (1, 1)
    assert plan.plan["widen_columns"] == [{"name": "id", "from": "integer", "to": "text"}]
    assert storage.warehouse.tables(1)[0].schema.columns["id"].kind is Kind.INTEGER


@pytest.mark.backends("postgresql")
def test_postgresql_layout_one_schema_per_client_and_real_types(storage: Storage) -> None:
    """Client tables live in client_<id> with real column types and the key as primary key;
    the catalog is in the schema importapi."""
    assert backend_of(storage) == "postgresql"
    storage.create_client("a")
    storage.create_client("b")
    push(
        storage,
        "orders",
        [{"keys": ["id", "at"], "id": 1, "at": "x", "b": True, "f": 1.5, "big": 2**70, "j": [1]}],
    )
    push(storage, "orders", [{"keys": ["id"], "id": 2}], client_id=2)
    _, found = storage.warehouse.query(
        1,
        "SELECT table_schema, table_name, column_name, data_type"
        " FROM information_schema.columns WHERE table_name = 'orders'"
        " ORDER BY table_schema, ordinal_position",
    )
    assert found == [
        ("client_1", "orders", "id", "bigint"),
        ("client_1", "orders", "at", "text"),
        ("client_1", "orders", "b", "boolean"),
        ("client_1", "orders", "f", "double precision"),
        ("client_1", "orders", "big", "numeric"),
        ("client_1", "orders", "j", "jsonb"),
        ("client_2", "orders", "id", "bigint"),
    ]
    _, keys = storage.warehouse.query(
        1, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'client_1' AND tablename = 'orders'"
    )
    assert keys == [("CREATE UNIQUE INDEX orders_pkey ON client_1.orders USING btree (id, at)",)]
    _, catalog = storage.warehouse.query(
        1, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'importapi' ORDER BY 1"
    )
    assert [r[0] for r in catalog] == ["activity", "api_keys", "catalog_state", "clients", "settings"]


def test_another_process_changing_a_table_is_seen_by_queries_and_pushes(
    storage: Storage, database: str
) -> None:
    """A process that cached a table's statements (and the database its plans) reads and
    writes the table as it is after another process added and widened columns."""
    storage.create_client("c")
    push(storage, "t", [{"keys": ["id"], "id": 1, "v": 1}])
    for _ in range(6):  # often enough for statements to be prepared on the server
        assert storage.warehouse.query(1, 'SELECT * FROM "t"')[0] == ["id", "v"]
        push(storage, "t", [{"keys": ["id"], "id": 1, "v": 1}])
    with open_storage(database) as other:
        push(other, "t", [{"keys": ["id"], "id": 2, "v": "x", "w": 1}])
    result = push(storage, "t", [{"keys": ["id"], "id": 3, "v": 5}, {"keys": ["id"], "id": 2, "v": 6}])
    assert (result.inserted, result.replaced) == (1, 1)
    assert storage.warehouse.query(1, 'SELECT * FROM "t" ORDER BY "id"') == (
        ["id", "v", "w"],
        [(1, "1", None), (2, "6", None), (3, "5", None)],
    )


def test_rows_dropped_unread_give_their_connection_back(storage: Storage) -> None:
    storage.create_client("c")
    push(storage, "t", [{"keys": ["id"], "id": 1}])
    for _ in range(30):  # more than a pool holds
        storage.warehouse.read_rows(1, "t")
    assert list(storage.warehouse.read_rows(1, "t")[1]) == [(1,)]


# -- one behaviour: the same pushes on both backends give the same answers and tables -----

SCALARS = (
    st.booleans()
    | st.integers(-5, 5)
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text("ab1 .", max_size=3)
)
# A JSON number is decimal: jsonb writes out integral doubles beyond 2**53 as integers (the
# same number, not the same double), so nested doubles stay below that.


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=2) | st.dictionaries(st.text("kK", max_size=2), inner, max_size=2)


NESTED = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text("xy", max_size=2)
    | st.floats(-(2.0**52), 2.0**52, allow_nan=False),
    _containers,
    max_leaves=4,
)
POINT = st.tuples(
    st.fixed_dictionaries(
        {"id": st.integers(0, 4) | st.sampled_from(["0", "1", "x"])},
        optional={"a": st.none() | SCALARS, "b": st.none() | SCALARS | NESTED},
    ),
    st.integers(0, 9),
).map(lambda p: {**p[0], "B": 1} if p[1] == 0 else p[0])  # now and then a name that only differs in case
REQUESTS = st.lists(st.lists(POINT, min_size=1, max_size=5), min_size=1, max_size=5)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Storage, Storage]]:
    with (
        fresh_postgres() as url,
        open_storage(str(tmp_path_factory.mktemp("sqlite"))) as lite,
        open_storage(url) as pg,
    ):
        lite.create_client("c")
        pg.create_client("c")
        yield lite, pg


_tables = itertools.count()


def _outcome(storage: Storage, table: str, points: list[dict[str, Any]], sandbox: bool) -> Any:
    try:
        r = push(storage, table, [{"keys": ["id"], **p} for p in points], sandbox=sandbox)
    except BadRequest as exc:
        return ("refused", exc.reasons)
    return (r.inserted, r.replaced, r.plan)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=REQUESTS)
def test_the_same_pushes_give_the_same_answers_and_tables_on_both_backends(
    both: tuple[Storage, Storage], requests: list[list[dict[str, Any]]]
) -> None:
    """Random pushes (every kind of value, widening keys and columns, names differing in
    case, nulls) through the sandbox and for real: both backends answer alike and end with
    the same schema and the same values."""
    table = f"t{next(_tables)}"
    for points in requests:
        for sandbox in (True, False):
            outcomes = [_outcome(s, table, points, sandbox) for s in both]
            assert outcomes[0] == outcomes[1], (points, sandbox)
    lite, pg = ({t.schema.name: t for t in s.warehouse.tables(1)}.get(table) for s in both)
    assert (lite is None) == (pg is None)
    if lite is None or pg is None:
        return
    columns = [[(c["name"], c["type"]) for c in info.as_dict()["columns"]] for info in (lite, pg)]
    assert columns[0] == columns[1]
    assert (lite.schema.key_fields, lite.row_count) == (pg.schema.key_fields, pg.row_count)
    rows = [sorted(s.warehouse.read_rows(1, table)[1], key=lambda r: str(r[0])) for s in both]
    assert rows[0] == rows[1]


def test_text_keys_come_in_byte_order_on_both_backends(storage: Storage) -> None:
    """Upper case before "_" before lower case, as SQLite compares text, whatever collation
    the PostgreSQL database has by default."""
    storage.create_client("c")
    push(storage, "t", [{"keys": ["k"], "k": k} for k in ["b", "_", "B", "a", "é", "A"]])
    assert [r[0] for r in storage.warehouse.read_rows(1, "t")[1]] == ["A", "B", "_", "a", "b", "é"]
    assert [r[0] for r in storage.warehouse.query(1, 'SELECT "k" FROM "t" ORDER BY "k"')[1]] == [
        "A",
        "B",
        "_",
        "a",
        "b",
        "é",
    ]


@pytest.mark.backends("postgresql")
def test_pushes_go_on_after_the_database_dropped_every_connection(storage: Storage, database: str) -> None:
    """As after a restart of PostgreSQL: the pool's connections are dead, and the next push
    finds a live one instead of failing."""
    storage.create_client("c")
    with ThreadPoolExecutor(8) as pool:  # open several pooled connections
        list(pool.map(lambda n: push(storage, "t", [{"keys": ["id"], "id": n}]), range(16)))
    with refusing_connections(database):
        pass  # every open connection of the database is terminated
    result = push(storage, "t", [{"keys": ["id"], "id": 100}])
    assert result.inserted == 1
    assert len(rows(storage, "t")) == 17


# -- warehouses made by an earlier release ---------------------------------------------------


def _as_an_earlier_release_left_it(database: str) -> None:
    """Drop the catalog columns this release added to a client's schema tables."""
    import sqlite3

    import psycopg

    from importapi.storage.base import parse_database_url

    kind, target = parse_database_url(database)
    drops = [("_importapi_tables", c) for c in ("table_version", "parent", "parent_keys")]
    drops.append(("_importapi_columns", "path"))
    if kind == "sqlite":
        conn = sqlite3.connect(f"{target}/client_1.sqlite3")
        for table, column in drops:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.commit()
        conn.close()
    else:
        with psycopg.connect(target, autocommit=True) as pg:
            for table, column in drops:
                pg.execute(f"ALTER TABLE client_1.{table} DROP COLUMN {column}")


def test_a_warehouse_of_an_earlier_release_keeps_working(database: str) -> None:
    with open_storage(database) as storage:
        storage.create_client("acme", 1)
        push(storage, "orders", [{"keys": ["id"], "id": 1, "status": "new"}])
    _as_an_earlier_release_left_it(database)
    with open_storage(database) as storage:  # a new process: it upgrades what it opens
        push(storage, "orders", [{"keys": ["id"], "id": 1, "status": "paid"}, {"keys": ["id"], "id": 2}])
        assert {k: r["status"] for k, r in rows(storage, "orders").items()} == {1: "paid", 2: None}
        (info,) = storage.warehouse.tables(1)
        assert info.schema.name == "orders" and info.schema.parent is None and info.schema.version is None


def _hard_points(n: int, negative_zero: bool) -> list[dict[str, Any]]:
    """Data points whose values are easy to get subtly wrong on the way in: every hard
    double, 64-bit integers at both ends, text with quotes, backslashes, control characters
    and non-BMP letters, JSON, booleans, nulls; with ``negative_zero``, also -0.0 as a double
    and as text (which PostgreSQL's large pushes send the other way)."""
    doubles = [d for d in _doubles() if negative_zero or math.copysign(1, d) > 0 or d]
    texts = ['a "quoted" \\ back', "tab\tnew\nline", "\x1f\x1e unit", "None", "Zürich 😀", ""]
    texts += ["-0.0"] if negative_zero else []
    ints = [2**63 - 1, -(2**63), 0, 1, -1, 2**53 + 1]
    return [
        {
            "keys": ["id"],
            "id": i,
            "ratio": doubles[i % len(doubles)],
            "count": ints[i % len(ints)] if i % 11 else None,
            "note": texts[i % len(texts)],
            "ok": i % 3 == 0,
            "meta": {"n": i, "tags": ["x", i % 5]} if i % 4 else None,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("negative_zero", [False, True], ids=["as_json", "with_negative_zero"])
def test_a_large_push_stores_what_small_pushes_store(storage: Storage, negative_zero: bool) -> None:
    """A push of many rows goes to the database another way than one of a few (as one JSON
    text, on PostgreSQL): the same rows land the same, every double to the bit."""
    storage.create_client("c")
    points = _hard_points(1500, negative_zero)
    many = Limits(max_points=len(points))
    apply(storage, 1, validate([dict(p) for p in points], "big", limits=many))
    small = JSON_ROWS_MIN - 1  # pushes bound the other way, an array per column
    for start in range(0, len(points), small):
        push(storage, "small", points[start : start + small])
    big, few = rows(storage, "big"), rows(storage, "small")
    assert big == few and len(big) == len(points)
    assert [struct.pack("<d", r["ratio"]) for r in big.values()] == [
        struct.pack("<d", r["ratio"]) for r in few.values()
    ]
    replaced = apply(storage, 1, validate([dict(p) for p in points], "big", limits=many))  # replacing all
    assert (replaced.inserted, replaced.replaced) == (0, len(points))
    assert rows(storage, "big") == few
