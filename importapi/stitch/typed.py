"""The fast way in for a batch: its messages decoded by a type made from its JSON Schema.

A batch's records all have the schema's fields, so msgspec can decode the messages straight
into structs of those fields, checking every type in C: integers (within 2**53), doubles,
text, booleans, instants and dates (RFC 3339, then written as the warehouse's ISO text),
exact decimals (kept as Decimal, checked against their step), objects and arrays (JSON
columns). The result is rows in a fixed column order, ready to store.

Whatever this does not take (a field the schema does not name, a value of another type, a
field of several types, a missing key, a NUL, a name given twice, an activation without a
version ...) is read again by ``batch.read_batch``, which refuses it with its reasons or
takes it the general way. So the decoder decides how fast a batch is read, never whether it
is taken or what is stored: both ways store the same rows.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Sequence
from decimal import Decimal
from itertools import compress, repeat
from operator import attrgetter, is_, is_not, itemgetter
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from msgspec import UNSET, UnsetType

from importapi.errors import BadRequest
from importapi.kinds import DOUBLE_EXACT, Kind, timestamp_text
from importapi.push import Batch, Push
from importapi.settings import Limits
from importapi.stitch import jsonschema, tree
from importapi.stitch.columns import fixed_column, timestamps
from importapi.stitch.proof import each_name_once, names, pairs_in, text_facts, text_in
from importapi.stitch.records import (
    BATCHED,
    CHILD_SYSTEM,
    EXTRACTED,
    MAX_RECORDS,
    PRIMARY_KEY,
    RECEIVED,
    SEQUENCE,
    SOURCE_KEY,
    SYSTEM,
    SYSTEM_KINDS,
    VERSION,
    primary_key,
    table_name,
)

_INT = Annotated[int, msgspec.Meta(ge=-(DOUBLE_EXACT - 1), le=DOUBLE_EXACT - 1)]
_SEQUENCE = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_TEXT_KINDS = (Kind.TEXT, Kind.TIMESTAMP, Kind.DATE)
_REJECTED = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError, ValueError)
MAX_DECODERS = 64
PREFIX_MAX = 64 * 1024
"""How far into a body its messages may begin for it to be read in one pass (the bytes
before them are kept, for at most ``MAX_DECODERS`` bodies)."""


class Decoded(NamedTuple):
    """A batch's records as rows: the record's columns, then ``tail`` (the system columns
    that vary from row to row), with ``constants`` the system columns of one value for all."""

    rows: list[tuple[Any, ...]]
    tail: tuple[str, ...]
    constants: dict[str, Any]
    valued: list[bool]
    """Whether each of the record's columns holds a value."""
    children: tree.Rows
    activate: bool
    pairs: int
    """The name-value pairs decoded."""
    texts: tuple[int, bool] | None
    """For a batch without arrays: the colons in its strings, and whether one holds a NUL."""


class _Head(msgspec.Struct, forbid_unknown_fields=True):
    table_name: str
    schema: msgspec.Raw
    messages: msgspec.Raw
    key_names: list[str] | UnsetType | None = UNSET
    table_version: int | UnsetType | None = UNSET
    bookmark_names: list[Any] | UnsetType | None = UNSET


_decode_head = msgspec.json.Decoder(_Head).decode
_HEAD_FIELDS = _Head.__struct_fields__


class Decoder:
    """The messages of batches of one schema, decoded into rows."""

    def __init__(self, schema: dict[str, Any]) -> None:
        fields = jsonschema.properties(schema)
        self.schema_pairs = pairs_in(schema)
        self.schema_texts = text_in(schema)
        self.root = tree.compile_record(fields)
        columns = self.root.columns
        self.names = tuple(c.name for c in columns)
        self.kinds = {c.name: c.kind for c in columns}
        self.post = [c.post for c in columns]
        self.steps = [c.step for c in columns]
        self.paths = {c.name: c.path for c in columns if c.name != c.path}
        self.fixes = [(j, c.post, c.step) for j, c in enumerate(columns) if c.post]
        self.texts = [j for j, c in enumerate(columns) if c.kind in _TEXT_KINDS]  # decoded as str
        self.plain_names = not any(":" in p for p in names(fields))
        message = msgspec.defstruct(
            "Message",
            [
                ("action", Literal["upsert", "activate_version"]),
                ("sequence", _SEQUENCE),
                ("data", self.root.struct | UnsetType, UNSET),
                ("time_extracted", str | None | UnsetType, UNSET),
            ],
            forbid_unknown_fields=True,
            gc=False,
        )
        every = [*columns, *(c for sub in tree.every(self.root.subtables) for c in sub.columns)]
        hook = Decimal if any(c.post == "decimal" for c in every) else None
        self.decode = msgspec.json.Decoder(list[message], float_hook=hook).decode  # type: ignore[valid-type]
        body = msgspec.defstruct(
            "Body",
            [
                ("table_name", str),
                ("schema", msgspec.Raw),
                ("messages", list[message]),  # type: ignore[valid-type]
                ("key_names", list[str] | UnsetType | None, UNSET),
                ("table_version", int | UnsetType | None, UNSET),
                ("bookmark_names", list[Any] | UnsetType | None, UNSET),
            ],
            forbid_unknown_fields=True,
        )
        self.decode_body: Any = msgspec.json.Decoder(body, float_hook=hook).decode
        """The whole body in one pass: the head as ``_Head`` has it, the messages decoded."""

    def rows(
        self,
        messages: list[Any],
        keys: tuple[str, ...],
        table: str,
        version: int | None,
        received: str,
        max_depth: int,
    ) -> Decoded | None:
        """The batch's rows, its subtables' rows, and what was found on the way (None: read
        it the general way)."""
        at_keys = [self.names.index(k) for k in keys if k in self.names]
        if len(at_keys) != len(keys) or self.root.depth >= max_depth:
            return None
        activate, upserts = _upserts(messages)
        if upserts is None:
            return None
        times = list(map(_TIME, upserts))
        missing = sum(map(is_, times, repeat(UNSET)))  # by identity, in C
        # action and sequence; time_extracted where given; each upsert's data
        pairs = 2 * len(messages) + len(upserts) - missing + len(upserts)
        if activate:  # an activate_version message's time_extracted counts too
            pairs += sum(1 for m in messages if m.action == _ACTIVATE and m.time_extracted is not UNSET)
        columns, arrays, n = self.root.table(list(map(_DATA, upserts)))
        pairs += n
        stamps = [None if t is UNSET else t for t in times] if missing else times
        # one time_extracted for all the records (as a tap writes them): read once, bound once
        same = bool(stamps) and stamps.count(stamps[0]) == len(stamps)
        texts = None
        if not arrays:
            texts = text_facts([*(columns[j] for j in self.texts), [] if same else stamps])
            if same and stamps[0] is not None:
                texts = (texts[0] + stamps[0].count(":") * len(stamps), texts[1] or "\x00" in stamps[0])
        for j in at_keys:  # a missing key is refused, with its reason, the general way
            if any(map(is_, columns[j], repeat(None))):
                return None
        for j, what, step in self.fixes:  # each column as the warehouse stores it, in C mostly
            fixed = fixed_column(columns[j], what, step)
            if fixed is None:
                return None
            columns[j] = fixed
        extracted = timestamps(stamps[:1] if same else stamps)
        if extracted is None:
            return None
        sequences = list(map(_SEQUENCE_OF, upserts))
        # a column of one value in every row is bound once, not carried by each row
        constants: dict[str, Any] = {VERSION: version, RECEIVED: received}
        tail: list[tuple[str, Sequence[Any]]] = [(SEQUENCE, sequences)]
        if same:
            constants[EXTRACTED] = extracted[0]
        else:
            tail.append((EXTRACTED, extracted))
        if not keys:
            tail.append((PRIMARY_KEY, [primary_key(table, version, m.sequence, m.data) for m in upserts]))
        rows = list(zip(*columns, *(values for _name, values in tail)))
        valued = [any(map(is_not, c, repeat(None))) for c in columns]  # which columns hold a value
        children = tree.Rows()
        if arrays:
            at = [len(rows[0]) - 1] if not keys else at_keys  # append-only: by __sdc_primary_key
            more = _children(rows, sequences, arrays, at, children)
            if more is None:
                return None
            pairs += more
        return Decoded(
            rows, tuple(name for name, _values in tail), constants, valued, children, activate, pairs, texts
        )


_ACTIVATE = "activate_version"
_DATA, _TIME, _SEQUENCE_OF = attrgetter("data"), attrgetter("time_extracted"), attrgetter("sequence")


def _upserts(messages: list[Any]) -> tuple[bool, list[Any] | None]:
    """Whether the batch activates its version, and its upsert messages (None: a message
    is not as the fast way takes it). Without an activation, in C."""
    if _ACTIVATE not in map(_ACTION, messages) and not any(map(is_, map(_DATA, messages), repeat(UNSET))):
        return False, messages
    activate, upserts = False, []
    for m in messages:
        if m.action == _ACTIVATE:
            activate = True
            if m.data is not UNSET:
                return activate, None
        elif m.data is UNSET:
            return activate, None
        else:
            upserts.append(m)
    return activate, upserts


_ACTION = attrgetter("action")


def _children(
    rows: list[tuple[Any, ...]], sequences: list[int], arrays: tree.Arrays, at_keys: list[int], out: tree.Rows
) -> int | None:
    """The subtables' rows of the records that win within the batch (the highest sequence
    per key, the later one on a tie) into ``out``; the name-value pairs of every record's
    (None: an element of a record that lost does not fit its field)."""
    keys: list[Sequence[Any]] = [list(map(itemgetter(j), rows)) for j in at_keys]
    whole: Sequence[Any] = list(zip(*keys)) if len(keys) > 1 else keys[0]
    if len(set(whole)) == len(whole):  # every key once: every record wins
        return sum(sub.emit(keys, values, sequences, out) for sub, values in arrays)
    winners: dict[Any, int] = {}
    for i, (key, sequence) in enumerate(zip(whole, sequences)):
        held = winners.get(key)
        if held is None or sequence >= sequences[held]:
            winners[key] = i
    won = [False] * len(rows)
    for i in winners.values():
        won[i] = True
    lost = [not w for w in won]
    losers = tree.Rows()  # their rows are only checked, and their pairs counted
    pairs = 0
    for mask, into in ((won, out), (lost, losers)):

        def pick(column: Sequence[Any], mask: list[bool] = mask) -> list[Any]:
            return list(compress(column, mask))

        for sub, values in arrays:
            pairs += sub.emit(list(map(pick, keys)), pick(values), pick(sequences), into)
    for sub, columns in losers.tables.items():
        for j, column in enumerate(sub.columns, len(columns) - len(sub.columns) - 1):
            if column.post and fixed_column(columns[j], column.post, column.step) is None:
                return None
    return pairs


_decoders: OrderedDict[bytes, Decoder | None] = OrderedDict()
_lock = threading.Lock()


def _decoder(schema: dict[str, Any]) -> Decoder | None:
    key = msgspec.json.encode(schema, order="sorted")
    with _lock:
        if key in _decoders:
            _decoders.move_to_end(key)
            return _decoders[key]
    try:
        made: Decoder | None = Decoder(schema)
    except (ValueError, TypeError, jsonschema.Unreadable):
        made = None
    with _lock:
        _decoders[key] = made
        while len(_decoders) > MAX_DECODERS:
            _decoders.popitem(last=False)
    return made


_by_prefix: OrderedDict[bytes, tuple[Decoder, bytes]] = OrderedDict()
"""A body's bytes before its messages -> the decoder its schema made, and that schema's text."""


def _decoded(raw: bytes) -> tuple[Any, Decoder, list[Any]] | None:
    """The body's head, its schema's decoder, and its messages decoded; None: read it the
    general way. A body that begins as an earlier one did (a tap's next batch of a stream)
    is decoded in one pass by that one's decoder, kept if its schema's text is the same;
    any other, its head first (the messages skipped), then its messages."""
    at = raw.find(b'"messages"', 0, PREFIX_MAX)
    prefix = raw[:at] if at > 0 and raw.find(b'"schema"', 0, at) >= 0 else None
    with _lock:
        known = _by_prefix.get(prefix) if prefix is not None else None
    if known is not None:
        decoder, schema_text = known
        try:
            body = decoder.decode_body(raw)
        except (*_REJECTED, BadRequest):
            body = None
        if body is not None and bytes(body.schema) == schema_text:
            return body, decoder, body.messages
    try:
        head = _decode_head(raw)
        schema = msgspec.json.decode(head.schema)
    except _REJECTED:
        return None
    made = _decoder(schema) if type(schema) is dict else None
    if made is None:
        return None
    try:
        messages = made.decode(head.messages)
    except (*_REJECTED, BadRequest):
        return None  # refused, with its reasons, the general way
    if prefix is not None:
        with _lock:
            _by_prefix[prefix] = (made, bytes(head.schema))
            _by_prefix.move_to_end(prefix)
            while len(_by_prefix) > MAX_DECODERS:
                _by_prefix.popitem(last=False)
    return head, made, messages


def read(raw: bytes, client_id: int, *, sandbox: bool, received: dt.datetime, limits: Limits) -> Push | None:
    """The push of a batch its schema's decoder takes whole; None: read it the general way."""
    decoded = _decoded(raw)
    if decoded is None:
        return None
    head, decoder, messages = decoded
    keys = tuple(head.key_names or ())
    version = head.table_version if isinstance(head.table_version, int) else None
    if len(set(keys)) != len(keys) or not all(keys) or not 1 <= len(messages) <= MAX_RECORDS:
        return None
    try:
        table = table_name(head.table_name)
    except BadRequest:
        return None  # refused, with its reason, the general way
    made = decoder.rows(messages, keys, table, version, timestamp_text(received), limits.max_depth)
    if made is None:
        return None
    rows, tail, constants, valued, children, activate, pairs, texts = made
    if activate and version is None:
        return None
    pairs += sum(1 for f in _HEAD_FIELDS if getattr(head, f) is not UNSET) + decoder.schema_pairs
    if not decoder.plain_names:
        texts = None  # its colons cannot be counted from its strings alone
    elif texts is not None:  # the head's strings and names count too
        colons, nul = decoder.schema_texts
        for value in (head.table_name, head.key_names, head.bookmark_names):
            more, held = text_in(value)
            colons, nul = colons + more, nul or held
        texts = (texts[0] + colons, texts[1] or nul)
    if not each_name_once(raw, pairs, texts):
        return None
    columns = (*decoder.names, *tail)
    kinds: dict[str, Kind] = dict(SYSTEM_KINDS)
    if not keys:
        kinds[PRIMARY_KEY] = Kind.TEXT
    for name, held in zip(decoder.names, valued):
        kind = decoder.kinds[name]
        if kind is not None and (name in keys or held):  # a null never decides a type
            kinds[name] = kind
    ready = frozenset(n for n, p in zip(decoder.names, decoder.post) if p in ("timestamp", "date", "decimal"))
    batch = Batch(
        table,
        keys or (PRIMARY_KEY,),
        rows,
        kinds,
        columns=columns,
        sequence=SEQUENCE,
        version=VERSION,
        activate=version if activate else None,
        stamp=BATCHED,
        constants=constants,
        system=SYSTEM,
        nested=True,
        paths=decoder.paths,
        ready=ready | {RECEIVED, EXTRACTED, BATCHED},
    )
    subtables = _subtables(batch, children, version, timestamp_text(received))
    return None if subtables is None else Push(client_id, [batch, *subtables], sandbox)


def _subtables(parent: Batch, children: tree.Rows, version: int | None, received: str) -> list[Batch] | None:
    """The batches of a batch's subtables; None if a value does not fit its field."""
    sources = tuple(SOURCE_KEY + k for k in parent.key_fields)
    kinds = {s: parent.kinds[k] for s, k in zip(sources, parent.key_fields)}
    keys_ready = {s for s, k in zip(sources, parent.key_fields) if k in parent.ready}
    out = []
    for sub, columns in children.tables.items():
        head = (*sources, *sub.levels)
        own = kinds | dict.fromkeys(sub.levels, Kind.INTEGER)
        own |= {c: SYSTEM_KINDS[c] for c in CHILD_SYSTEM}
        for j, column in enumerate(sub.columns, len(head)):
            if column.post:
                fixed = fixed_column(columns[j], column.post, column.step)
                if fixed is None:
                    return None
                columns[j] = fixed
            if column.kind is not None and any(map(is_not, columns[j], repeat(None))):
                own[column.name] = column.kind
        *values, sequences = columns
        rows = list(zip(*values, sequences))
        out.append(
            Batch(
                table_name(f"{parent.table}__{'__'.join(sub.parts)}"),
                head,
                rows,
                own,
                columns=(*head, *(c.name for c in sub.columns), SEQUENCE),
                stamp=BATCHED,
                constants={VERSION: version, RECEIVED: received},
                system=frozenset((*head, *CHILD_SYSTEM)),
                parent=parent.table,
                parent_keys=sources,
                paths={c.name: c.path for c in sub.columns if c.name != c.path},
                ready=frozenset(c.name for c in sub.columns if c.post) | keys_ready | {RECEIVED, BATCHED},
            )
        )
    return out
