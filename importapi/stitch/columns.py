"""A batch column's values as the warehouse stores them: date-times as UTC text to the
microsecond, dates as they came once checked, exact numbers as decimal text checked against
their step. Each works on a whole column at once, mostly in C; None: a value does not fit.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Sequence
from decimal import Decimal
from itertools import repeat
from typing import Any

import msgspec

from importapi.kinds import timestamp_text


def timestamps(column: Sequence[Any]) -> Sequence[Any] | None:
    """A column of date-time texts as the warehouse writes them (UTC, to the microsecond);
    None if one is not a date-time."""
    present = [v for v in column if v is not None]
    try:
        parsed = msgspec.convert(present, list[dt.datetime])
    except msgspec.ValidationError:
        return None
    if _canonical(present):
        return column  # already so (target-stitch's time_extracted, most taps' date-times)
    it = iter(parsed)
    return [None if v is None else timestamp_text(next(it)) for v in column]


def _canonical(texts: list[str]) -> bool:
    """Are these date-times (each one read already) all written as the warehouse writes
    them, ``2026-12-01T07:46:49.376708Z``? Checked on their joined text, a stride per
    character that tells, so in C."""
    if not texts:
        return True
    if set(map(len, texts)) != {27}:
        return False
    joined, n = "".join(texts), len(texts)
    return joined[10::27] == "T" * n and joined[19::27] == "." * n and joined[26::27] == "Z" * n


def fixed_column(column: Sequence[Any], what: str, step: Decimal | None) -> Sequence[Any] | None:
    """A column of ``timestamp``, ``date`` or ``decimal`` values (with its step) as the
    warehouse stores them (the column itself if it already is); None if one does not fit."""
    if what == "timestamp":
        return timestamps(column)
    if what == "date":
        return column if _dates(column) else None
    texts = _decimal_texts(column)
    return None if texts is None or (step is not None and not _multiples(texts, step)) else texts


def _dates(column: Sequence[Any]) -> bool:
    present = [v for v in column if v is not None]
    try:
        msgspec.convert(present, list[dt.date])
    except msgspec.ValidationError:
        return False
    return all(len(v) == 10 for v in present)


_DECIMAL_TYPES = frozenset((Decimal, int, type(None)))


def _decimal_texts(column: Sequence[Any]) -> list[Any] | None:
    """A column of exact numbers as a decimal column stores them; None if one is not a number."""
    types = set(map(type, column))
    if not types <= _DECIMAL_TYPES:
        return None
    if types == {Decimal}:
        return list(map(format, column, repeat("f")))
    return [None if v is None else format(v, "f") if type(v) is Decimal else str(v) for v in column]


@functools.cache
def _excess(places: int) -> re.Pattern[str]:
    """A fraction with a nonzero digit after the first ``places``."""
    return re.compile(rf"\.[0-9]{{{places}}}[0-9]*[1-9]")


def _multiples(texts: list[Any], step: Decimal) -> bool:
    """Are all these decimal texts (no exponent) whole numbers of ``step`` (a power of ten
    below 1)? One search over them all."""
    places = -step.adjusted()
    return _excess(places).search("\n".join(t for t in texts if t is not None)) is None
