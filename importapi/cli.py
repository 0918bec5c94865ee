"""The command line: ``importapi serve``, clients, keys, tables and read-only queries.

Every subcommand takes ``--database`` (or ``IMPORTAPI_DATABASE``). Errors print
``Error: ...`` on stderr and exit 1; usage errors exit 2. Both are converted here, once.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from importapi import __version__
from importapi.errors import ClientExists, ImportApiError
from importapi.settings import ClientSettings, Settings
from importapi.storage import Storage, open_storage

F = TypeVar("F", bound=Callable[..., Any])


def database_option(fn: F) -> F:
    return click.option(
        "--database",
        default=None,
        metavar="URL",
        help="sqlite:///FOLDER (default: IMPORTAPI_DATABASE, else sqlite:///importapi-data) or postgresql://...",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def errors_as_messages(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ImportApiError as exc:
            raise click.ClickException("; ".join(exc.reasons)) from None
        except (ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def reads_warehouse(fn: F) -> F:
    """A command on a warehouse: ``--json``, ``--database``, and errors as messages."""
    return json_option(database_option(errors_as_messages(fn)))


@contextmanager
def storage_for(database: str | None) -> Iterator[Storage]:
    with open_storage(Settings.from_env(database=database)) as storage:
        yield storage


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group()
@click.version_option(__version__, prog_name="importapi")
def main() -> None:
    """A self-hostable Data Import API: push JSON records, get real SQL tables."""


@main.command()
@click.option("--host", default=None, help="Where to listen (default: IMPORTAPI_HOST, else 127.0.0.1).")
@click.option(
    "--port",
    default=None,
    type=click.IntRange(0, 65535),
    help="The port (default: IMPORTAPI_PORT, else 8080).",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@database_option
@errors_as_messages
def serve(host: str | None, port: int | None, workers: int, database: str | None) -> None:
    """Start the API server (creates client 1 and prints its key on a first start)."""
    from importapi.console.owner import set_first_password
    from importapi.server import run

    settings = Settings.from_env(database=database, host=host, port=port)
    with open_storage(settings) as storage:
        try:  # client 1, once: of servers starting together on a new warehouse, one makes it
            client = (
                storage.create_client("default", client_id=1) if not storage.catalog.list_clients() else None
            )
        except ClientExists:
            client = None
        if client is not None:
            _, api_key = storage.catalog.create_key(client.client_id)
            click.echo(
                f"First start: created client {client.client_id} with the API key\n\n"
                f"    {api_key}\n\n"
                "It is shown only this once. More keys: importapi keys create "
                f"{client.client_id}\n"
            )
        password = set_first_password(storage)
    base = f"http://{settings.host}:{settings.port}"
    if password:
        click.echo(
            f"The web console at {base}/console has the owner password\n\n    {password}\n\n"
            "It is shown only this once. Change it: importapi admin set-password\n"
        )
    click.echo(
        f"importapi {__version__} on {base}/v2 (sandbox: {base}/sandbox/v2), "
        f"console {base}/console, warehouse {settings.database}"
    )
    run(settings, workers=workers)


@main.group()
def admin() -> None:
    """The owner's account for the web console."""


@admin.command("set-password")
@database_option
@errors_as_messages
def admin_set_password(database: str | None) -> None:
    """Set the console's owner password (asked twice; read from one line of stdin when piped).

    Every console session opened with the old password is signed out."""
    from importapi.console.owner import set_password

    if sys.stdin.isatty():
        password = click.prompt("New console password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    with storage_for(database) as storage:
        set_password(storage, password)
    click.echo("The console password is set.")


@main.group()
def clients() -> None:
    """Create and list clients."""


@clients.command("create")
@click.argument("name")
@reads_warehouse
def clients_create(name: str, as_json: bool, database: str | None) -> None:
    """Create a client (a warehouse of its own)."""
    with storage_for(database) as storage:
        client = storage.create_client(name)
    if as_json:
        emit({"client_id": client.client_id, "name": client.name})
    else:
        click.echo(f"Created client {client.client_id} ({client.name}).")


@clients.command("list")
@reads_warehouse
def clients_list(as_json: bool, database: str | None) -> None:
    """List clients."""
    with storage_for(database) as storage:
        rows = storage.catalog.list_clients()
    if as_json:
        emit([{"client_id": c.client_id, "name": c.name, "created_at": c.created_at} for c in rows])
    else:
        for c in rows:
            click.echo(f"{c.client_id}\t{c.name}\t{c.created_at}")


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.argument("client_id", type=int)
@reads_warehouse
def keys_create(client_id: int, as_json: bool, database: str | None) -> None:
    """Create a key for a client; the key is shown only this once."""
    with storage_for(database) as storage:
        info, api_key = storage.catalog.create_key(client_id)
    if as_json:
        emit({"client_id": client_id, "key_id": info.key_id, "api_key": api_key})
    else:
        click.echo(
            f"Created key {info.key_id} for client {client_id}:\n\n    {api_key}\n\n"
            "It is shown only this once."
        )


@keys.command("list")
@click.argument("client_id", type=int)
@reads_warehouse
def keys_list(client_id: int, as_json: bool, database: str | None) -> None:
    """List a client's keys (never the keys themselves)."""
    with storage_for(database) as storage:
        rows = storage.catalog.list_keys(client_id)
    if as_json:
        emit([k.as_dict() for k in rows])
        return
    click.echo("key_id        created_at            last_used_at          revoked_at")
    for k in rows:
        click.echo(f"{k.key_id}  {k.created_at}  {k.last_used_at or '-':20}  {k.revoked_at or '-'}")


@keys.command("revoke")
@click.argument("key_id")
@reads_warehouse
def keys_revoke(key_id: str, as_json: bool, database: str | None) -> None:
    """Revoke a key: requests with it are refused from now on."""
    with storage_for(database) as storage:
        info = storage.catalog.revoke_key(key_id)
    if as_json:
        emit(info.as_dict())
    else:
        click.echo(f"Revoked key {info.key_id} of client {info.client_id}.")


@main.command()
@click.argument("client_id", type=int)
@reads_warehouse
def tables(client_id: int, as_json: bool, database: str | None) -> None:
    """A client's tables: key fields, columns with their types, row counts."""
    with storage_for(database) as storage:
        infos = storage.warehouse.tables(client_id)
    if as_json:
        emit([t.as_dict() for t in infos])
        return
    if not infos:
        click.echo(f"Client {client_id} has no tables yet.")
    children: dict[str, list[str]] = {}
    for t in infos:
        if t.schema.parent:
            children.setdefault(t.schema.parent, []).append(t.schema.name)
    for t in infos:
        s = t.schema
        click.echo(f"{s.name}  ({t.row_count} rows, keys: {', '.join(s.key_fields)})")
        if s.parent:
            click.echo(f"    subtable of {s.parent}, by {', '.join(s.parent_keys)}")
        if s.name in children:
            click.echo(f"    subtables: {', '.join(children[s.name])}")
        for c in s.columns.values():
            widened = f"  (widened {c.widened_at})" if c.widened_at else ""
            path = f"  (the field {c.path.replace('__', '.')})" if c.path else ""
            click.echo(f"    {c.name:30} {c.kind.label}{widened}{path}")


@main.command()
@click.argument("client_id", type=int)
@click.argument("sql")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@database_option
@errors_as_messages
def query(client_id: int, sql: str, fmt: str, database: str | None) -> None:
    """Run read-only SQL on a client's warehouse."""
    with storage_for(database) as storage:
        columns, rows = storage.warehouse.query(client_id, sql)
    if fmt == "json":
        emit([dict(zip(columns, row)) for row in rows])
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)
        click.echo(out.getvalue(), nl=False)
    else:
        click.echo(_table(columns, rows))


@main.command("copy")
@click.option("--from", "source", required=True, metavar="URL", help="The warehouse to copy.")
@click.option("--to", "target", required=True, metavar="URL", help="An empty warehouse to fill.")
@errors_as_messages
def copy_(source: str, target: str) -> None:
    """Copy a whole warehouse (clients, keys, tables, rows), e.g. SQLite to PostgreSQL."""
    from importapi.storage.copy import copy_warehouse

    with storage_for(source) as src, storage_for(target) as dst:
        done = copy_warehouse(src, dst, lambda line: click.echo(line, err=True))
    click.echo(
        f"Copied {done.clients} clients, {done.keys} keys, {done.tables} tables and "
        f"{done.rows} rows from {source} to {target}."
    )


@main.command()
@click.argument("table")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, allow_dash=True)
)
@click.option("--keys", metavar="FIELD[,FIELD]", help="Key fields, set on every record (needed for CSV).")
@click.option(
    "--url",
    default=lambda: ClientSettings.from_env().url,
    help="The server (default: IMPORTAPI_URL, else http://127.0.0.1:8080).",
)
@click.option(
    "--client-id",
    type=click.IntRange(1),
    default=lambda: ClientSettings.from_env().client_id,
    help="Default: IMPORTAPI_CLIENT_ID, else 1.",
)
@click.option("--api-key", default=lambda: ClientSettings.from_env().api_key, help="Or IMPORTAPI_API_KEY.")
@click.option("--sandbox", is_flag=True, help="Check everything, store nothing.")
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="Requests in flight."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "jsonl"]),
    help="Input format (default: from the extension; needed for stdin).",
)
@click.option("--infer-types", is_flag=True, help="CSV: integers, numbers, booleans, empty as null.")
@click.option("--skip", type=click.IntRange(0), default=0, help="Skip the first N records (to resume).")
@click.option("--gzip", is_flag=True, help="Compress requests.")
@click.option(
    "--progress-interval",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="Seconds between progress lines when not on a terminal.",
)
@json_option
@errors_as_messages
def push(
    table: str,
    files: tuple[str, ...],
    keys: str | None,
    url: str,
    client_id: int,
    api_key: str,
    sandbox: bool,
    concurrency: int,
    fmt: str | None,
    infer_types: bool,
    skip: int,
    gzip: bool,
    progress_interval: float,
    as_json: bool,
) -> None:
    """Push records from CSV, JSON or JSON Lines files (or - for stdin) into TABLE."""
    if not api_key:
        raise click.MissingParameter(param_hint="'--api-key' (or IMPORTAPI_API_KEY)", param_type="option")
    from importapi.loader import Load, parse_keys, run

    load = Load(
        table,
        list(files),
        api_key,
        parse_keys(keys),
        url,
        client_id,
        sandbox,
        concurrency,
        fmt,
        infer_types,
        skip,
        gzip,
        as_json,
        progress_interval,
    )
    sys.exit(run(load, sys.stdout, sys.stderr))


def _table(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
