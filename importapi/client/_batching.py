"""Records into request bodies: at most ``max_points`` data points and ``max_bytes`` bytes each.

Records are encoded one at a time as they arrive, so a generator is never held in memory
beyond the request being filled. Each batch also carries the identities of the keys it
writes, so that two requests touching the same key are never in flight at once: upserts
of one key then land in input order, as they would with one request at a time.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode

Identity = tuple[object, ...]


@dataclass(slots=True)
class Batch:
    """One request's worth of records: input indexes ``first`` to ``first + count - 1``."""

    seq: int
    first: int
    count: int
    body: bytes
    identities: frozenset[Identity]


def identity(record: Any) -> Identity | None:
    """What the server indexes a record by: its key field names and their values.

    Values are compared as text, so ``1`` and ``"1"`` count as the same key: that can
    only make the client wait when it need not, never let two writes of a key overtake.
    """
    if type(record) is not dict and not isinstance(record, Mapping):
        return None
    names = record.get("keys")
    if type(names) is list and len(names) == 1 and type(names[0]) is str:  # the common case
        return (names[0], str(record.get(names[0])))
    if not isinstance(names, (list, tuple)):
        return None
    try:
        ordered = sorted(names)
    except TypeError:
        return None
    return (*ordered, *(str(record.get(name)) for name in ordered))


class Batcher:
    """Fills batches record by record, cutting one as soon as it is full."""

    def __init__(self, max_points: int, max_bytes: int) -> None:
        if max_points < 1 or max_bytes < 3:
            raise ValueError("a request holds at least one data point and three bytes")
        self.max_points = max_points
        self.max_bytes = max_bytes
        self.index = 0  # input index of the next record
        self._seq = 0
        self._parts: list[bytes] = []
        self._size = 2  # the brackets of the array
        self._identities: set[Identity] = set()

    def add(self, record: Any) -> tuple[Batch, ...]:
        """Take one record; return the batches it completed (none, usually)."""
        try:
            encoded = _encode(record)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"record {self.index} cannot be sent as JSON: {exc}") from None
        done: tuple[Batch, ...] = ()
        parts = self._parts
        size = self._size + len(encoded) + (1 if parts else 0)
        # A record too big for any request still goes alone: the server's answer says why.
        if size > self.max_bytes and parts:
            done = (self._cut(),)
            parts = self._parts
            size = 2 + len(encoded)
        parts.append(encoded)
        self._size = size
        ident = identity(record)
        if ident is not None:
            self._identities.add(ident)
        self.index += 1
        if len(parts) >= self.max_points:
            done = (*done, self._cut())
        return done

    def flush(self) -> Batch | None:
        return self._cut() if self._parts else None

    def _cut(self) -> Batch:
        count = len(self._parts)
        batch = Batch(
            self._seq,
            self.index - count,
            count,
            b"[" + b",".join(self._parts) + b"]",
            frozenset(self._identities),
        )
        self._seq += 1
        self._parts = []
        self._size = 2
        self._identities = set()
        return batch


def as_records(data: Any) -> Iterable[Any]:
    """One data point, a list, or any iterable of them; a string is a mistake, not an iterable."""
    if isinstance(data, Mapping):
        return (data,)
    if isinstance(data, (str, bytes, bytearray)) or not isinstance(data, Iterable):
        # ValueError, as the original client raised for anything but a list.
        raise ValueError(f"data must be a dict or an iterable of dicts, not {type(data).__name__}")
    return data


def batches(records: Iterable[Any], batcher: Batcher) -> Iterator[Batch]:
    for record in records:
        yield from batcher.add(record)
    last = batcher.flush()
    if last is not None:
        yield last


async def abatches(
    records: AsyncIterable[Any] | Iterable[Any], batcher: Batcher
) -> AsyncGenerator[Batch, None]:
    if not isinstance(records, AsyncIterable):
        for batch in batches(records, batcher):
            yield batch
        return
    async for record in records:
        for batch in batcher.add(record):
            yield batch
    last = batcher.flush()
    if last is not None:
        yield last
