"""Table schemas and the plan that a push makes against one.

A table's schema is its key fields and its typed columns. ``make_plan`` compares a
validated ``Batch`` with the table's current schema and says what the push must do
(create the table, add columns, widen columns), or refuses it with one reason per problem.
``prepare_rows`` turns the data points into rows for the final column kinds, last write
wins within the request. Backends share both, so they cannot disagree on a decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import add, itemgetter
from typing import Any

from importapi.errors import BadRequest, Code, Detail
from importapi.kinds import Kind, join, to_storage
from importapi.push import Batch
from importapi.settings import Limits


@dataclass
class Column:
    """A column of a table: its kind, when it last widened, and the field path it holds when
    its name had to be shortened to fit (``a__b`` for the field ``b`` of the object ``a``)."""

    name: str
    kind: Kind
    widened_at: str | None = None
    path: str | None = None


@dataclass
class TableSchema:
    name: str
    key_fields: tuple[str, ...]
    columns: dict[str, Column]
    created_at: str = ""
    version: int | None = None
    """The table's own table version (made so by an activation), if it has one."""
    parent: str | None = None
    """For a subtable (the rows of an array field): the table whose rows it belongs to."""
    parent_keys: tuple[str, ...] = ()
    """For a subtable: its columns holding the parent row's key, in the parent's key order."""

    def lower_names(self) -> dict[str, str]:
        return {name.lower(): name for name in self.columns}


@dataclass
class Plan:
    table: str
    create: bool
    key_fields: tuple[str, ...]
    kinds: dict[str, Kind]
    add: list[Column] = field(default_factory=list)
    widen: list[tuple[str, Kind, Kind]] = field(default_factory=list)
    parent: str | None = None
    parent_keys: tuple[str, ...] = ()
    version: int | None = None
    """The table version points must not be older than: the table's own, or the one the
    batch activates if newer."""
    activate: int | None = None
    """The table version this push makes the table's own (newer than its present one)."""

    @property
    def changes_schema(self) -> bool:
        return self.create or bool(self.add) or bool(self.widen) or self.activate is not None

    def describe(self) -> dict[str, Any]:
        return {
            "create_table": self.create,
            **({"parent": self.parent} if self.parent else {}),
            "key_fields": list(self.key_fields),
            "add_columns": [{"name": c.name, "type": c.kind.label} for c in self.add],
            "widen_columns": [{"name": n, "from": old.label, "to": new.label} for n, old, new in self.widen],
            **({"activate_version": self.activate} if self.activate is not None else {}),
        }


def _first_index(batch: Batch, name: str) -> int:
    if batch.columns is not None:  # every data point has every field
        return 0
    return next((i for i, p in enumerate(batch.points) if name in p), 0)


def _exact(kind: Kind, name: str, batch: Batch) -> Kind:
    """A double column cannot hold integers beyond 2**53 exactly: those need decimal."""
    return Kind.DECIMAL if kind is Kind.DOUBLE and name in batch.inexact else kind


def make_plan(
    schema: TableSchema | None,
    batch: Batch,
    limits: Limits,
    stored_inexact: Callable[[str], bool] | None = None,
) -> Plan:
    """What this push does to the table, or a 400 naming each problem.

    ``stored_inexact(column)`` says whether an integer column holds values beyond 2**53; it
    is asked only when such a column would otherwise widen to double.
    """
    if schema is None:
        order = [*batch.key_fields, *(n for n in batch.kinds if n not in batch.key_fields)]
        kinds = {name: _exact(batch.kinds[name], name, batch) for name in order}
        add = [Column(n, k, path=batch.paths.get(n)) for n, k in kinds.items()]
        plan = Plan(
            batch.table,
            True,
            batch.key_fields,
            kinds,
            add,
            parent=batch.parent,
            parent_keys=batch.parent_keys,
        )
        plan.version = plan.activate = batch.activate
        _check_width(plan, limits, batch.system)
        return plan

    problems: list[Detail] = []
    if frozenset(batch.key_fields) != frozenset(schema.key_fields):
        problems.append(
            Detail(
                Code.KEY_FIELDS_FIXED,
                f"keys {list(batch.key_fields)} differ from the key fields of table "
                f"{schema.name!r}, {list(schema.key_fields)}; a table's key fields are fixed by its first push",
                0,
            )
        )
    kinds = {name: col.kind for name, col in schema.columns.items()}
    plan = Plan(schema.name, False, schema.key_fields, kinds, version=schema.version)
    if batch.activate is not None and (schema.version is None or batch.activate > schema.version):
        plan.version = plan.activate = batch.activate
    lower = schema.lower_names()
    for name, kind in batch.kinds.items():
        current = kinds.get(name)
        if current is None:
            other = lower.get(name.lower())
            if other is not None:
                problems.append(
                    Detail(
                        Code.FIELD_NAME_CASE,
                        f"field {name!r} differs only in case from column {other!r} of "
                        f"table {schema.name!r}; use the column's spelling",
                        _first_index(batch, name),
                        name,
                    )
                )
                continue
            kinds[name] = kind = _exact(kind, name, batch)
            plan.add.append(Column(name, kind, path=batch.paths.get(name)))
            continue
        wider = _exact(join(current, kind), name, batch)
        if wider is Kind.DOUBLE and current is Kind.INTEGER and stored_inexact and stored_inexact(name):
            wider = Kind.DECIMAL
        if wider is not current:
            kinds[name] = wider
            plan.widen.append((name, current, wider))
    if problems:
        raise BadRequest(details=problems)
    _check_width(plan, limits, batch.system)
    return plan


def _check_width(plan: Plan, limits: Limits, system: frozenset[str]) -> None:
    width = len(plan.kinds) - len(system.intersection(plan.kinds))
    if width > limits.max_columns:
        raise BadRequest(
            f"table {plan.table!r} would have {width} columns; at most "
            f"{limits.max_columns} are allowed (key columns included)",
            code=Code.TOO_MANY_COLUMNS,
        )


@dataclass
class Rows:
    """Rows ready to bind: one per distinct key, the winning data point for it (the last,
    or for a batch ordered by sequence the last of the highest sequence).

    A key is the key column's value for a single-field key, else a tuple of values."""

    columns: list[str]
    rows: list[Sequence[Any]]
    keys: list[Any]
    point_keys: list[Any]
    """The key of every data point that is not stale, in request order."""
    stale: int = 0
    """Data points left out: an older table version, or an older sequence than another point's."""
    sequence: int | None = None
    """The position of the ordering column in each row."""
    version: int | None = None
    """The position of the table version column in each row."""
    constants: dict[str, Any] = field(default_factory=dict)
    """Columns of the same value in every row (the batch's constants and its stamp), which
    a writer binds once; the rows lack them, or hold a null in their place. ``columns``
    then names the rows' own order, which need not be the table's (a writer picks each
    column by name)."""
    version_name: str | None = None
    """The table version column, in the rows (``version``) or among the constants."""

    def version_of(self, row: Sequence[Any]) -> Any:
        """A row's table version (None without one)."""
        if self.version is not None:
            return row[self.version]
        return self.constants.get(self.version_name) if self.version_name is not None else None


_AS_BOUND = (Kind.BOOLEAN, Kind.INTEGER, Kind.DOUBLE, Kind.TEXT)


def prepare_rows(plan: Plan, batch: Batch, now: str | None = None) -> Rows:
    """The batch's rows for the planned column kinds; ``now`` fills its stamp field."""
    columns = list(plan.kinds)
    # A column needs converting only where its values are not already what it stores:
    # the driver binds str, int, float and bool as they are, and ``batch.ready`` says
    # which others already are.
    convert = [
        (j, kind)
        for j, (name, kind) in enumerate(plan.kinds.items())
        if name in batch.kinds
        and (
            name in batch.mixed
            or batch.kinds[name] is not kind
            or (kind not in _AS_BOUND and name not in batch.ready)
        )
    ]
    key_of = itemgetter(*[columns.index(k) for k in plan.key_fields])
    stamp = columns.index(batch.stamp) if batch.stamp in plan.kinds and now is not None else None
    ordered = batch.sequence is not None or batch.version is not None
    rows: list[Sequence[Any]]
    if batch.columns is not None:
        if not convert and all(k in batch.columns for k in plan.key_fields):
            # of the column kinds already: kept in their own order (the writer picks each
            # column by name) and the stamp bound once, with no Python per row
            layout = list(batch.columns)
            key_of = itemgetter(*[layout.index(k) for k in plan.key_fields])
            if ordered:
                kept = _settle(batch.points, layout, key_of, batch, plan.version)
            else:
                kept = _last_per_key(batch.points, layout, key_of)
            constants = dict(batch.constants)
            if stamp is not None and now is not None:
                constants[columns[stamp]] = now
            return dataclasses.replace(kept, constants=constants) if constants else kept
        rows = _reordered(batch, columns, now)
        stamp = None
    else:
        rows = [tuple(map(p.get, columns)) for p in batch.points]
    if convert or stamp is not None:
        rows = [_converted(row, convert, stamp, now) for row in rows]
    if not ordered:
        return _last_per_key(rows, columns, key_of)
    return _settle(rows, columns, key_of, batch, plan.version)


def _last_per_key(rows: Sequence[Sequence[Any]], columns: list[str], key_of: Any) -> Rows:
    """One row per key, the last given (in C)."""
    point_keys = list(map(key_of, rows))
    by_key = dict(zip(point_keys, rows))
    return Rows(columns, list(by_key.values()), list(by_key), point_keys)


def _reordered(batch: Batch, columns: list[str], now: str | None) -> list[Sequence[Any]]:
    """Tuples of the batch's fields in the table's column order, in C: a column the batch
    lacks reads a null, and the stamp field ``now``."""
    assert batch.columns is not None
    at = {name: i for i, name in enumerate(batch.columns)}
    width = len(batch.columns)
    at.update({name: width + 2 + i for i, name in enumerate(batch.constants)})
    if batch.stamp is not None:
        at[batch.stamp] = width + 1
    indexes = [at.get(c, width) for c in columns]
    tail = (None, now, *batch.constants.values())
    if len(indexes) == 1:
        return [(p[indexes[0]],) for p in batch.points]
    pick = itemgetter(*indexes)
    return list(map(pick, map(add, batch.points, repeat(tail))))


def _converted(
    row: Sequence[Any], convert: list[tuple[int, Kind]], stamp: int | None, now: str | None
) -> list[Any]:
    values = list(row)
    if stamp is not None:
        values[stamp] = now
    for j, kind in convert:
        if values[j] is not None:
            values[j] = to_storage(values[j], kind)
    return values


def _settle(
    rows: Sequence[Sequence[Any]], columns: list[str], key_of: Any, batch: Batch, version: int | None
) -> Rows:
    """A batch ordered by sequence and versions: a point of a version older than the table's
    (``version``) is stale, and so is one whose key has a point of a higher sequence."""
    at_seq = columns.index(batch.sequence) if batch.sequence in columns else None
    at_version = columns.index(batch.version) if batch.version in columns else None
    named = batch.version if at_version is not None or batch.version in batch.constants else None
    given = batch.constants.get(batch.version) if batch.version is not None else None
    if given is not None and version is not None and given < version:  # the whole batch is older
        return Rows(columns, [], [], [], len(rows), at_seq, None, version_name=named)
    keyed = list(map(key_of, rows))
    if len(set(keyed)) == len(keyed) and (
        at_version is None
        or version is None
        or all(v is None or v >= version for v in set(map(itemgetter(at_version), rows)))
    ):  # every key once, no version older than the table's: nothing is stale (no Python per row)
        return Rows(columns, list(rows), keyed, list(keyed), 0, at_seq, at_version, version_name=named)
    best: dict[Any, Sequence[Any]] = {}
    keys: dict[Any, list[Any]] = {}  # each key's winning points (all of its highest sequence)
    stale = 0
    for row in rows:
        if (
            at_version is not None
            and version is not None
            and row[at_version] is not None
            and row[at_version] < version
        ):
            stale += 1
            continue
        key = key_of(row)
        held = best.get(key)
        if (
            held is not None
            and at_seq is not None
            and row[at_seq] is not None
            and (held[at_seq] is not None and row[at_seq] < held[at_seq])
        ):
            stale += 1
            continue
        if (
            held is not None
            and at_seq is not None
            and row[at_seq] is not None
            and (held[at_seq] is None or row[at_seq] > held[at_seq])
        ):
            stale += len(keys[key])
            keys[key] = []
        best[key] = row
        keys.setdefault(key, []).append(key)
    point_keys = [k for ks in keys.values() for k in ks]
    return Rows(
        columns, list(best.values()), list(best), point_keys, stale, at_seq, at_version, version_name=named
    )


def replaces(sequence: Any, version: Any, stored_sequence: Any, stored_version: Any) -> bool:
    """Does a row of this sequence and table version replace the stored one? When its
    sequence is not lower, or when it belongs to a newer version than the stored row (whose
    version is then on its way out: the next activation deletes it)."""
    if sequence is None or stored_sequence is None or sequence >= stored_sequence:
        return True
    return version is not None and (stored_version is None or stored_version < version)


def drop_older(rows: Rows, stored: dict[Any, tuple[Any, Any]]) -> tuple[Rows, int]:
    """Leave out the rows the stored ones win over (``stored``: each key's stored sequence
    and table version); how many data points that leaves out."""
    at = rows.sequence
    if at is None or not stored:
        return rows, 0
    lost = set()
    for key, row in zip(rows.keys, rows.rows):
        held = stored.get(key)
        if held is not None and not replaces(row[at], rows.version_of(row), *held):
            lost.add(key)
    if not lost:
        return rows, 0
    kept = [(k, r) for k, r in zip(rows.keys, rows.rows) if k not in lost]
    point_keys = [k for k in rows.point_keys if k not in lost]
    left = len(rows.point_keys) - len(point_keys)
    return dataclasses.replace(
        rows, rows=[r for _, r in kept], keys=[k for k, _ in kept], point_keys=point_keys
    ), left


def keep_children(rows: Rows, parent_keys: tuple[str, ...], written: set[Any]) -> Rows:
    """A subtable's rows of the parent keys written (the others' parents lost to newer rows)."""
    at = [rows.columns.index(k) for k in parent_keys]
    key_of = itemgetter(*at)
    if set(map(key_of, rows.rows)) <= written:  # every parent written (the usual case): in C
        return rows
    kept = [(k, r) for k, r in zip(rows.keys, rows.rows) if key_of(r) in written]
    if len(kept) == len(rows.rows):
        return rows
    keys = {k for k, _ in kept}
    return dataclasses.replace(
        rows,
        rows=[r for _, r in kept],
        keys=[k for k, _ in kept],
        point_keys=[k for k in rows.point_keys if k in keys],
    )


def inserted_each(keys: list[list[Any]], new: set[Any]) -> list[int]:
    """How many keys each of several pushes written in order inserted, ``new`` being the keys
    they inserted together: each counts those of its keys that no push before it gave."""
    seen: set[Any] = set()
    counts = []
    for these in keys:
        own = set(these)
        counts.append(len((own & new) - seen))
        seen |= own
    return counts


def all_above(keys: list[Any], highest: Any) -> bool:
    """Are these keys all above a table's largest (None: an empty table), as an initial load
    or records appended in key order give? False where they do not compare."""
    if highest is None:
        return True
    try:
        return bool(min(keys) > highest)
    except TypeError:
        return False


def count_changes(point_keys: list[Any], existing: set[Any]) -> tuple[int, int]:
    """(inserted, replaced), counted per data point in request order."""
    seen = set(existing)
    inserted = 0
    for key in point_keys:
        if key not in seen:
            inserted += 1
            seen.add(key)
    return inserted, len(point_keys) - inserted
