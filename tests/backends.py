"""The two warehouse backends under test: a SQLite folder, or a fresh PostgreSQL database.

PostgreSQL is the server at ``IMPORTAPI_TEST_POSTGRES`` (default: 127.0.0.1:5432, trust
auth, database ``test``), which ``scripts/ensure-postgres.sh`` starts. Each test that runs
on it gets a database of its own, created empty and dropped afterwards, so tests cannot see
each other. Without a reachable server the PostgreSQL half of the suite is skipped with the
reason, except under CI (``CI=true``), where it fails: CI must prove both backends.

Also here: the few questions the contract tests ask of the warehouse's SQL catalog
(declared types, a value's storage type, the SQL objects), one answer per backend.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from importapi.storage import Storage

BACKENDS = ("sqlite", "postgresql")
ADMIN_URL = os.environ.get("IMPORTAPI_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_names = itertools.count(1)


@functools.cache
def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None when it can."""
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())
        return (
            f"PostgreSQL is not reachable at {ADMIN_URL} ({detail}); start it with scripts/ensure-postgres.sh"
        )
    return None


def require_postgres() -> None:
    problem = postgres_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI runs the PostgreSQL tests and cannot: {problem}", pytrace=False)
    pytest.skip(problem)


def url_for(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


@functools.cache
def _drop_leftovers() -> None:
    """Drop test databases of test runs that were killed (their process is gone)."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        for (name,) in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'importapi\\_test\\_%'"
        ).fetchall():
            pid = name.split("_")[2]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """The URL of a new, empty database, dropped (with any connection left) afterwards."""
    require_postgres()
    _drop_leftovers()
    name = f"importapi_test_{os.getpid()}_{next(_names)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        # a linguistic default collation, as production databases often have: importapi must
        # not depend on the database's collation (its text columns are declared "C")
        admin.execute(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
            " LOCALE 'C.UTF-8'"
        )
    try:
        yield url_for(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def warehouse(backend: str, folder: Any) -> Iterator[str]:
    """A database URL for the backend: ``folder`` for SQLite, a fresh database otherwise."""
    if backend == "sqlite":
        yield f"sqlite:///{folder}"
    else:
        with fresh_postgres() as url:
            yield url


def backend_of(storage: Storage) -> str:
    return storage.backend


# -- what the contract tests ask of each backend's SQL catalog --------------------------

DECLARED = {
    "sqlite": {
        "integer": "INTEGER",
        "text": "TEXT",
        "double": "REAL",
        "boolean": "BOOLEAN",
        "json": "TEXT",
        "decimal": "TEXT",
    },
    "postgresql": {
        "integer": "bigint",
        "text": "text",
        "double": "double precision",
        "boolean": "boolean",
        "json": "jsonb",
        "decimal": "numeric",
    },
}
"""The SQL type each backend declares for each column kind."""

STORED = {
    "sqlite": {
        "integer": "integer",
        "double": "real",
        "text": "text",
        "boolean": "integer",
        "json": "text",
        "decimal": "text",
    },
    "postgresql": {
        "integer": "bigint",
        "double": "double precision",
        "text": "text",
        "boolean": "boolean",
        "json": "jsonb",
        "decimal": "numeric",
    },
}
"""What each backend reports as a stored value's type (SQLite: ``typeof``)."""


def _sql(storage: Storage, client_id: int, query: str) -> list[tuple[Any, ...]]:
    return storage.warehouse.query(client_id, query)[1]


def declared_types(storage: Storage, client_id: int, table: str) -> dict[str, str]:
    if backend_of(storage) == "sqlite":
        return dict(_sql(storage, client_id, f"SELECT name, type FROM pragma_table_info('{table}')"))
    return dict(
        _sql(
            storage,
            client_id,
            "SELECT column_name, data_type FROM information_schema.columns"
            f" WHERE table_schema = current_schema() AND table_name = '{table}'",
        )
    )


def value_types(storage: Storage, client_id: int, table: str, column: str, order: str) -> list[str]:
    """The type each stored value of a column has, in the given row order."""
    quoted = '"' + column.replace('"', '""') + '"'
    fn = "typeof" if backend_of(storage) == "sqlite" else "pg_typeof"
    return [
        str(r[0]) for r in _sql(storage, client_id, f'SELECT {fn}({quoted}) FROM "{table}" ORDER BY {order}')
    ]


def sql_objects(storage: Storage, client_id: int) -> list[tuple[Any, ...]]:
    """Every SQL object of the client's warehouse, with its definition."""
    if backend_of(storage) == "sqlite":
        return _sql(storage, client_id, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    return _sql(
        storage,
        client_id,
        """
        SELECT 'column', c.table_name || '.' || c.column_name,
               c.data_type || ' ' || c.is_nullable || ' ' || c.ordinal_position
          FROM information_schema.columns c WHERE c.table_schema = current_schema()
        UNION ALL
        SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()
        ORDER BY 1, 2""",
    )


def user_tables(storage: Storage, client_id: int) -> list[str]:
    """The client's tables that are not the system's own."""
    if backend_of(storage) == "sqlite":
        query = (
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name NOT LIKE '\\_importapi%' ESCAPE '\\' ORDER BY name"
        )
    else:
        query = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            " AND table_name NOT LIKE '\\_importapi%' ORDER BY table_name"
        )
    return [r[0] for r in _sql(storage, client_id, query)]


def insertion_order(storage: Storage) -> str:
    """An ORDER BY that lists rows in the order they were first stored, for small tables
    in a fresh warehouse (SQLite's rowid; PostgreSQL has no such column, so its physical
    order stands in, which holds only while no row was replaced)."""
    return "rowid" if backend_of(storage) == "sqlite" else "ctid"


# -- doing things to a PostgreSQL warehouse behind the server's back ---------------------


def _admin_of(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def every_row_as_text(url: str) -> bytes:
    """Every row of every table in the database, as text: what a scan of its files would see."""
    with _admin_of(url) as conn:
        tables = conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        parts = [str(r[0]) for (t,) in tables for r in conn.execute(f"SELECT t::text FROM {t} AS t")]
    return "\n".join(parts).encode()


@contextmanager
def refusing_connections(url: str) -> Iterator[None]:
    """The database takes no new connection and has lost the open ones, until the block ends."""
    name = url.rpartition("/")[2]
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def break_schema_table(url: str, client_id: int) -> None:
    with _admin_of(url) as conn:
        conn.execute(f'ALTER TABLE "client_{client_id}"._importapi_tables RENAME COLUMN version TO broken')
