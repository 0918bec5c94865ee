"""The warehouse interface (one implementation per backend) and the plain records that
storage hands out.

Pushes go through ``Warehouse.submit``, which returns a ``concurrent.futures.Future`` so
that a backend can group concurrent pushes into one transaction (group commit) while the
command line simply blocks on it; the server awaits ``push``, which a backend may answer for
a whole group at once.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from importapi.errors import Detail
from importapi.push import Push, PushResult
from importapi.schema import TableSchema
from importapi.settings import Limits


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_database_url(url: str) -> tuple[str, str]:
    """``("sqlite", folder)`` or ``("postgresql", url)``; a bare path means a SQLite folder."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise ValueError("sqlite:/// needs a folder: sqlite:///importapi-data")
        return "sqlite", path
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql", url
    if "://" in url:
        raise ValueError(f"unknown database URL {url!r}: use sqlite:///FOLDER or postgresql://...")
    return "sqlite", url


@dataclass(frozen=True)
class ClientInfo:
    client_id: int
    name: str
    created_at: str


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    client_id: int
    digest: bytes
    revoked: bool


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    client_id: int
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TableInfo:
    schema: TableSchema
    row_count: int
    last_push_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        s = self.schema
        columns = [
            {"name": c.name, "type": c.kind.label, "widened_at": c.widened_at} for c in s.columns.values()
        ]
        for out, c in zip(columns, s.columns.values()):
            if c.path:
                out["path"] = c.path
        extra: dict[str, Any] = {"parent": s.parent} if s.parent else {}
        if s.version is not None:
            extra["table_version"] = s.version
        return {
            "table": s.name,
            "key_fields": list(s.key_fields),
            "columns": columns,
            "row_count": self.row_count,
            "created_at": s.created_at,
            **extra,
        }


@dataclass(frozen=True)
class Activity:
    """One finished API request, as the console's Activity page lists it."""

    at: str
    request_id: str
    route: str
    client_id: int | None
    key_id: str | None
    table: str | None
    points: int
    inserted: int
    replaced: int
    sandbox: bool
    status: int
    details: tuple[Detail, ...] = ()
    stale: int = 0
    """Records not applied: older than the stored rows (the Stitch routes)."""

    @property
    def refused(self) -> bool:
        return self.status >= 400

    @property
    def reasons(self) -> list[str]:
        return [d.reason for d in self.details]


@dataclass
class CatalogDump:
    """A warehouse's catalog as ``importapi copy`` moves it: clients, keys (each with its
    stored digest; the keys themselves are never stored) and the owner's settings."""

    clients: list[ClientInfo]
    keys: list[tuple[KeyInfo, bytes]]
    settings: dict[str, str]


@dataclass(frozen=True)
class Page:
    """Which rows of a table to read, in key order."""

    descending: bool = False
    offset: int = 0
    limit: int | None = None


EVERY_ROW = Page()
RowStream = tuple[list[str], Iterator[tuple[Any, ...]]]
"""A table's column names, and its rows read lazily."""


class Warehouse(abc.ABC):
    """One backend's data: each client's tables, their schemas and rows.

    Every method blocks (callers on the event loop run it in a thread), except ``submit``,
    which only queues the push, and ``push``, which awaits it: both may run on the loop.
    """

    limits: Limits

    @abc.abstractmethod
    def create_space(self, client_id: int) -> None:
        """Make room for a new client's tables (a file, a schema); doing it again is harmless."""

    @abc.abstractmethod
    def submit(self, push: Push) -> Future[list[PushResult]]:
        """Apply (or, in the sandbox, plan) a validated push; resolves after the commit,
        with a result per batch. Queues the push and returns at once."""

    async def push(self, push: Push) -> list[PushResult]:
        """``submit`` for the event loop: the results, once committed."""
        return await asyncio.wrap_future(self.submit(push))

    @abc.abstractmethod
    def tables(self, client_id: int) -> list[TableInfo]: ...

    @abc.abstractmethod
    def query(self, client_id: int, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run read-only SQL on a client's data; a write statement is refused."""

    @abc.abstractmethod
    def read_rows(self, client_id: int, table: str, page: Page = EVERY_ROW) -> RowStream:
        """A table's columns (schema order) and its rows ordered by the key fields, or the
        page of them asked for.

        Values come back as the JSON values they hold (``kinds.from_storage``). The rows are
        read lazily (an export streams them); an unknown table is a NotFound."""

    @abc.abstractmethod
    def restore_table(self, client_id: int, info: TableInfo, rows: Iterable[Sequence[Any]]) -> int:
        """Create a table with exactly this schema and last push (column kinds, order, key
        fields, times) and fill it with rows of JSON values in column order, as ``read_rows`` gives them;
        the number of rows written. The table must not exist yet."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StorageUnavailable unless the warehouse can take writes."""

    def check_writable(self) -> None:
        """Readiness: raise StorageUnavailable unless a write would go through now.

        Slower than ``ping`` (a backend may take its write lock and sync a file), so it
        serves readiness probes, not every request. Backends override it to exercise
        their real write path; this default only pings.
        """
        self.ping()

    @abc.abstractmethod
    def close(self) -> None: ...
