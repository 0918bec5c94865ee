"""The proof that a batch body gives no name twice in one object, which msgspec, decoding
into structs, would not notice (it keeps the last). Counted, not parsed again: see
``each_name_once``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

from importapi.body import names_once
from importapi.stitch import jsonschema

_ESCAPED_COLON = re.compile(rb"\\u003[aA]")


def each_name_once(raw: bytes, pairs: int, texts: tuple[int, bool] | None) -> bool:
    """Does the body hold no NUL and give no name twice (the decoder would keep the last)?

    With the strings' colons counted (``texts``: a batch without arrays, whose field names
    hold none; its head's strings and names among them), one count of the body's colons proves it: each pair is written with one,
    and every other is inside a string, where decoding keeps it, unless escaped (``\u003a``,
    searched for only in a body with a backslash). As many colons as pairs and colons in
    the strings decoded leaves none over for a pair given twice. Else ``body.names_once``."""
    if texts is not None:
        colons, nul = texts
        if nul:
            return False
        if raw.count(b":") == pairs + colons and (b"\\" not in raw or _ESCAPED_COLON.search(raw) is None):
            return True
    elif b"\\u0000" in raw:
        return False
    return names_once(raw, pairs)


def text_facts(columns: Sequence[Sequence[Any]]) -> tuple[int, bool]:
    """The colons in columns of text (or None), and whether one holds a NUL: on each
    column's joined text, in C."""
    colons, nul = 0, False
    for column in columns:
        joined = "".join(filter(None, column))
        colons += joined.count(":")
        nul = nul or "\x00" in joined
    return colons, nul


def text_in(value: Any) -> tuple[int, bool]:
    """The colons in the strings and names of a decoded JSON value, and whether one holds a NUL."""
    if type(value) is str:
        return value.count(":"), "\x00" in value
    items = chain(value, value.values()) if type(value) is dict else value if type(value) is list else ()
    colons, nul = 0, False
    for item in items:
        more, held = text_in(item)
        colons, nul = colons + more, nul or held
    return colons, nul


def names(fields: Mapping[str, jsonschema.FieldType]) -> Iterator[str]:
    """The field names of a record schema, at every depth (an array's by its items')."""
    for name, ft in fields.items():
        yield name
        while ft.items is not None:
            ft = ft.items
        if ft.properties:
            yield from names(ft.properties)


def pairs_in(value: Any) -> int:
    if type(value) is dict:
        return len(value) + sum(pairs_in(v) for v in value.values())
    if type(value) is list:
        return sum(pairs_in(v) for v in value)
    return 0
