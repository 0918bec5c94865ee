"""The one home of identifier quoting, the SQL type of each column kind, and table DDL.

Both backends build their statements from these: every name is a quoted identifier, every
value a bound parameter, and each column kind has one declared type per dialect.

    kind       SQLite      PostgreSQL
    boolean    BOOLEAN     boolean
    integer    INTEGER     bigint
    double     REAL        double precision
    decimal    TEXT        numeric
    text       TEXT        text COLLATE "C"
    json       TEXT        jsonb
    timestamp  TIMESTAMP   timestamptz
    date       DATE        date

SQLite has no exact type for numbers beyond 64 bits (``NUMERIC`` would round them), so
decimals are text there; timestamps and dates are ISO 8601 text in UTC (their declared
types tell SQL tools what the text is). PostgreSQL's text compares byte by byte (collation "C"), as
SQLite's does, so keys sort the same on both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from importapi.kinds import Kind

Dialect = Literal["sqlite", "postgresql"]

TYPES: dict[Dialect, dict[Kind, str]] = {
    "sqlite": {
        Kind.BOOLEAN: "BOOLEAN",
        Kind.INTEGER: "INTEGER",
        Kind.DOUBLE: "REAL",
        Kind.DECIMAL: "TEXT",
        Kind.TEXT: "TEXT",
        Kind.JSON: "TEXT",
        Kind.TIMESTAMP: "TIMESTAMP",
        Kind.DATE: "DATE",
    },
    "postgresql": {
        Kind.BOOLEAN: "boolean",
        Kind.INTEGER: "bigint",
        Kind.DOUBLE: "double precision",
        Kind.DECIMAL: "numeric",
        Kind.TEXT: "text",
        Kind.JSON: "jsonb",
        Kind.TIMESTAMP: "timestamptz",
        Kind.DATE: "date",
    },
}


def quote(name: str) -> str:
    """The one place identifiers are quoted: every name is a quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def names(columns: Iterable[str]) -> str:
    """A list of quoted names, for a column list."""
    return ", ".join(quote(c) for c in columns)


def declared_type(dialect: Dialect, kind: Kind) -> str:
    """A column's type as declared."""
    sql = TYPES[dialect][kind]
    return 'text COLLATE "C"' if dialect == "postgresql" and kind is Kind.TEXT else sql


def column_def(dialect: Dialect, name: str, kind: Kind, key: bool = False) -> str:
    return f"{quote(name)} {declared_type(dialect, kind)}" + (" NOT NULL" if key else "")


def column_defs(dialect: Dialect, columns: Iterable[tuple[str, Kind]], key_fields: Iterable[str]) -> str:
    keys = set(key_fields)
    return ", ".join(column_def(dialect, name, kind, name in keys) for name, kind in columns)
