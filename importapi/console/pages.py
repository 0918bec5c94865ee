"""The console's pages: Data (Connections, Tables) and Activity.

Data -> Connections lists the clients and their data sources (API keys); "Add a Data
Source" -> "Data Import API" or "Stitch Import API" creates a key and shows it once, with
snippets that use it (for Stitch: target-stitch's config.json, stitchclient, curl). Tables
shows every table's key fields, typed columns (Stitch's system columns marked), table
version, row count and last push, and a page of its rows. Activity shows the latest pushes
and refusals, by API, with each refusal's codes. Handlers stay thin: read the request,
call storage, render.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from importapi.activity import KEEP
from importapi.console.exports import csv_text
from importapi.console.web import form, int_param, page, refuse, render, see_other, storage_of
from importapi.errors import NotFound
from importapi.kinds import Kind, timestamp_text
from importapi.stitch.records import SYSTEM
from importapi.storage.base import ClientInfo, Page, TableInfo

ROWS_PER_PAGE = 50
SAMPLE_TABLE = "orders"
SAMPLE_RECORD = (
    '{"keys": ["id"], "id": 1, "email": "joe@schmo.com", "status": "pending", '
    '"created_at": "2012-08-01 14:22:32"}'
)
# The same record as a Stitch batch: what target-stitch would send for a one-record stream.
SAMPLE_BATCH = """{
  "table_name": "orders",
  "key_names": ["id"],
  "schema": {"type": "object", "properties": {
    "id": {"type": "integer"},
    "email": {"type": ["null", "string"]},
    "status": {"type": ["null", "string"]},
    "created_at": {"type": ["null", "string"], "format": "date-time"}}},
  "messages": [
    {"action": "upsert", "sequence": 1, "data": {"id": 1, "email": "joe@schmo.com", "status": "pending", "created_at": "2012-08-01T14:22:32Z"}}]
}"""
# What the Activity page calls each route: the protocol a user knows it by.
APIS = {
    "data": "Data Import API",
    "authenticate": "Data Import API",
    "batch": "Stitch batch",
    "push": "Stitch push",
    "validate": "Stitch validate",
}
Snippets = Callable[[str, ClientInfo, str], dict[str, Any]]


def _import_api(base: str, _client: ClientInfo, _api_key: str) -> dict[str, Any]:
    return {
        "production": f"{base}/v2",
        "sandbox": f"{base}/sandbox/v2",
        "table": SAMPLE_TABLE,
        "record": SAMPLE_RECORD,
    }


def target_stitch_config(api_key: str, client_id: int, batch_url: str) -> str:
    """target-stitch's ``config.json`` for this server: its one URL for both batch sizes,
    and no calls home to Stitch's collector. It needs ``client_id`` but never sends it."""
    config = {
        "token": api_key,
        "client_id": client_id,
        "small_batch_url": batch_url,
        "big_batch_url": batch_url,
        "batch_size_preferences": {},
        "disable_collection": True,
    }
    return json.dumps(config, indent=2)


def _stitch(base: str, client: ClientInfo, api_key: str) -> dict[str, Any]:
    production, sandbox = f"{base}/v2/import", f"{base}/sandbox/v2/import"
    return {
        "base": base,
        "production": production,
        "sandbox": sandbox,
        "config": target_stitch_config(api_key, client.client_id, f"{production}/batch"),
        "config_sandbox": target_stitch_config(api_key, client.client_id, f"{sandbox}/batch"),
        "table": SAMPLE_TABLE,
        "batch": SAMPLE_BATCH,
    }


@dataclass(frozen=True)
class Source:
    """A data source the owner can add: its tile, and the page that shows its new key."""

    label: str
    blurb: str
    template: str
    snippets: Snippets


SOURCES = {
    "import-api": Source(
        "Data Import API",
        "Push JSON records over HTTP from your own programs; they land in typed SQL tables. "
        "You get an API key for this client.",
        "source_created.html",
        _import_api,
    ),
    "stitch": Source(
        "Stitch Import API",
        "Point target-stitch (so any Singer tap) or the stitchclient library at this server; "
        "they work unchanged. You get an API key for this client.",
        "source_stitch.html",
        _stitch,
    ),
}


def _client(request: Request) -> ClientInfo:
    client = storage_of(request).catalog.get_client(request.path_params["cid"])
    if client is None:
        raise NotFound(f"client {request.path_params['cid']} does not exist")
    return client


@page
def home(_request: Request) -> Response:
    return see_other("/data")


@page
def data(request: Request) -> Response:
    storage = storage_of(request)
    clients = storage.catalog.list_clients()
    keys = [k for c in clients for k in storage.catalog.list_keys(c.client_id)]
    tables = [t for c in clients for t in storage.warehouse.tables(c.client_id)]
    return render(
        request,
        "data.html",
        section="data",
        clients=clients,
        live_keys=sum(1 for k in keys if k.revoked_at is None),
        tables=tables,
    )


@page
def connections(request: Request) -> Response:
    storage = storage_of(request)
    clients = [(c, storage.catalog.list_keys(c.client_id)) for c in storage.catalog.list_clients()]
    return render(request, "connections.html", section="connections", clients=clients)


@form
def create_client(request: Request, data: FormData) -> Response:
    name = str(data.get("name") or "").strip()
    if not name or len(name) > 100:
        request.session["flash"] = "A client needs a name of 1 to 100 characters."
        return see_other("/data/connections")
    client = storage_of(request).create_client(name)
    return see_other(
        "/data/connections",
        f"Created client {client.client_id} ({client.name}). Add a data source to get its API key.",
        request,
    )


@page
def choose_source(request: Request) -> Response:
    return render(request, "add_source.html", section="connections", client=_client(request), sources=SOURCES)


@form
def add_source(request: Request, data: FormData) -> Response:
    client = _client(request)
    source = SOURCES.get(str(data.get("source")))
    if source is None:
        return refuse(request, 400, "Unknown data source", "Choose one of the listed data sources.")
    info, api_key = storage_of(request).catalog.create_key(client.client_id)
    base = str(request.base_url).rstrip("/")
    return render(
        request,
        source.template,
        section="connections",
        client=client,
        key=info,
        api_key=api_key,
        **source.snippets(base, client, api_key),
    )


@form
def revoke_key(request: Request, _data: FormData) -> Response:
    client = _client(request)
    key_id = request.path_params["key_id"]
    if key_id not in {k.key_id for k in storage_of(request).catalog.list_keys(client.client_id)}:
        raise NotFound(f"client {client.client_id} has no key {key_id}")
    storage_of(request).catalog.revoke_key(key_id)
    return see_other(
        "/data/connections",
        f"Revoked key {key_id} of client {client.client_id}: pushes with it are refused from now on.",
        request,
    )


@page
def tables(request: Request) -> Response:
    storage = storage_of(request)
    clients = [(c, storage.warehouse.tables(c.client_id)) for c in storage.catalog.list_clients()]
    return render(request, "tables.html", section="tables", clients=clients, system=SYSTEM)


def _table_info(request: Request, client: ClientInfo) -> TableInfo:
    name = request.path_params["table"]
    for info in storage_of(request).warehouse.tables(client.client_id):
        if info.schema.name == name:
            return info
    raise NotFound(f"client {client.client_id} has no table {name!r}")


@page
def table(request: Request) -> Response:
    client = _client(request)
    info = _table_info(request, client)
    descending = request.query_params.get("order") == "desc"
    pages = max(1, -(-info.row_count // ROWS_PER_PAGE))
    number = min(int_param(request.query_params.get("page"), 1), pages)
    page = Page(descending=descending, offset=(number - 1) * ROWS_PER_PAGE, limit=ROWS_PER_PAGE)
    columns, rows = storage_of(request).warehouse.read_rows(client.client_id, info.schema.name, page)
    kinds = [info.schema.columns[c].kind if c in info.schema.columns else None for c in columns]
    return render(
        request,
        "table.html",
        section="tables",
        client=client,
        info=info,
        columns=columns,
        rows=[_cells(row, kinds) for row in rows],
        system=SYSTEM,
        page=number,
        pages=pages,
        order="desc" if descending else "asc",
        per_page=ROWS_PER_PAGE,
    )


def _cells(row: tuple[Any, ...], kinds: list[Kind | None]) -> list[tuple[str, str]]:
    """Each value as (text, css class): nulls, booleans, JSON and times look different from
    text. Timestamps and dates show as their ISO text."""
    out = []
    for value, kind in zip(row, kinds):
        if value is None:
            out.append(("null", "null"))
        elif isinstance(value, dt.datetime):
            out.append((timestamp_text(value), "time"))
        elif isinstance(value, dt.date):
            out.append((value.isoformat(), "time"))
        elif kind is Kind.TIMESTAMP or kind is Kind.DATE:
            out.append((str(value), "time"))
        elif isinstance(value, bool):
            out.append((csv_text(value), "bool"))
        elif isinstance(value, (int, float)):
            out.append((csv_text(value), "num"))
        elif isinstance(value, (dict, list)):
            out.append((csv_text(value), "json"))
        else:
            out.append((str(value), ""))
    return out


@page
def activity(request: Request) -> Response:
    storage = storage_of(request)
    names = {c.client_id: c.name for c in storage.catalog.list_clients()}
    return render(
        request,
        "activity.html",
        section="activity",
        names=names,
        apis=APIS,
        window=KEEP,
        pushes=storage.catalog.recent_activity(100, refused=False),
        refusals=storage.catalog.recent_activity(100, refused=True),
    )
