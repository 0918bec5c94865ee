"""Known record shapes: the fast way in for a request that looks like one the table took.

Most integrations push the same record shape again and again: the same field names, each
with values of one type. Once a table has taken a push whose data points all have one set
of fields, each stored in a boolean, integer, double or text column, that shape is kept,
and later requests to the table are first decoded against it by a typed decoder
(``msgspec`` builds one from the shape). Such a request comes out as rows in the table's
column order, checked entirely in C: no Python runs per data point to validate it, find its
kinds or order its values.

Anything the typed decoder does not take (a field the shape lacks or misses, a value of
another type, a null key, an integer beyond 2**53, a float beyond it, ``keys`` naming other
fields or in another order) is decoded again the general way (``importapi.rjmetrics.validate``), which
accepts or refuses it with its reasons. So is a name given twice, which the decoder would
take silently: without a backslash in the body, every ``"`` opens or closes a string, and
a name, a text value and each name in ``keys`` is one string, so counting them proves no
name came twice (``names_once`` proves it for the other bodies). So the shape decides only how fast a request is
read, never whether it is accepted or what is stored: a request taken here is one that
validation would take with the same kinds, and ``importapi.schema`` plans it the same way
against the table as it is when the push is applied.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from operator import itemgetter
from typing import Annotated, Any, Literal

import msgspec
from msgspec.structs import astuple

from importapi.body import names_once
from importapi.kinds import DOUBLE_EXACT, Kind
from importapi.push import Batch
from importapi.settings import Limits

# A double column takes any float, but an integer beyond 2**53 sent to it needs a decimal
# column: the typed decoder would round it to a float, so both are left to the general way.
_INT = Annotated[int, msgspec.Meta(ge=-(DOUBLE_EXACT - 1), le=DOUBLE_EXACT - 1)]
_FLOAT = Annotated[float, msgspec.Meta(ge=-(DOUBLE_EXACT - 1), le=DOUBLE_EXACT - 1)]
_TYPES: dict[Kind, Any] = {Kind.BOOLEAN: bool, Kind.INTEGER: _INT, Kind.DOUBLE: _FLOAT, Kind.TEXT: str}
_REJECTED = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)
_KEYS = "k"  # the attribute that holds a data point's "keys"; every other one is f<n>
_WITHOUT_KEYS = itemgetter(slice(0, -1))  # "keys" is the last attribute
# A shape's decoder takes about 1 KB per field: shapes are kept for at most this many tables,
# of at most this many fields (wider tables are read the general way).
MAX_SHAPES = 256
MAX_FIELDS = 100


class Shape:
    """One record shape of one table, and the typed decoder built for it."""

    __slots__ = (
        "columns",
        "decode",
        "key_fields",
        "kinds",
        "names_per_point",
        "pairs",
        "signature",
        "text_values",
    )

    def __init__(self, columns: tuple[str, ...], kinds: dict[str, Kind], key_fields: tuple[str, ...]) -> None:
        self.columns = columns
        self.kinds = kinds
        self.key_fields = key_fields
        self.pairs = len(columns) + 1  # the fields and "keys", each written once
        # the strings a data point writes besides its text values: every name, and the names
        # in "keys"; then the getters of its values that may be text
        self.names_per_point = self.pairs + len(key_fields)
        self.text_values = [itemgetter(n) for n, c in enumerate(columns) if kinds[c] is Kind.TEXT]
        self.signature = (columns, tuple(kinds[c] for c in columns), key_fields)
        fields: list[tuple[str, Any]] = []
        for n, name in enumerate(columns):
            kind_type = _TYPES[kinds[name]]
            fields.append((f"f{n}", kind_type if name in key_fields else kind_type | None))
        # "keys" must name the key fields in this order (any other way is read the general way)
        fields.append((_KEYS, tuple[tuple(Literal[k] for k in key_fields)]))  # type: ignore[misc]
        rename = {f"f{n}": name for n, name in enumerate(columns)} | {_KEYS: "keys"}
        struct = msgspec.defstruct("Point", fields, rename=rename, forbid_unknown_fields=True, gc=False)
        points_type: Any = list[struct]  # type: ignore[valid-type]
        self.decode: Callable[[bytes], list[Any]] = msgspec.json.Decoder(points_type).decode

    def text_strings(self, rows: list[tuple[Any, ...]]) -> int:
        """How many text values the rows hold (every other value is a number, boolean or null)."""
        count = 0
        for get in self.text_values:
            values = list(map(get, rows))
            count += len(values) - values.count(None)
        return count


class Shapes:
    """The latest shape each table took, for a bounded number of tables (per process)."""

    def __init__(self, limit: int = MAX_SHAPES) -> None:
        self.limit = limit
        self._known: OrderedDict[tuple[int, str], Shape] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0  # requests read by a known shape

    def decode(self, client_id: int, table: str, body: bytes, limits: Limits) -> Batch | None:
        """The batch of a request of the table's known shape, or None: read it the general way."""
        shape = self._known.get((client_id, table))
        if shape is None:
            return None
        escaped = b"\\" in body
        if escaped and b"\\u0000" in body:
            return None
        try:
            points = shape.decode(body)
        except _REJECTED:
            return None
        n = len(points)
        if not 0 < n <= limits.max_points:
            return None
        rows = list(map(_WITHOUT_KEYS, map(astuple, points)))
        if escaped:
            if not names_once(body, n * shape.pairs):
                return None
        else:
            # First a guess that is exact when only text values are null: every "null" in
            # the body taken for a text value not written. It can only expect fewer strings
            # than there are, never hide a name given twice (which adds strings).
            quotes = body.count(b'"')
            texts = len(shape.text_values) * n
            if quotes != 2 * (n * shape.names_per_point + texts - body.count(b"null")) and quotes != 2 * (
                n * shape.names_per_point + shape.text_strings(rows)
            ):
                return None
        self.hits += 1
        return Batch(
            table=table,
            key_fields=shape.key_fields,
            points=rows,
            kinds=dict(shape.kinds),
            columns=shape.columns,
        )

    def learn(self, client_id: int, batch: Batch, kinds: dict[str, Kind]) -> None:
        """Keep the shape of a batch the table took, its columns now of ``kinds``.

        Only a batch read the general way whose data points all have the same fields, each
        in a column of a scalar kind, has a shape to keep."""
        if batch.columns is not None or not batch.points:
            return
        names = batch.points[0].keys()
        if "keys" in names or any(p.keys() != names for p in batch.points):
            return
        columns = tuple(c for c in kinds if c in names)
        if (
            len(columns) != len(names)
            or len(columns) > MAX_FIELDS
            or any(kinds[c] not in _TYPES for c in columns)
        ):
            return
        column_kinds = {c: kinds[c] for c in columns}
        signature = (columns, tuple(column_kinds.values()), batch.key_fields)
        key = (client_id, batch.table)
        known = self._known.get(key)
        if known is not None and known.signature == signature:
            return
        try:
            shape = Shape(columns, column_kinds, batch.key_fields)
        except (
            ValueError,
            TypeError,
        ):  # a name the typed decoder cannot match (a quote, a control character)
            return
        with self._lock:
            self._known[key] = shape
            self._known.move_to_end(key)
            while len(self._known) > self.limit:
                self._known.popitem(last=False)
