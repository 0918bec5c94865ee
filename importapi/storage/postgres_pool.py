"""Connections to the PostgreSQL warehouse: the pool, its errors, and how times travel.

The catalog and the warehouse share one pool per process. Driver errors leave a pooled
connection as the contract's errors (``pooled``): no psycopg exception reaches a caller.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool, PoolTimeout

from importapi.errors import ServerError, StorageUnavailable
from importapi.storage import postgres_sql as q

log = logging.getLogger("importapi.storage")

POOL_TIMEOUT = 30.0
PING_TIMEOUT = 5.0
CATALOG_LOCK = 0x1A7A0001  # advisory lock key for catalog changes (client ids, bootstrap)
Pool = ConnectionPool[psycopg.Connection[Any]]


class _Text(Loader):
    """numeric and json come back as their text, as SQLite stores them: exact, and printable."""

    def load(self, data: Any) -> str:
        return bytes(data).decode()


def _configure(conn: psycopg.Connection[Any]) -> None:
    for name in ("numeric", "json", "jsonb"):
        conn.adapters.register_loader(name, _Text)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def open_pool(url: str, size: int) -> Pool:
    """A pool of autocommit connections, on a database set up for the warehouse."""
    try:  # one plain connection first: its error says what is wrong (the pool's would not)
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.Error as exc:
        raise StorageUnavailable(f"cannot connect to the warehouse database: {one_line(exc)}") from exc
    pool: Pool = ConnectionPool(
        url,
        min_size=1,
        max_size=size,
        kwargs={"autocommit": True},
        configure=_configure,
        open=False,
        name="importapi",
        timeout=POOL_TIMEOUT,
    )
    try:
        pool.open(wait=True, timeout=10)
        _bootstrap(pool)
    except PoolTimeout as exc:
        pool.close()
        raise StorageUnavailable(f"cannot connect to the warehouse database: {exc}") from exc
    except BaseException:
        pool.close()
        raise
    return pool


def _bootstrap(pool: Pool) -> None:
    """The catalog's schema and functions, made once by whichever process comes first."""
    with pooled(pool) as conn:
        ready = conn.execute(
            "SELECT to_regclass('importapi.catalog_state') IS NOT NULL"
            " AND to_regprocedure('importapi.float_text(double precision)') IS NOT NULL"
            " AND EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'importapi'"
            " AND table_name = 'activity' AND column_name = 'stale')"
        ).fetchone()
        if ready and ready[0]:
            return
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (CATALOG_LOCK,))
                for statement in q.CATALOG_DDL:
                    conn.execute(statement)
        except psycopg.Error as exc:
            raise StorageUnavailable(
                f"cannot set up the warehouse in this database: {one_line(exc)}"
            ) from exc


@contextmanager
def pooled(pool: Pool, timeout: float = POOL_TIMEOUT) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection; driver errors leave as the contract's errors."""
    try:
        with pool.connection(timeout=timeout) as conn:
            yield conn
    except PoolTimeout as exc:
        raise StorageUnavailable(f"the warehouse database cannot be reached ({exc})") from exc
    except psycopg.OperationalError as exc:
        log.warning("warehouse database error: %s", exc)
        raise StorageUnavailable(f"the warehouse database cannot take writes right now ({exc})") from exc
    except psycopg.Error as exc:
        log.exception("warehouse database error")
        raise ServerError() from exc


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def stamp(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)
