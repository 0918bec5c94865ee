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


@dataclass
class Push:
    """Validated batches for one client, applied all or nothing."""

    client_id: int
    batches: list[Batch]
    sandbox: bool = False
    """Check and plan against the tables as they are, store nothing."""


@dataclass
class PushResult:
    """What a push did to one table (in the sandbox: what it would do)."""

    table: str
    inserted: int
    replaced: int
    plan: dict[str, Any] = field(default_factory=dict)
    kinds: dict[str, Kind] | None = None
    """The table's columns and their kinds once the push is applied (not for the sandbox)."""
