"""The push model: what every wire protocol's adapter produces and the warehouse applies.

A route reads its body, checks it and hands the warehouse a ``Push``: one client's
``Batch`` of rows for each table it writes, in order. The warehouse sees nothing of the
wire: no body, no header, no protocol. It answers with a ``PushResult`` per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from importapi.kinds import Kind


@dataclass
class Batch:
    """One table's part of a push: data points in order, and the kind each field asks for."""

    table: str
    key_fields: tuple[str, ...]
    points: list[Any]
    """Each a dict of field values; or, when ``columns`` is set, a tuple of these fields' values
    in that order (a request read by its table's known shape, ``importapi.rjmetrics.shapes``)."""
    kinds: dict[str, Kind] = field(default_factory=dict)
    mixed: set[str] = field(default_factory=set)
    """Fields whose values in this batch are of more than one kind."""
    inexact: set[str] = field(default_factory=set)
    """Fields holding an integer that a double cannot hold exactly (beyond 2**53)."""
    columns: tuple[str, ...] | None = None
    sequence: str | None = None
    """The field whose integer orders the points (Stitch's ``_sdc_sequence``). A stored row
    is replaced only by a point whose sequence is not lower; of a key's points in the batch
    the highest sequence wins, the later one on a tie. The others are stale."""
    version: str | None = None
    """The field holding each point's table version (``_sdc_table_version``): a point of a
    version older than the table's own is stale."""
    activate: int | None = None
    """A table version to make the table's own once the points are applied: in the same
    transaction, rows of older versions (or of none) are deleted."""
    stamp: str | None = None
    """A field set to the time the push is applied (``_sdc_batched_at``)."""
    constants: dict[str, Any] = field(default_factory=dict)
    """Fields of the same value in every data point (a batch's table version, the time it
    was received), given here once and not in the points: with ``columns`` only."""
    system: frozenset[str] = frozenset()
    """Fields the system adds: they do not count against the column limit."""
    parent: str | None = None
    """A subtable's batch (the rows of an array field): the table of the records it comes
    from, whose batch comes first in the same push."""
    parent_keys: tuple[str, ...] = ()
    """A subtable's fields holding its parent record's key, in the parent's key order. Its
    rows replace, in the same transaction, the subtable's rows of every parent row the push
    writes; the rows of parents that lost (an older sequence or version) are left out."""
    nested: bool = False
    """A batch whose records may have subtables: writing a row deletes the rows of every
    subtable of the table tied to it, even of subtables this push has no rows for."""
    paths: dict[str, str] = field(default_factory=dict)
    """The field path of each field whose name was shortened to fit a column name."""
    ready: frozenset[str] = frozenset()
    """Fields whose values are already as a column of their kind stores them (timestamps as
    the warehouse's ISO text, decimals as text): nothing to convert unless the column widens."""

    @property
    def plain(self) -> bool:
        """Rows to upsert as they are: no sequence or table version to compare, no subtables,
        no activation and no stamp."""
        return (
            self.sequence is None
            and self.version is None
            and not self.nested
            and self.parent is None
            and self.activate is None
            and self.stamp is None
        )


@dataclass
class Push:
    """Validated batches for one client, applied all or nothing."""

    client_id: int
    batches: list[Batch]
    sandbox: bool = False
    """Check and plan against the tables as they are, store nothing."""

    def joins(self, table: str) -> bool:
        """Can this push be written together with others into ``table``: one batch of plain
        rows for it, stored (not the sandbox)?"""
        return (
            not self.sandbox
            and len(self.batches) == 1
            and self.batches[0].table == table
            and self.batches[0].plain
        )


@dataclass
class PushResult:
    """What a push did to one table (in the sandbox: what it would do)."""

    table: str
    inserted: int
    replaced: int
    plan: dict[str, Any] = field(default_factory=dict)
    kinds: dict[str, Kind] | None = None
    """The table's columns and their kinds once the push is applied (not for the sandbox)."""
    stale: int = 0
    """Points not applied: an older sequence than the stored row's (or another point's), or
    an older table version than the table's."""
    deleted: int = 0
    """Rows of older table versions deleted by an activation."""
