"""The SQL text of the PostgreSQL backend: the layout, the type mapping, widening, upserts.

    importapi.clients, api_keys, settings, activity, catalog_state    the catalog
    importapi.float_text(double precision)                            a double as Python writes it
    client_<id>._importapi_tables, _importapi_columns                 a client's table schemas
    client_<id>.<table>                                               a client's tables

Everything here is text; ``postgres.py`` runs it. Identifiers go through ``sql.quote`` only.
"""

from __future__ import annotations

import secrets

from importapi.kinds import Kind
from importapi.schema import TableSchema
from importapi.storage import sql
from importapi.storage.sql import TYPES, names, quote

SQL_TYPES = TYPES["postgresql"]
# key kinds whose values come back from PostgreSQL as the same Python values a push holds
_SAME_IN_PYTHON = frozenset((Kind.INTEGER, Kind.TEXT))


def declared_type(kind: Kind) -> str:
    return sql.declared_type("postgresql", kind)


def client_schema(client_id: int) -> str:
    return quote(f"client_{client_id}")


def table_ref(client_id: int, table: str) -> str:
    return f"{client_schema(client_id)}.{quote(table)}"


# A double widened to text (or decimal, or JSON) is written exactly as Python's repr writes
# it, so both backends store the same text. PostgreSQL's own output is the same shortest
# digits laid out differently: no ".0" on integral values, an exponent from 1e15 (Python:
# from 1e16), and every digit of integral values beyond 2**53. A stored negative zero is
# zero, as SQLite (which keeps no sign on a zero it stores) reads it.
FLOAT_TEXT = r"""
CREATE OR REPLACE FUNCTION importapi.float_text(x double precision) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SET extra_float_digits = 1 AS $fn$
DECLARE
  s text := x::text;
  n numeric;
  c numeric;
  d text;
  m text;
BEGIN
  IF x = 0 THEN
    RETURN '0.0';
  END IF;
  IF x <> trunc(x) OR abs(x) < 9007199254740992 THEN
    IF s LIKE '%e+15' THEN
      s := (s::numeric)::text;
    ELSIF s LIKE '%e%' OR s LIKE '%.%' THEN
      RETURN s;
    END IF;
    RETURN CASE WHEN s LIKE '%.%' THEN s ELSE s || '.0' END;
  END IF;
  n := abs(s::numeric);
  FOR p IN 1..17 LOOP
    c := round(n, p - length(n::text));
    EXIT WHEN c < 1.797693134862315807e308 AND c::float8 = abs(x);
  END LOOP;
  d := c::text;
  IF length(d) <= 16 THEN
    m := d || '.0';
  ELSE
    m := rtrim(d, '0');
    m := left(m, 1) || CASE WHEN length(m) > 1 THEN '.' || substr(m, 2) ELSE '' END
         || 'e+' || CASE WHEN length(d) <= 10 THEN '0' ELSE '' END || (length(d) - 1)::text;
  END IF;
  RETURN CASE WHEN x < 0 THEN '-' || m ELSE m END;
END
$fn$
"""

CATALOG_DDL = [
    "CREATE SCHEMA IF NOT EXISTS importapi",
    """CREATE TABLE IF NOT EXISTS importapi.clients (
        client_id bigint PRIMARY KEY,
        name text NOT NULL,
        created_at timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS importapi.api_keys (
        key_id text PRIMARY KEY,
        client_id bigint NOT NULL REFERENCES importapi.clients (client_id),
        digest bytea NOT NULL,
        created_at timestamptz NOT NULL,
        last_used_at timestamptz,
        revoked_at timestamptz
    )""",
    """CREATE TABLE IF NOT EXISTS importapi.settings (
        name text PRIMARY KEY,
        value text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS importapi.activity (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        refused boolean NOT NULL,
        at text NOT NULL,
        request_id text NOT NULL,
        route text NOT NULL,
        client_id bigint,
        key_id text,
        table_name text,
        points integer NOT NULL,
        inserted integer NOT NULL,
        replaced integer NOT NULL,
        sandbox boolean NOT NULL,
        status integer NOT NULL,
        reasons jsonb NOT NULL,
        stale integer NOT NULL DEFAULT 0
    )""",
    "ALTER TABLE importapi.activity ADD COLUMN IF NOT EXISTS stale integer NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS activity_by_kind ON importapi.activity (refused, seq)",
    # One row: a number every process reads to know whether its key cache is stale.
    """CREATE TABLE IF NOT EXISTS importapi.catalog_state (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        version bigint NOT NULL
    )""",
    "INSERT INTO importapi.catalog_state (version) VALUES (1) ON CONFLICT DO NOTHING",
    FLOAT_TEXT,
]


def version_of(client_id: int) -> str:
    """The schema version of the client's table named by the parameter bound."""
    return f"SELECT version FROM {client_schema(client_id)}._importapi_tables WHERE name = %s"


def new_version() -> int:
    """A table's schema version after a change: a number no schema had before (random, of 62
    bits), not the last one plus one. A process holds a table's statements for the version
    it read (``PostgresWrites._tables``), some read inside a transaction that then rolled back; were
    versions counted up, a later change by another process could reach the same number with
    other columns, and those statements would pass for current."""
    return secrets.randbits(62) + 1


def client_ddl(client_id: int) -> list[str]:
    s = client_schema(client_id)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}._importapi_tables (
            name text PRIMARY KEY,
            key_fields text[] NOT NULL,
            created_at timestamptz NOT NULL,
            last_push_at timestamptz,
            version bigint NOT NULL,
            table_version bigint,
            parent text,
            parent_keys text[]
        )""",
        f"""CREATE TABLE IF NOT EXISTS {s}._importapi_columns (
            table_name text NOT NULL REFERENCES {s}._importapi_tables (name),
            name text NOT NULL,
            kind text NOT NULL,
            position integer NOT NULL,
            created_at timestamptz NOT NULL,
            widened_at timestamptz,
            path text,
            PRIMARY KEY (table_name, name)
        )""",
    ]


def widen_expr(column: str, old: Kind, new: Kind) -> str:
    """SQL that turns a stored value of ``old`` into ``new`` as ``kinds.widen_stored`` does."""
    c = column
    if old is Kind.TIMESTAMP or old is Kind.DATE:
        pattern = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' if old is Kind.TIMESTAMP else "YYYY-MM-DD"
        text = (
            f"to_char({c} AT TIME ZONE 'UTC', '{pattern}')"
            if old is Kind.TIMESTAMP
            else f"to_char({c}, '{pattern}')"
        )
        return f"to_jsonb({text})" if new is Kind.JSON else text
    if new is Kind.JSON:
        if old is Kind.DOUBLE:
            # a JSON number with a fraction part reads back as a double, also 1e+17 (jsonb
            # would write it out as an integer): give it at least one decimal
            n = f"importapi.float_text({c})::numeric"
            return f"to_jsonb(round({n}, greatest(scale({n}), 1)))"
        return f"to_jsonb({c})"
    if old is Kind.BOOLEAN:
        return f"{c}::text" if new is Kind.TEXT else f"{c}::integer::{SQL_TYPES[new]}"
    if old is Kind.INTEGER:
        return f"{c}::{SQL_TYPES[new]}"
    if old is Kind.DOUBLE:
        text = f"importapi.float_text({c})"
        return text if new is Kind.TEXT else f"trim_scale({text}::numeric)"
    if old is Kind.DECIMAL and new is Kind.TEXT:
        # an integral decimal reads back as an integer, any other as a double
        return f"CASE WHEN scale({c}) = 0 THEN {c}::text ELSE importapi.float_text({c}::float8) END"
    raise ValueError(f"no widening from {old.label} to {new.label}")


def column_def(name: str, kind: Kind, key: bool) -> str:
    return sql.column_def("postgresql", name, kind, key)


def create_table(client_id: int, schema: TableSchema) -> str:
    defs = sql.column_defs(
        "postgresql", [(c.name, c.kind) for c in schema.columns.values()], schema.key_fields
    )
    return (
        f"CREATE TABLE {table_ref(client_id, schema.name)} ({defs}, PRIMARY KEY ({names(schema.key_fields)}))"
    )


Layout = tuple[tuple[str, ...], tuple[str, ...]]
"""Rows bound as JSON: the columns of each row, in its order, and the columns of one value
for every row, bound once each, in the table's order."""


class TableSQL:
    """Statements for one table at one schema version, built once and reused.

    The upsert binds one array per column and unnests them, so its text (and its prepared
    plan) does not depend on how many rows a push has. It returns one boolean per row: true
    when the row was inserted, false when it replaced one.
    """

    def __init__(self, client_id: int, schema: TableSchema, version: int) -> None:
        self.version = version
        self.schema = schema
        t = table_ref(client_id, schema.name)
        cols = list(schema.columns)
        self.columns = cols
        self.kinds = [c.kind for c in schema.columns.values()]
        keys = names(schema.key_fields)
        # %b: arrays go in binary, which costs a fraction of quoting every element as text
        arrays = ", ".join(f"%b::{SQL_TYPES[k]}[]" for k in self.kinds)
        others = [c for c in cols if c not in schema.key_fields]
        sets = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in others)
        if others:
            action = f"DO UPDATE SET {sets} RETURNING xmax = 0"
        else:
            action = "DO NOTHING RETURNING true"
        self.upsert = (
            f"INSERT INTO {t} ({names(cols)}) SELECT * FROM unnest({arrays}) ON CONFLICT ({keys}) {action}"
        )
        self.key_positions = [cols.index(k) for k in schema.key_fields]
        self.all_keys = not others
        self.keys_come_back = all(schema.columns[k].kind in _SAME_IN_PYTHON for k in schema.key_fields)
        """Do the keys this table returns equal the keys a push's rows hold (``upsert_new``)?"""
        self._sets = sets
        self._new: dict[Layout | None, str] = {}
        self.current_version = version_of(client_id)
        self._parts = (t, names(cols), arrays, keys, others)
        self._action = action
        self._guarded: dict[tuple[str, str | None, Layout | None], str] = {}
        self._json: dict[Layout, str] = {}

    def from_json(self, layout: Layout) -> str:
        """A SELECT of the table's columns from rows bound as one JSON array of arrays, each
        in the column order ``layout[0]`` (a null where it lacks a column), the columns
        ``layout[1]`` bound once each, before the rows. PostgreSQL reads the whole text in C,
        where binding an array per column costs Python per value."""
        at = {name: i for i, name in enumerate(layout[0])}
        picks = ", ".join(
            f"%s::{SQL_TYPES[k]}"
            if c in layout[1]
            else f"(r.value ->> {at[c]})::{SQL_TYPES[k]}"
            if c in at
            else f"NULL::{SQL_TYPES[k]}"
            for c, k in zip(self.columns, self.kinds)
        )
        return f"SELECT {picks} FROM jsonb_array_elements(%s::jsonb) AS r"

    def upsert_json(self, layout: Layout) -> str:
        """``upsert`` for rows bound as one JSON text (``from_json``)."""
        sql = self._json.get(layout)
        if sql is None:
            t, cols, _arrays, keys, _others = self._parts
            sql = self._json[layout] = (
                f"INSERT INTO {t} ({cols}) {self.from_json(layout)} ON CONFLICT ({keys}) {self._action}"
            )
        return sql

    def upsert_new(self, layout: Layout | None) -> str:
        """``upsert`` returning the key of each row it inserted (not of those it replaced),
        writing nothing unless the table's schema version is the one bound after the rows
        (and the table's name before it): the version these statements were made for. The
        rows come as arrays, or (``layout``) as one JSON text (``from_json``)."""
        sql = self._new.get(layout)
        if sql is None:
            t, cols, arrays, keys, others = self._parts
            source = f"SELECT * FROM unnest({arrays})" if layout is None else self.from_json(layout)
            source += f" WHERE ({self.current_version}) = %s"
            insert = f"INSERT INTO {t} ({cols}) {source} ON CONFLICT ({keys})"
            sql = self._new[layout] = (
                f"WITH written AS ({insert} DO UPDATE SET {self._sets} RETURNING {keys}, xmax = 0 AS new)"
                f" SELECT {keys} FROM written WHERE new"
                if others
                else f"{insert} DO NOTHING RETURNING {keys}"
            )
        return sql

    def guarded(self, sequence: str, version: str | None, layout: Layout | None = None) -> str:
        """The upsert for rows ordered by ``sequence`` (and table ``version``): a stored row
        stays unless the new one replaces it (``schema.replaces``, decided here by the
        database, row by row, under the row's lock). It returns the key of every row it
        wrote, and whether it was new. The rows come as arrays, or (``layout``) as one JSON
        text (``from_json``)."""
        sql = self._guarded.get((sequence, version, layout))
        if sql is None:
            t, cols, arrays, keys, others = self._parts
            source = f"SELECT * FROM unnest({arrays})" if layout is None else self.from_json(layout)
            s = quote(sequence)
            newer = f"stored.{s} IS NULL OR EXCLUDED.{s} IS NULL OR stored.{s} <= EXCLUDED.{s}"
            if version is not None:
                v = quote(version)
                newer += (
                    f" OR (EXCLUDED.{v} IS NOT NULL AND (stored.{v} IS NULL OR stored.{v} < EXCLUDED.{v}))"
                )
            sets = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in others)
            sql = self._guarded[(sequence, version, layout)] = (
                f"INSERT INTO {t} AS stored ({cols}) {source} ON CONFLICT ({keys})"
                f" DO UPDATE SET {sets} WHERE {newer} RETURNING {keys}, xmax = 0"
            )
        return sql


def upgrade(client_id: int) -> list[str]:
    """The columns a client schema made by an earlier release lacks (none again is harmless)."""
    s = client_schema(client_id)
    return [
        f"ALTER TABLE {s}._importapi_tables ADD COLUMN IF NOT EXISTS table_version bigint,"
        " ADD COLUMN IF NOT EXISTS parent text, ADD COLUMN IF NOT EXISTS parent_keys text[]",
        f"ALTER TABLE {s}._importapi_columns ADD COLUMN IF NOT EXISTS path text",
    ]


def deleting_children(client_id: int, table: str, parent_keys: tuple[str, ...], kinds: list[Kind]) -> str:
    """Delete a subtable's rows of the parent keys bound (one array per key field)."""
    arrays = ", ".join(f"%s::{SQL_TYPES[k]}[]" for k in kinds)
    return (
        f"DELETE FROM {table_ref(client_id, table)} WHERE ({names(parent_keys)}) IN"
        f" (SELECT * FROM unnest({arrays}))"
    )


def deleting_orphans(
    client_id: int, table: str, parent_keys: tuple[str, ...], parent: str, key_fields: tuple[str, ...]
) -> str:
    """Delete a subtable's rows whose parent row is gone."""
    match = " AND ".join(f"p.{quote(k)} = c.{quote(c)}" for k, c in zip(key_fields, parent_keys))
    return (
        f"DELETE FROM {table_ref(client_id, table)} AS c WHERE NOT EXISTS"
        f" (SELECT 1 FROM {table_ref(client_id, parent)} AS p WHERE {match})"
    )


def deleting_older(client_id: int, table: str, version: str) -> str:
    """Delete a table's rows of table versions older than the one bound (or of none)."""
    c = quote(version)
    return f"DELETE FROM {table_ref(client_id, table)} WHERE {c} < %s OR {c} IS NULL"


def probe_existing(client_id: int, schema: TableSchema, widen: dict[str, tuple[Kind, Kind]]) -> str:
    """Which of the given keys a table holds, compared (and returned) as the planned kinds."""
    exprs, arrays = [], []
    for k in schema.key_fields:
        kind = schema.columns[k].kind
        if k in widen:
            old, kind = widen[k]
            exprs.append(f"({widen_expr(quote(k), old, kind)})")
        else:
            exprs.append(quote(k))
        arrays.append(f"%s::{SQL_TYPES[kind]}[]")
    t = table_ref(client_id, schema.name)
    if len(exprs) == 1:
        return f"SELECT {exprs[0]} FROM {t} WHERE {exprs[0]} = ANY({arrays[0]})"
    names = ", ".join(f"k{i}" for i in range(len(exprs)))
    return (
        f"SELECT {', '.join(exprs)} FROM {t} WHERE ({', '.join(exprs)}) IN"
        f" (SELECT * FROM unnest({', '.join(arrays)}) AS probe ({names}))"
    )
