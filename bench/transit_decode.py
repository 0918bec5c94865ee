"""Transit-JSON bodies (``application/transit+json``, as stitchclient and the Java and Clojure
clients send them to /v2/import/push): decoding them, side by side.

    python -m bench.transit_decode [--quick] [--records 20000] [--repeats 5] [--only NAME,NAME...]
                                   [--pause-gc]

Builds 20,000 push records (client_id, table_name, sequence ~1.8e18, action, key_names, data
of 12 fields: ints, strings, nulls, Decimals, floats, UTC timestamps, booleans, integers past
2^53 and past 2^64, a list, a nested map), once with string keys (stitchclient, the Java
client) and once with keyword keys (the Clojure client), and encodes them with a Transit
library's own writer (stitchclient's vendored one when installed, as it is what sends these
bodies; the bytes of the other writers are compared with it), so the body has the real
tags (``~m`` millis, ``~f`` decimals, ``~i``/``~n`` big integers, ``~:`` keywords) and the
real write cache (``^0``, ``^1``... for repeated keys). Then times decoding, from the raw
bytes, median of several runs, with:

- transit-python (PyPI ``transit-python``, the maintained successor of Cognitect's, with its
  native extension; and the same with ``TRANSIT_PUREPYTHON=1``);
- transit-python2 (PyPI ``transit-python2``, a 2022 fork);
- the Transit that stitchclient 1.0.1 vendors (it does not import on Python 3.10+: run here
  with ``collections.MutableMapping`` put back);
- our own decoder: msgspec decodes the JSON, then one walk resolves the tags and the cache;
- msgspec's JSON decode alone, as the floor.

Times are CPU seconds of the decoding process; the garbage collector runs as by default, or is
paused during each decode with --pause-gc (a 20,000-record Transit body is ~900k objects
once parsed, and collections are a large part of the cost).

Every decoded body is checked against the records it was built from (timestamps aware and in
UTC, Decimals exact, big integers exact, booleans as bool, keys as str) and what each gives
back is printed: types of maps, keys, booleans, timestamps.

The libraries all install a top-level package named ``transit``, so they cannot share one
environment: each runs in a child process, with its own directory first on sys.path. transit-
python is taken from the venv; the others from directories made with pip's ``--target``:

    .venv/bin/pip install transit-python
    .venv/bin/pip install --target .venv/alt/transit-python2 transit-python2
    .venv/bin/pip install --target .venv/alt/stitchclient stitchclient

(or set TRANSIT_ALT_DIR to the folder holding ``transit-python2/`` and ``stitchclient/``).
A library that is not there is reported and skipped; this script installs nothing.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gc
import hashlib
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from bench.cpu import cpu_seconds

UTC = dt.UTC
ROOT = Path(__file__).resolve().parent.parent
ALT_DIR = Path(os.environ.get("TRANSIT_ALT_DIR", ROOT / ".venv" / "alt"))
SEQ_BASE = 1_796_111_209_374_000_000


# ---------------------------------------------------------------------------------------------
# The records, in plain Python (no Transit types): what every decoder must give back


def make_records(n: int) -> list[dict[str, Any]]:
    base = dt.datetime(2026, 12, 1, 7, 46, 49, 376000, tzinfo=UTC)
    out = []
    for i in range(n):
        created = base - dt.timedelta(milliseconds=i * 7919 + (i % 1000))  # Transit ~m: millis
        out.append(
            {
                "client_id": 4242,
                "table_name": "customers",
                "sequence": SEQ_BASE + i,  # past 2^53: written as "~i..."
                "action": "upsert",
                "key_names": ["id"],
                "data": {
                    "id": i + 1,
                    "name": f"customer {i}",
                    "email": None if i % 7 == 0 else f"user{i}@example.com",
                    "amount": Decimal(f"{i % 100000}.{i % 100:02d}"),  # "~f1234.50"
                    "price": i * 0.25 + 0.1,
                    "created_at": created,
                    "updated_at": created + dt.timedelta(seconds=i % 3600),
                    "active": i % 2 == 0,
                    "visits": 2**60 + i,  # past 2^53: "~i..."
                    "huge": 2**70 + i,  # past 2^63: "~n..."
                    "tags": ["a", "b"] if i % 3 else [],
                    "address": {"city": "Berlin", "zip": f"{10000 + i % 90000}"},
                },
            }
        )
    return out


_ID = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
_MANY = [f"field_{i:04d}" for i in range(3000)]
_LONG_DECIMAL = "123456789012345678901234567890.123456789"
_TIMES = (
    dt.datetime(1969, 7, 20, 20, 17, 40, 123000, tzinfo=UTC),
    dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
)


def edge_cases(Keyword: Callable[[str], Any]) -> list[tuple[str, Any, Any]]:
    """(what, the value given to a writer, what a decoder should give back in plain Python:
    keywords as str, sets as sorted lists, tuple keys as tuples)."""
    kw = Keyword
    return [
        (
            "strings that need escaping",
            ["~tilde", "^caret", "`tick", "^ ", "~#notatag", "~~"],
            ["~tilde", "^caret", "`tick", "^ ", "~#notatag", "~~"],
        ),
        (
            "map keys that need escaping",
            {"~k": 1, "^k": 2, "`k": 3, "^ ": 4},
            {"~k": 1, "^k": 2, "`k": 3, "^ ": 4},
        ),
        (
            "3,000 distinct keys twice (the cache rolls over at 1,936)",
            [{k: i for i, k in enumerate(_MANY)}, {k: i for i, k in enumerate(_MANY)}],
            [{k: i for i, k in enumerate(_MANY)}, {k: i for i, k in enumerate(_MANY)}],
        ),
        (
            "keyword values, repeated (cached as ~:...)",
            [kw("upsert")] * 5 + [{kw("action"): kw("switch_view")}] * 3,
            ["upsert"] * 5 + [{"action": "switch_view"}] * 3,
        ),
        (
            "integers at 2^53, 2^63, 2^64",
            [2**53 - 1, 2**53, -(2**53), 2**63 - 1, 2**63, -(2**63), 2**64 + 1],
            [2**53 - 1, 2**53, -(2**53), 2**63 - 1, 2**63, -(2**63), 2**64 + 1],
        ),
        (
            "decimals",
            [Decimal("12.50"), Decimal("-0.00"), Decimal("1E+2"), Decimal(_LONG_DECIMAL)],
            [Decimal("12.50"), Decimal("-0.00"), Decimal("1E+2"), Decimal(_LONG_DECIMAL)],
        ),
        ("timestamps before 1970, in 2038, in 9999", list(_TIMES), list(_TIMES)),
        (
            "a timestamp with microseconds (Transit ~m keeps millis)",
            [dt.datetime(2026, 12, 1, 7, 46, 49, 376708, tzinfo=UTC)],
            [dt.datetime(2026, 12, 1, 7, 46, 49, 376000, tzinfo=UTC)],
        ),
        (
            "floats, infinities",
            [0.1, 1e300, -2.5, math.inf, -math.inf],
            [0.1, 1e300, -2.5, math.inf, -math.inf],
        ),
        ("uuid", [_ID], [_ID]),
        ("a set", [{3, 1, 2}], [[1, 2, 3]]),
        ("int and bool keys", {1: "a", False: "b"}, {1: "a", False: "b"}),
        ("tuple keys (~#cmap)", {(1, 2): "x", (3, 4): "y"}, {(1, 2): "x", (3, 4): "y"}),
        (
            "empty map and list, non-ASCII",
            {"a": [], "b": {}, "Zürich ✓ 日本": "ü"},
            {"a": [], "b": {}, "Zürich ✓ 日本": "ü"},
        ),
        (VERBOSE, make_records(3), make_records(3)),
    ]


VERBOSE = "JSON-verbose (maps as objects, ~t timestamps)"


def _plain_key(k: Any) -> Any:
    if isinstance(k, (tuple, list)):
        return tuple(_plain(v) for v in k)
    return _plain(k)


def _edge_equal(got: Any, want: Any) -> bool:
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(_edge_equal(got[k], v) for k, v in want.items())
        )
    if isinstance(want, list):
        if isinstance(got, list) and len(got) == len(want) and all(type(x) is int for x in got):
            got = sorted(got) if sorted(got) == want else got  # sets come back in any order
        return isinstance(got, list) and len(got) == len(want) and all(map(_edge_equal, got, want))
    if isinstance(want, dt.datetime):
        return isinstance(got, dt.datetime) and got == want and got.utcoffset() == dt.timedelta(0)
    return type(got) is type(want) and got == want


# ---------------------------------------------------------------------------------------------
# Our own decoder: msgspec parses the JSON, one walk resolves Transit's tags and its cache

EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
CACHE_DIGITS = 44
CACHE_SIZE = CACHE_DIGITS * CACHE_DIGITS
_JSON = msgspec.json.Decoder()


class TransitError(ValueError):
    """The body is not Transit we can read (a 400)."""


_timedelta = dt.timedelta


def _millis(rep: str) -> dt.datetime:
    return EPOCH + _timedelta(0, 0, 0, int(rep))


# the tags whose value is one call on the rest of the string (no cache, no escape)
_FAST: dict[str, Callable[[str], Any]] = {"m": _millis, "i": int, "n": int, "f": Decimal, "d": float}


def _scalar(s: str) -> Any:
    """A string that starts with ``~``: Transit's scalar tags."""
    tag, rep = s[1:2], s[2:]
    try:
        if tag == "m":
            return EPOCH + _timedelta(0, 0, 0, int(rep))  # (days, s, us, ms): exact, no float
        if tag == "f":
            return Decimal(rep)
        if tag == "i" or tag == "n":
            return int(rep)
        if tag == ":" or tag == "$" or tag == "r" or tag == "c":
            return rep  # keywords and symbols become plain strings: column names, actions
        if tag == "_":
            return None
        if tag == "?":
            return rep == "t"
        if tag == "d":
            return float(rep)
        if tag == "~" or tag == "^" or tag == "`":
            return s[1:]  # escaped
        if tag == "t":
            d = dt.datetime.fromisoformat(rep)
            return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)
        if tag == "u":
            return uuid.UUID(rep)
        if tag == "z":
            return {"NaN": math.nan, "INF": math.inf, "-INF": -math.inf}[rep]
        if tag == "b":
            return base64.b64decode(rep)
    except (ValueError, KeyError, ArithmeticError) as e:
        raise TransitError(f"bad Transit value {s[:40]!r}: {e}") from None
    raise TransitError(f"unknown Transit tag {s[:2]!r}")


def _tagged(tag: str, rep: Any) -> Any:
    if tag == "'" or tag == "list":
        return rep
    if tag == "set":
        return list(rep)  # sets of rows' values: a list is what we store
    if tag == "cmap":
        if not isinstance(rep, list) or len(rep) % 2:
            raise TransitError("~#cmap needs an even array")
        return {(tuple(k) if isinstance(k, list) else k): v for k, v in zip(rep[::2], rep[1::2], strict=True)}
    if tag == "u" and isinstance(rep, list) and len(rep) == 2:
        hi, lo = rep
        return uuid.UUID(int=((hi & 2**64 - 1) << 64) | (lo & 2**64 - 1))
    raise TransitError(f"unknown Transit tag ~#{tag}")


def transit_loads(raw: bytes | str) -> Any:
    """Transit JSON (or JSON-verbose) to plain Python: dict (str keys), list, str, int, float,
    bool, None, Decimal, datetime (aware, UTC), UUID, bytes."""
    try:
        tree = _JSON.decode(raw)
    except msgspec.DecodeError as e:
        raise TransitError(f"Malformed json in the body! {e}") from None
    try:
        return _walk(tree)
    except (ValueError, ArithmeticError, OverflowError) as e:  # int("x"), Decimal("x"), a year 10000
        if isinstance(e, TransitError):
            raise
        raise TransitError(f"bad Transit value: {e}") from None


def _walk(tree: Any) -> Any:
    cache: list[str] = []
    # map keys already resolved: cache codes ("^3") and short keys (never cached); emptied
    # with the cache. Keys repeat in every record, so most keys are one dict hit.
    keys: dict[str, Any] = {}

    def lookup(s: str) -> str:
        n = len(s)
        try:
            if n == 2:
                return cache[ord(s[1]) - 48]
            if n == 3:
                return cache[(ord(s[1]) - 48) * CACHE_DIGITS + ord(s[2]) - 48]
        except IndexError:
            pass
        raise TransitError(f"cache reference {s!r} to nothing")

    def remember(s: str) -> None:
        if len(cache) == CACHE_SIZE:  # full: start again, as the writers do
            cache.clear()
            keys.clear()
        cache.append(s)

    def key(k: Any) -> Any:
        """A map key not in ``keys``: resolve it, fill the cache, memoize what can be."""
        if type(k) is not str:
            return value(k)
        raw_key = k
        if k[:1] == "^":
            k = lookup(k)
        elif len(k) > 3:
            remember(k)
            raw_key = ""  # seen in full: it must fill the cache again next time, not memoized
        if k[:1] == "~":
            if k[1:2] == "#":
                raise TransitError(f"a tag {k!r} as a map key")
            k = _scalar(k)
        if raw_key:
            keys[raw_key] = k
        return k

    def string(s: str) -> Any:
        c = s[:1]
        if c == "^":
            if s == "^ ":
                raise TransitError("'^ ' outside the head of a map")
            s = lookup(s)
            c = s[:1]
        elif c == "~" and len(s) > 3 and s[1] in ":$#":
            remember(s)
        if c == "~":
            if s[1:2] == "#":
                raise TransitError(f"a tag {s!r} where a value belongs")
            return _scalar(s)
        return s

    def value(x: Any) -> Any:
        t = type(x)
        if t is str:
            if x and (x[0] == "~" or x[0] == "^"):
                return string(x)
            return x
        if t is list:
            if not x:
                return x
            first = x[0]
            if first == "^ ":  # a map, as an array of alternating keys and values
                out: dict[Any, Any] = {}
                it = iter(x)
                next(it)
                get, fast = keys.get, _FAST.get
                for k in it:
                    kk = get(k) if type(k) is str else None  # the key first: the cache fills in order
                    if kk is None:
                        kk = key(k)
                    v = next(it)
                    tv = type(v)
                    if tv is str:
                        if v:
                            c = v[0]
                            if c == "~":
                                fn = fast(v[1:2])
                                v = fn(v[2:]) if fn is not None else string(v)
                            elif c == "^":
                                v = string(v)
                    elif tv is list or tv is dict:
                        v = value(v)
                    out[kk] = v
                return out
            if type(first) is str and first[:1] in ("~", "^"):
                head = lookup(first) if first[:1] == "^" else first
                if first[:1] == "~" and len(first) > 3 and first[1] in ":$#":
                    remember(first)
                if head[:2] == "~#":
                    if len(x) != 2:
                        raise TransitError(f"tagged value {head!r} needs one representation")
                    return _tagged(head[2:], value(x[1]))
                return [_scalar(head) if head[:1] == "~" else head] + [value(e) for e in x[1:]]
            return [value(e) for e in x]
        if t is dict:  # JSON-verbose maps, or {"~#tag": rep}
            if len(x) == 1:
                ((k, v),) = x.items()
                head = lookup(k) if k[:1] == "^" else k
                if head[:2] == "~#":
                    if k[:1] != "^" and len(k) > 3:
                        remember(k)
                    return _tagged(head[2:], value(v))
            out = {}
            for k, v in x.items():
                kk = key(k)
                out[kk] = value(v)
            return out
        return x

    return value(tree)


# ---------------------------------------------------------------------------------------------
# The libraries, each in a child process


@dataclass(frozen=True)
class Lib:
    name: str
    dist: str  # the PyPI name
    path: Path | None  # put first on sys.path; None: the venv's own site-packages
    env: tuple[tuple[str, str], ...] = ()
    shim: bool = False  # put collections.MutableMapping & co back for Python 3.10+
    install: str = ""


LIBS = [
    Lib(
        "transit-python (native ext)", "transit-python", None, install=".venv/bin/pip install transit-python"
    ),
    Lib(
        "transit-python (pure Python)",
        "transit-python",
        None,
        env=(("TRANSIT_PUREPYTHON", "1"),),
        install=".venv/bin/pip install transit-python",
    ),
    Lib(
        "transit-python2",
        "transit-python2",
        ALT_DIR / "transit-python2",
        install=".venv/bin/pip install --target .venv/alt/transit-python2 transit-python2",
    ),
    Lib(
        "stitchclient 1.0.1's vendored transit",
        "stitchclient",
        ALT_DIR / "stitchclient",
        shim=True,
        install=".venv/bin/pip install --target .venv/alt/stitchclient stitchclient",
    ),
]
WRITER_PREFERENCE = (
    "stitchclient 1.0.1's vendored transit",
    "transit-python (native ext)",
    "transit-python2",
)


def _prepare(lib: Lib) -> None:
    """In the child: make ``import transit`` find this library."""
    if lib.path is not None:
        sys.path.insert(0, str(lib.path))
    if lib.shim:
        import collections
        import collections.abc

        for name in (
            "MutableMapping",
            "Mapping",
            "MutableSet",
            "Set",
            "Sequence",
            "Iterable",
            "Hashable",
            "Callable",
        ):
            if not hasattr(collections, name):
                setattr(collections, name, getattr(collections.abc, name))


def _lib_version(lib: Lib) -> str:
    import importlib.metadata

    try:
        if lib.path is not None:
            dists = importlib.metadata.distributions(path=[str(lib.path)])
            for d in dists:
                if d.metadata["Name"].lower() == lib.dist:
                    return d.version
            return "?"
        return importlib.metadata.version(lib.dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _to_transit(x: Any, keyword_keys: bool, Keyword: Any) -> Any:
    if isinstance(x, dict):
        return {
            (Keyword(k) if keyword_keys else k): _to_transit(v, keyword_keys, Keyword) for k, v in x.items()
        }
    if isinstance(x, list):
        return [_to_transit(v, keyword_keys, Keyword) for v in x]
    return x


def child_encode(lib: Lib, n: int, keyword_keys: bool, out: Path) -> dict[str, Any]:
    _prepare(lib)
    from transit.transit_types import Keyword
    from transit.writer import Writer

    records = _to_transit(make_records(n), keyword_keys, Keyword)
    buf = io.StringIO()
    Writer(buf, "json").write(records)  # what stitchclient's encode_transit does
    data = buf.getvalue().encode("utf-8")
    out.write_bytes(data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def child_encode_edges(lib: Lib, out: Path) -> dict[str, Any]:
    _prepare(lib)
    from transit.transit_types import Keyword
    from transit.writer import Writer

    bodies = {}
    for what, given, _ in edge_cases(Keyword):
        buf = io.StringIO()
        try:
            Writer(buf, "json_verbose" if what == VERBOSE else "json").write(given)
            bodies[what] = buf.getvalue()
        except Exception as e:
            bodies[what] = f"WRITER FAILS: {type(e).__name__}: {e}"
    out.write_text(json.dumps(bodies))
    return {"cases": len(bodies)}


def check_edges(decode: Callable[[bytes], Any], bodies: dict[str, str]) -> dict[str, str]:
    out = {}
    for what, _, want in edge_cases(str):
        text = bodies[what]
        if text.startswith("WRITER FAILS"):
            out[what] = text
            continue
        try:
            got = _plain(decode(text.encode()))
        except Exception as e:
            out[what] = f"FAILS: {type(e).__name__}: {str(e)[:80]}"
            continue
        out[what] = "ok" if _edge_equal(got, want) else f"DIFFERS: {_first_difference(got, want)}"
    return out


def _first_difference(got: Any, want: Any) -> str:
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        for g, w in zip(got, want, strict=True):
            if not _edge_equal(g, w):
                return f"{g!r}, not {w!r}"
    return f"{str(got)[:90]}"


def child_decode_edges(lib: Lib, body: Path) -> dict[str, Any]:
    _prepare(lib)
    from transit.reader import Reader

    bodies = json.loads(body.read_text())
    return {"edges": check_edges(lambda raw: Reader("json").read(io.StringIO(raw.decode())), bodies)}


def _plain(x: Any) -> Any:
    """A library's output in plain Python, for comparing with the records."""
    if isinstance(x, Mapping):
        return {_plain_key(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, frozenset, set)):
        return [_plain(v) for v in x]
    if type(x).__name__ in ("Keyword", "Symbol"):
        return str(x)
    if type(x).__name__ == "Boolean":
        return bool(x)
    return x


def describe(decoded: Any, records: list[dict[str, Any]]) -> dict[str, str]:
    """What the decoder gives back, and whether it equals the records."""
    first = decoded[0]
    data_key = next(k for k in first if str(k) == "data")
    data = first[data_key]
    byname = {str(k): v for k, v in data.items()}
    created, amount = byname["created_at"], byname["amount"]
    seq = next(v for k, v in first.items() if str(k) == "sequence")
    out = {
        "top": type(decoded).__name__,
        "map": type(first).__name__,
        "key": type(next(iter(first))).__name__,
        "bool": type(byname["active"]).__name__,
        "timestamp": f"{type(created).__name__}, tz={created.tzinfo!r}"
        if isinstance(created, dt.datetime)
        else type(created).__name__,
        "decimal": f"{type(amount).__name__} {amount}",
        "big ints": "exact"
        if seq == records[0]["sequence"] and byname["huge"] == records[0]["data"]["huge"] and type(seq) is int
        else f"WRONG {seq!r}",
    }
    plain = _plain(decoded)
    if len(plain) != len(records):
        out["equal"] = f"{len(plain)} records, not {len(records)}"
    else:
        out["equal"] = "ok"
        for i, (got, want) in enumerate(zip(plain, records, strict=True)):
            if got != want:
                bad = [k for k in want["data"] if got.get("data", {}).get(k) != want["data"][k]]
                out["equal"] = f"record {i} differs ({', '.join(bad) or 'envelope'})"
                break
            for f in ("created_at", "updated_at"):
                v = got["data"][f]
                if not isinstance(v, dt.datetime) or v.utcoffset() != dt.timedelta(0):
                    out["equal"] = f"record {i}: {f} not aware UTC"
                    break
            amount = got["data"]["amount"]
            if type(amount) is not Decimal or str(amount) != str(want["data"]["amount"]):
                out["equal"] = f"record {i}: amount {got['data']['amount']!r}"
                break
            if out["equal"] != "ok":
                break
    return out


PAUSE_GC = os.environ.get("BENCH_PAUSE_GC") == "1"  # --pause-gc, passed on to the children


def time_decode(fn: Callable[[bytes], Any], raw: bytes, repeats: int) -> list[float]:
    """CPU seconds of this process (``bench.cpu``); the collector runs during the decode
    unless --pause-gc."""
    return cpu_seconds(fn, raw, repeats, pause_gc=PAUSE_GC)


def plain_converter() -> Callable[[Any], Any]:
    """What the server would have to run after a Transit library: its frozendicts, tuples,
    Keywords and Booleans to dict, list, str and bool (the library's types looked up once)."""
    from transit import transit_types as tt

    named = (tt.Keyword, tt.Symbol)
    boolean = getattr(tt, "Boolean", None)
    maps = (dict, tt.frozendict)

    def key(k: Any) -> Any:
        return k.str if type(k) in named else k

    def conv(x: Any) -> Any:
        t = type(x)
        if t in maps:
            return {key(k): conv(v) for k, v in x.items()}
        if t is tuple or t is list:
            return [conv(v) for v in x]
        if t is boolean:
            return bool(x)
        if t in named:
            return x.str
        return x

    return conv


def child_decode(lib: Lib, body: Path, n: int, repeats: int) -> dict[str, Any]:
    _prepare(lib)
    import transit
    from transit.reader import Reader

    raw = body.read_bytes()

    def decode(raw: bytes) -> Any:
        return Reader("json").read(io.StringIO(raw.decode("utf-8")))

    to_plain = plain_converter()

    def decode_plain(raw: bytes) -> Any:
        return to_plain(decode(raw))

    decoded = decode(raw)
    records = make_records(n)
    info = describe(decoded, records)
    plain_check = describe(decode_plain(raw), records)["equal"]
    del decoded, records
    gc.collect()
    gc.freeze()
    times, plain_times = [], []
    for _ in range(repeats):  # alternately, so a slow spell falls on both
        times += time_decode(decode, raw, 1)
        plain_times += time_decode(decode_plain, raw, 1)
    native = getattr(getattr(transit, "_accel", None), "native", None) is not None
    return {
        "times": times,
        "plain_times": plain_times,
        "plain_check": plain_check,
        "describe": info,
        "version": _lib_version(lib),
        "native": native,
        "file": str(Path(transit.__file__).parent),
    }


def _child_available(lib: Lib) -> str | None:
    """None when the library can be imported in a child; else why not."""
    if lib.path is not None and not (lib.path / "transit").is_dir():
        return f"not installed ({lib.install})"
    if lib.path is None:
        import importlib.util

        spec = importlib.util.find_spec("transit")
        if spec is None or _lib_version(lib) == "?":
            return f"not installed ({lib.install})"
    return None


def run_child(args: list[str], lib: Lib) -> dict[str, Any]:
    env = {**os.environ, **dict(lib.env)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.transit_decode", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail}
    parsed: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return parsed


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 records, 2 runs: a smoke run")
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated substrings of decoder names")
    ap.add_argument(
        "--pause-gc",
        action="store_true",
        help="pause the cyclic garbage collector during each timed decode (as a server may)",
    )
    ap.add_argument(
        "--child", choices=("encode", "decode", "encode-edges", "decode-edges"), help=argparse.SUPPRESS
    )
    ap.add_argument("--lib", help=argparse.SUPPRESS)
    ap.add_argument("--body", help=argparse.SUPPRESS)
    ap.add_argument("--keywords", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n, repeats = (2000, 2) if args.quick else (args.records, args.repeats)
    if args.pause_gc:
        global PAUSE_GC
        PAUSE_GC = True
        os.environ["BENCH_PAUSE_GC"] = "1"

    if args.child:
        lib = next(x for x in LIBS if x.name == args.lib)
        if args.child == "encode":
            result = child_encode(lib, n, args.keywords, Path(args.body))
        elif args.child == "encode-edges":
            result = child_encode_edges(lib, Path(args.body))
        elif args.child == "decode-edges":
            result = child_decode_edges(lib, Path(args.body))
        else:
            result = child_decode(lib, Path(args.body), n, repeats)
        print(json.dumps(result))
        return

    wanted = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    libs, missing = [], []
    for lib in LIBS:
        why = _child_available(lib)
        if why:
            missing.append((lib.name, why))
        elif not wanted or any(w in lib.name.lower() for w in wanted):
            libs.append(lib)
    for name, why in missing:
        print(f"NOTE: {name}: {why}; skipped", file=sys.stderr)
    writers = [
        x for name in WRITER_PREFERENCE for x in LIBS if x.name == name and _child_available(x) is None
    ]
    if not writers:
        sys.exit("No Transit writer to build the body with: " + LIBS[0].install)

    print(
        f"python {sys.version.split()[0]}, msgspec {msgspec.__version__}; {n:,} records; median of "
        f"{repeats} runs, CPU time of the decoding process; garbage collector "
        + ("paused during each decode" if PAUSE_GC else "on (as by default)")
    )
    records = make_records(n)
    rows: list[tuple[str, str, dict[str, Any], dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        bodies: dict[str, Path] = {}
        for style in ("string keys", "keyword keys"):
            path = Path(tmp) / f"{style.split()[0]}.transit.json"
            digests: dict[str, str] = {}
            for w in writers:
                out = path if w is writers[0] else path.with_suffix(f".{len(digests)}")
                cargs = ["--child", "encode", "--lib", w.name, "--body", str(out), "--records", str(n)]
                res = run_child(cargs + (["--keywords"] if style == "keyword keys" else []), w)
                if "error" in res:
                    print(f"  writer {w.name}: {res['error']}")
                    continue
                digests[w.name] = res["sha256"]
            if not path.exists():
                sys.exit(f"no writer produced the {style} body")
            bodies[style] = path
            raw = path.read_bytes()
            ref = digests.get(writers[0].name)
            same = [name for name, d in digests.items() if d == ref and name != writers[0].name]
            other = [name for name, d in digests.items() if d != ref]
            print(
                f"{style}: {len(raw) / 2**20:.1f} MiB, written by {writers[0].name}"
                + (f"; byte-identical from {', '.join(same)}" if same else "")
                + (f"; DIFFERENT bytes from {', '.join(other)}" if other else "")
            )
            sample = raw[: raw.index(b"],[", 400) + 1] if b"],[" in raw[400:] else raw[:400]
            print("   first records: " + sample[:300].decode() + " ...")

        ours_times: dict[str, float] = {}
        ours_info: dict[str, dict[str, str]] = {}
        floor: dict[str, float] = {}
        for style, path in bodies.items():
            decoded = transit_loads(path.read_bytes())
            ours_info[style] = describe(decoded, records)
            del decoded
        # nothing big left alive for the collector to walk again and again, as in the children
        del records
        gc.collect()
        gc.freeze()
        for style, path in bodies.items():
            raw = path.read_bytes()
            ours_runs: list[float] = []
            floor_runs: list[float] = []
            for _ in range(repeats):  # alternately, so that a slow spell falls on both
                ours_runs += time_decode(transit_loads, raw, 1)
                floor_runs += time_decode(_JSON.decode, raw, 1)
            ours_times[style] = statistics.median(ours_runs)
            floor[style] = statistics.median(floor_runs)
        rows.append(("msgspec JSON decode alone (no Transit)", msgspec.__version__, {}, floor))
        rows.append(
            ("ours: msgspec + a walk for tags & cache", msgspec.__version__, _merge(ours_info), ours_times)
        )
        for lib in libs:
            times: dict[str, float] = {}
            plain_times: dict[str, float] = {}
            plain_checks: list[str] = []
            infos: dict[str, dict[str, str]] = {}
            version = "?"
            for style, path in bodies.items():
                res = run_child(
                    [
                        "--child",
                        "decode",
                        "--lib",
                        lib.name,
                        "--body",
                        str(path),
                        "--records",
                        str(n),
                        "--repeats",
                        str(repeats),
                    ],
                    lib,
                )
                if "error" in res:
                    infos[style] = {"equal": f"FAILS: {res['error']}"}
                    continue
                times[style] = statistics.median(res["times"])
                plain_times[style] = statistics.median(res["plain_times"])
                plain_checks.append(res["plain_check"])
                infos[style] = res["describe"]
                version = res["version"]
            rows.append((lib.name, version, _merge(infos), times))
            if plain_times:
                ok = plain_checks and all(c == "ok" for c in plain_checks)
                verdict = "ok" if ok else "; ".join(plain_checks)
                rows.append(("  + its types to dict/list/str/bool", "", {"equal": verdict}, plain_times))

        edges_path = Path(tmp) / "edges.json"
        edge_res = run_child(
            ["--child", "encode-edges", "--lib", writers[0].name, "--body", str(edges_path)], writers[0]
        )
        edges: dict[str, dict[str, str]] = {}
        if "error" not in edge_res:
            bodies_e = json.loads(edges_path.read_text())
            edges["ours"] = check_edges(transit_loads, bodies_e)
            for lib in libs:
                res = run_child(
                    ["--child", "decode-edges", "--lib", lib.name, "--body", str(edges_path)], lib
                )
                edges[lib.name] = res.get("edges", {"(all)": f"FAILS: {res.get('error')}"})

    print()
    head = (
        f"{'decoder':42} {'version':>8} {'string keys ms':>14} {'keyword keys ms':>15} {'us/rec':>7}  check"
    )
    print(head)
    print("-" * len(head))
    for name, version, info, times in rows:
        s, k = times.get("string keys"), times.get("keyword keys")
        per = f"{s * 1e6 / n:7.2f}" if s is not None else "      -"
        verdict = info.get("equal", "(raw JSON only)")
        print(f"{name:42} {version:>8} {_ms(s):>14} {_ms(k):>15} {per}  {verdict}")
    print("\nWhat each gives back (first record):")
    for name, _, info, _ in rows:
        if "map" in info:
            print(
                f"  {name:42} maps: {info['map']}, keys: {info['key']}, booleans: {info['bool']}, "
                f"timestamps: {info['timestamp']}, decimals: {info['decimal']}, "
                f"big ints: {info['big ints']}"
            )
    _print_edges(edges)


def _print_edges(edges: dict[str, dict[str, str]]) -> None:
    if not edges:
        return
    print("\nEdge cases (written by the same writer; what comes back, in plain Python):")
    cases = list(next(iter(edges.values())))
    for case in cases:
        print(f"  {case}")
        for name, res in edges.items():
            print(f"      {name:42} {res.get(case, res.get('(all)', '?'))}")


def _merge(infos: dict[str, dict[str, str]]) -> dict[str, str]:
    """The string-keys description, the keyword-keys key type beside it, and one verdict."""
    first = dict(next(iter(infos.values())))
    kinds = [i.get("key", "?") for i in infos.values()]
    first["key"] = " / ".join(kinds) + " (string / keyword keys)"
    bad = [f"{style}: {i['equal']}" for style, i in infos.items() if i.get("equal") != "ok"]
    first["equal"] = "; ".join(bad) if bad else "ok"
    return first


def _ms(secs: float | None) -> str:
    return "-" if secs is None else f"{secs * 1e3:.1f}"


if __name__ == "__main__":
    main()
