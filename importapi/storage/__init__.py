"""The warehouse: one interface (``Storage``), one file per backend.

``open_storage(url)`` picks the backend from the database URL. The server, the command
line and the tests all go through this interface; no caller sees a driver.
"""

from __future__ import annotations

from importapi.storage.base import (
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
    from importapi.errors import BadRequest

    raise BadRequest(f"database {url!r}: PostgreSQL is not available in this build")


__all__ = [
    "ClientInfo",
    "KeyInfo",
    "PushResult",
    "Storage",
    "StoredKey",
    "TableInfo",
    "open_storage",
    "parse_database_url",
]
