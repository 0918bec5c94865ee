"""The warehouse and its catalog, opened together from the settings.

``open_storage(settings)`` picks the backend from the database URL and gives a ``Storage``:
its ``catalog`` (clients, keys, the owner's settings, the activity window; one
implementation over each backend's ``CatalogDB``) and its ``warehouse`` (each client's
tables; one ``Warehouse`` per backend). The server, the command line and the tests all go
through these; no caller sees a driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from importapi.settings import Settings
from importapi.storage.base import CatalogDump, ClientInfo, TableInfo, Warehouse, parse_database_url
from importapi.storage.catalog import Catalog


@dataclass
class Storage:
    catalog: Catalog
    warehouse: Warehouse
    backend: str

    def create_client(self, name: str, client_id: int | None = None) -> ClientInfo:
        """A new client, with room for its tables (blocks)."""
        return self.catalog.create_client(name, client_id, make_space=self.warehouse.create_space)

    def restore_catalog(self, dump: CatalogDump) -> None:
        """Clients, keys and settings of another warehouse, into this empty one (blocks)."""
        self.catalog.restore(dump, self.warehouse.create_space)

    def ping(self) -> None:
        """Raise StorageUnavailable unless the warehouse can take writes (blocks)."""
        self.warehouse.ping()

    def check_writable(self) -> None:
        """Readiness: raise StorageUnavailable unless a write would go through now (blocks)."""
        self.warehouse.check_writable()
        with self.catalog.db.transaction():
            pass

    def close(self) -> None:
        try:
            self.warehouse.close()
        finally:
            self.catalog.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_storage(settings: Settings | str) -> Storage:
    """The storage of the settings' database (or of a database URL, with default settings)."""
    if isinstance(settings, str):
        settings = Settings(database=settings)
    kind, target = parse_database_url(settings.database)
    if kind == "sqlite":
        from pathlib import Path

        from importapi.storage.sqlite import SQLiteCatalogDB, SQLiteWarehouse

        catalog = Catalog(SQLiteCatalogDB(Path(target), settings.sqlite_synchronous))
        try:
            warehouse: Warehouse = SQLiteWarehouse(target, settings.limits, settings.sqlite_synchronous)
        except BaseException:
            catalog.close()
            raise
        return Storage(catalog, warehouse, "sqlite")
    from importapi.storage.postgres import PostgresWarehouse
    from importapi.storage.postgres_catalog import PostgresCatalogDB
    from importapi.storage.postgres_pool import open_pool

    pool = open_pool(target, settings.pool_size)
    try:
        catalog = Catalog(PostgresCatalogDB(pool, target))
    except BaseException:
        pool.close()
        raise
    # the warehouse owns the pool from here on: closing it closes the pool
    return Storage(catalog, PostgresWarehouse(pool, settings.limits, settings.pool_size), "postgresql")


__all__ = ["Catalog", "ClientInfo", "Storage", "TableInfo", "Warehouse", "open_storage"]
