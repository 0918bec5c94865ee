"""The warehouse: one interface (``Storage``), one file per backend.

``open_storage(url)`` picks the backend from the database URL. The server, the command
line and the tests all go through this interface; no caller sees a driver.
"""

from __future__ import annotations

from importapi.storage.base import (
    CatalogDump,
    ClientInfo,
    KeyInfo,
    PushResult,
    Storage,
    StoredKey,
    TableInfo,
    parse_database_url,
)


def open_storage(url: str, **options: object) -> Storage:
    kind, target = parse_database_url(url)
    if kind == "sqlite":
        from importapi.storage.sqlite import SQLiteStorage

        return SQLiteStorage(target, **options)  # type: ignore[arg-type]
    from importapi.storage.postgres import PostgresStorage

    return PostgresStorage(target, **options)  # type: ignore[arg-type]


__all__ = [
    "CatalogDump",
    "ClientInfo",
    "KeyInfo",
    "PushResult",
    "Storage",
    "StoredKey",
    "TableInfo",
    "open_storage",
    "parse_database_url",
]
