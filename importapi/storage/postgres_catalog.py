"""The catalog on PostgreSQL: the schema ``importapi``, and how processes learn of changes.

A change to clients or keys bumps ``importapi.catalog_state`` and sends ``NOTIFY
importapi_catalog`` in its transaction; each process listens on a connection of its own and
counts the notifications, so ``version`` is a number in memory that the request path reads
without a round trip. A listener that loses its connection counts that too (anything may
have changed meanwhile), and listens again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from importapi.storage.catalog import CatalogDB, Run, with_percent_placeholders
from importapi.storage.postgres_pool import CATALOG_LOCK, Pool, iso, one_line, pooled, stamp

log = logging.getLogger("importapi.storage")
CHANNEL = "importapi_catalog"


class _Listener:
    """Counts the catalog's change notifications, on a thread and a connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.changes = 0
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="catalog-listener", daemon=True)
        self._thread.start()
        if not self._listening.wait(10):
            log.warning("not listening for catalog changes yet; keys are checked again until it is")

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.changes += 1  # whatever changed while nobody listened
                    self._listening.set()
                    while not self._stopping.is_set():
                        for _note in conn.notifies(timeout=0.5):
                            self.changes += 1
            except psycopg.Error as exc:
                self.changes += 1
                self._listening.clear()
                if not self._stopping.is_set():
                    log.warning("catalog listener lost its connection (%s); listening again", one_line(exc))
                    self._stopping.wait(1.0)

    @property
    def version(self) -> int:
        # Until it listens, every call is a change: nothing cached is trusted.
        if not self._listening.is_set():
            self.changes += 1
        return self.changes

    def close(self) -> None:
        """Stop listening; the thread ends within its next half-second wait, on its own."""
        self._stopping.set()


class PostgresCatalogDB(CatalogDB):
    prefix = "importapi."

    def __init__(self, pool: Pool, url: str) -> None:
        self.pool = pool
        self._listener = _Listener(url)
        self._local = 0  # this process's own changes, seen before their notification arrives

    def run(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        many: bool = False,
        activity: bool = False,  # noqa: ARG002 -- one database holds the catalog and the window
    ) -> list[tuple[Any, ...]]:
        with pooled(self.pool) as conn:
            return _run(conn, sql, params, many)

    @contextmanager
    def transaction(self, *, activity: bool = False) -> Iterator[Run]:
        with pooled(self.pool) as conn, conn.transaction():
            if not activity:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (CATALOG_LOCK,))

            def run(sql: str, params: Sequence[Any] = (), many: bool = False) -> list[tuple[Any, ...]]:
                return _run(conn, sql, params, many)

            yield run

    def version(self) -> int:
        return self._listener.version + self._local

    def announce(self, run: Run) -> None:
        run("UPDATE importapi.catalog_state SET version = version + 1")
        run(f"NOTIFY {CHANNEL}")
        self._local += 1

    def stamp(self, iso_text: str | None) -> Any:
        return stamp(iso_text)

    def iso(self, value: Any) -> str | None:
        return iso(value)

    def close(self) -> None:
        self._listener.close()


def _run(conn: psycopg.Connection[Any], sql: str, params: Sequence[Any], many: bool) -> list[tuple[Any, ...]]:
    sql = with_percent_placeholders(sql)
    if many:
        with conn.cursor() as cur:
            cur.executemany(sql, params)
        return []
    cur = conn.execute(sql, params)
    return cur.fetchall() if cur.description is not None else []
