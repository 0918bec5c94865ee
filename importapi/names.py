"""Table and field names: what the warehouse can hold apart, for every route.

Table names are letters, digits and underscores, matched ignoring case (stored lower-case);
field names become column names exactly, quoted, so no name can inject SQL, but a name the
databases could not hold apart (too long, a NUL, a system column's) is refused.
"""

from __future__ import annotations

import re

from importapi.errors import BadRequest, Code

TABLE_NAME = re.compile(r"[A-Za-z0-9_]{1,63}")
RESERVED_TABLE_PREFIXES = ("sqlite_", "_importapi", "pg_")
MAX_NAME_BYTES = 63
# PostgreSQL's system columns: no table can have a column of these names.
SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})


def table_name(raw: str) -> str:
    """The stored (lower-case) name of a table, or a 400 that says what is wrong."""
    if not TABLE_NAME.fullmatch(raw):
        raise BadRequest(
            f"table name {raw!r} is not valid: use 1 to 63 letters, digits or underscores",
            code=Code.TABLE_NAME_INVALID,
        )
    name = raw.lower()
    if name.startswith(RESERVED_TABLE_PREFIXES):
        raise BadRequest(
            f"table name {raw!r} is reserved: names starting with "
            + ", ".join(RESERVED_TABLE_PREFIXES)
            + " are kept for the system",
            code=Code.TABLE_NAME_RESERVED,
        )
    return name


def field_name_problem(name: str) -> tuple[Code, str] | None:
    """What is wrong with a field name as a column name (its code and its message), if anything."""
    if not name:
        return Code.FIELD_NAME_INVALID, "a field name is empty"
    if "\x00" in name:
        return Code.FIELD_NAME_INVALID, f"field name {name!r} contains a NUL character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return Code.FIELD_NAME_INVALID, f"field name {name[:20]!r}... is longer than {MAX_NAME_BYTES} bytes"
    if name.lower() in SYSTEM_COLUMNS:
        return (
            Code.FIELD_NAME_RESERVED,
            f"field name {name!r} is reserved: the database keeps it for a system column",
        )
    return None
