"""Downloads of a whole table, as CSV or JSON Lines, streamed in key order.

Rows are read lazily from one snapshot of the table and written out in chunks, so an
export of a large table holds only a chunk in memory. CSV writes booleans as
``true``/``false``, JSON values as their JSON text and null as an empty field; JSON Lines
writes one object per row with every value as it was pushed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from importapi.console.web import page, storage_of

FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}
CHUNK_ROWS = 500
_encode = msgspec.json.Encoder(decimal_format="number").encode


def csv_text(value: Any) -> str:
    """One value as a CSV field (and as the table page shows it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _encode(value).decode()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _csv(columns: list[str], rows: Iterator[tuple[Any, ...]]) -> Iterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for count, row in enumerate(rows, 1):
        writer.writerow([csv_text(v) for v in row])
        if count % CHUNK_ROWS == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


def _jsonl(columns: list[str], rows: Iterator[tuple[Any, ...]]) -> Iterator[bytes]:
    chunk: list[bytes] = []
    for row in rows:
        chunk.append(_encode(dict(zip(columns, row))))
        if len(chunk) == CHUNK_ROWS:
            yield b"\n".join(chunk) + b"\n"
            chunk = []
    if chunk:
        yield b"\n".join(chunk) + b"\n"


@page
def export(request: Request) -> Response:
    cid, table, fmt = (request.path_params[p] for p in ("cid", "table", "fmt"))
    if fmt not in FORMATS:
        return Response(status_code=404)
    columns, rows = storage_of(request).warehouse.read_rows(cid, table)
    body = _csv(columns, rows) if fmt == "csv" else _jsonl(columns, rows)
    return StreamingResponse(
        body,
        media_type=FORMATS[fmt],
        headers={
            "content-disposition": f'attachment; filename="client{cid}-{table}.{fmt}"',
            "cache-control": "no-store",
        },
    )
