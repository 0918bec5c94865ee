"""The storage interface and the plain records it hands out.

Pushes go through ``submit``, which returns a ``concurrent.futures.Future`` so that a
backend can group concurrent pushes into one transaction (group commit) while the command
line simply blocks on it; the server awaits ``push``, which a backend may answer for a whole
group at once.
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Self

from importapi.kinds import Kind
from importapi.records import Batch, Limits
from importapi.schema import TableSchema

DEFAULT_DATABASE = "sqlite:///importapi-data"


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
        raise ValueError(
            f"unknown database URL {url!r}: use sqlite:///FOLDER or postgresql://..."
        )
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
        return {
            "key_id": self.key_id,
            "client_id": self.client_id,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
        }


@dataclass
class TableInfo:
    schema: TableSchema
    row_count: int
    last_push_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.schema.name,
            "key_fields": list(self.schema.key_fields),
            "columns": [
                {"name": c.name, "type": c.kind.label, "widened_at": c.widened_at}
                for c in self.schema.columns.values()
            ],
            "row_count": self.row_count,
            "created_at": self.schema.created_at,
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
    reasons: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        return self.status >= 400


@dataclass
class CatalogDump:
    """A warehouse's catalog as ``importapi copy`` moves it: clients, keys (each with its
    stored digest; the keys themselves are never stored) and the owner's settings."""

    clients: list[ClientInfo]
    keys: list[tuple[KeyInfo, bytes]]
    settings: dict[str, str]


@dataclass
class PushResult:
    table: str
    inserted: int
    replaced: int
    plan: dict[str, Any] = field(default_factory=dict)
    kinds: dict[str, Kind] | None = None
    """The table's columns and their kinds once the push is applied (not for the sandbox)."""


class Storage(abc.ABC):
    """What the server and the command line need from a warehouse backend."""

    limits: Limits

    # -- clients and keys -------------------------------------------------
    @abc.abstractmethod
    def create_client(self, name: str, client_id: int | None = None) -> ClientInfo: ...

    @abc.abstractmethod
    def get_client(self, client_id: int) -> ClientInfo | None: ...

    @abc.abstractmethod
    def list_clients(self) -> list[ClientInfo]: ...

    @abc.abstractmethod
    def create_key(self, client_id: int) -> tuple[KeyInfo, str]:
        """A new key for the client: its record and the key itself, shown once."""

    @abc.abstractmethod
    def list_keys(self, client_id: int) -> list[KeyInfo]: ...

    @abc.abstractmethod
    def revoke_key(self, key_id: str) -> KeyInfo: ...

    @abc.abstractmethod
    def find_key(self, key_id: str) -> StoredKey | None: ...

    @abc.abstractmethod
    def touch_keys(self, last_used: dict[str, str]) -> None:
        """Record when keys were last used (written in batches, off the request path)."""

    @abc.abstractmethod
    def catalog_version(self) -> int:
        """A number that changes whenever another process changes clients or keys."""

    # -- data -------------------------------------------------------------
    @abc.abstractmethod
    def submit(self, client_id: int, batch: Batch, *, sandbox: bool = False) -> Future[PushResult]:
        """Apply (or, in the sandbox, plan) a validated push; resolves after the commit."""

    async def push(self, client_id: int, batch: Batch, *, sandbox: bool = False) -> PushResult:
        """``submit`` for the event loop: the result, once committed."""
        return await asyncio.wrap_future(self.submit(client_id, batch, sandbox=sandbox))

    @abc.abstractmethod
    def tables(self, client_id: int) -> list[TableInfo]: ...

    @abc.abstractmethod
    def query(self, client_id: int, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run read-only SQL on a client's data; a write statement is refused."""

    @abc.abstractmethod
    def read_rows(
        self, client_id: int, table: str, *, descending: bool = False, offset: int = 0,
        limit: int | None = None,
    ) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
        """A table's columns (schema order) and its rows ordered by the key fields.

        Values come back as the JSON values they hold (``kinds.from_storage``). The rows are
        read lazily (an export streams them); an unknown table is a NotFound."""

    # -- the console: owner settings and the activity window --------------
    @abc.abstractmethod
    def get_setting(self, name: str) -> str | None:
        """One of the warehouse's own settings (the owner's password hash, the session secret)."""

    @abc.abstractmethod
    def set_setting(self, name: str, value: str, *, replace: bool = True) -> str:
        """Store a setting and return the value now stored; ``replace=False`` keeps an
        existing value, so processes racing to create one agree on it."""

    @abc.abstractmethod
    def record_activity(self, events: Sequence[Activity], keep: int) -> None:
        """Append finished requests, then keep only the newest ``keep`` pushes and the
        newest ``keep`` refusals (``Activity.refused``)."""

    @abc.abstractmethod
    def recent_activity(self, limit: int, *, refused: bool) -> list[Activity]:
        """The newest recorded pushes, or refusals, newest first."""

    # -- copying a warehouse (importapi copy) -------------------------------
    @abc.abstractmethod
    def export_catalog(self) -> CatalogDump:
        """Every client, key and setting, with their ids and times."""

    @abc.abstractmethod
    def restore_catalog(self, dump: CatalogDump) -> None:
        """Recreate an exported catalog in a warehouse that has no clients yet."""

    @abc.abstractmethod
    def restore_table(self, client_id: int, schema: TableSchema, rows: Iterable[Sequence[Any]],
                      last_push_at: str | None = None) -> int:
        """Create a table with exactly this schema (column kinds, order, key fields, times)
        and fill it with rows of JSON values in column order, as ``read_rows`` gives them;
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
