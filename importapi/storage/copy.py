"""Moving a whole warehouse from one backend to another (``importapi copy``).

The catalog (clients with their ids, keys with their digests and times, the owner's
settings) goes first, then every table of every client with exactly its schema: column
kinds and order, key fields, creation and widening times. Rows travel as the JSON values
they hold (``Warehouse.read_rows``), so each backend stores them its own way and they read
back the same. The target must be empty; the source is only read, and should not be taking
pushes while it is copied (stop its servers first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from importapi.errors import BadRequest, Code
from importapi.storage import Storage


@dataclass
class CopySummary:
    clients: int = 0
    keys: int = 0
    tables: int = 0
    rows: int = 0


def copy_warehouse(
    source: Storage, target: Storage, progress: Callable[[str], None] | None = None
) -> CopySummary:
    """Copy everything in ``source`` into the empty ``target``."""
    if target.catalog.list_clients():
        raise BadRequest(
            "the target warehouse already has clients; copy into an empty one", code=Code.WAREHOUSE_NOT_EMPTY
        )
    dump = source.catalog.export()
    target.restore_catalog(dump)
    summary = CopySummary(clients=len(dump.clients), keys=len(dump.keys))
    for client in dump.clients:
        for info in source.warehouse.tables(client.client_id):
            _, rows = source.warehouse.read_rows(client.client_id, info.schema.name)
            count = target.warehouse.restore_table(client.client_id, info, rows)
            summary.tables += 1
            summary.rows += count
            if progress:
                progress(f"client {client.client_id}: table {info.schema.name}, {count} rows")
    return summary
