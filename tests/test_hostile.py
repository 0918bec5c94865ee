"""The hostile input catalogue: each input with the answer it must get.

Every refusal must carry the envelope and change nothing (the warehouse is compared before
and after); what is accepted must be stored exactly. What reaches the warehouse (values,
names) runs on every backend; refusals made while reading and validating the body, before
the warehouse is touched, on SQLite alone, since one backend proves them. The gzip bombs and
the raw-path tricks also go to the real server process, whose memory is read from /proc
while it refuses a body that would inflate to gigabytes.
"""

from __future__ import annotations

import gzip
import json
import socket
import zlib
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.soak import rss_kib
from importapi.body import decode_json, gunzip
from importapi.errors import BadRequest
from importapi.rjmetrics.validate import validate
from importapi.settings import Limits
from tests.helpers import Api, Server

V2 = {"keys": ["id"], "id": 1}
MIB = 1 << 20
LIMIT = Limits().max_body_bytes


def answer(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body)[:2] == ["code", "message"] and body["code"] == status, body
    if status >= 400:
        assert body["reasons"] and all(isinstance(x, str) and x for x in body["reasons"]), body
    return body


def state(api: Api) -> dict[str, Any]:
    """Every table of the client: its schema and its rows, in key order."""
    out = {}
    for info in api.storage.warehouse.tables(api.client_id):
        order = ", ".join(f'"{k}"' for k in info.schema.key_fields)
        rows = api.storage.warehouse.query(
            api.client_id, f'SELECT * FROM "{info.schema.name}" ORDER BY {order}'
        )
        out[info.schema.name] = (info.as_dict()["columns"], info.schema.key_fields, rows)
    return out


def post_raw(api: Api, body: bytes, table: str = "orders", **headers: str) -> httpx.Response:
    return api.http.post(api.url(table), content=body, headers=headers)


@pytest.fixture
def seeded(api: Api) -> Api:
    """A client with a table and a row, so 'changes nothing' has something to change."""
    answer(api.push({"keys": ["id"], "id": 1, "name": "first", "n": 1}), 201)
    return api


# -- bodies that must be refused, leaving everything as it was ---------------------------

REFUSED: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("malformed JSON", b'{"keys": ["id"], "id": 1,,}', {}, 400, "not valid JSON"),
    ("truncated JSON", json.dumps([V2, V2]).encode()[:-7], {}, 400, "not valid JSON"),
    ("a bare scalar", b"42", {}, 400, "must be an object"),
    ("invalid UTF-8", b'{"keys": ["id"], "id": 1, "name": "caf\xe9"}', {}, 400, "not valid UTF-8"),
    ("UTF-8 encoded surrogate", b'{"keys": ["id"], "id": 1, "s": "\xed\xa0\x80"}', {}, 400, "UTF-8"),
    (
        "lone high surrogate escape",
        b'{"keys": ["id"], "id": 1, "s": "\\ud800"}',
        {},
        400,
        "half a surrogate pair",
    ),
    (
        "lone low surrogate escape",
        b'{"keys": ["id"], "id": 1, "s": "\\udc00x"}',
        {},
        400,
        "half a surrogate pair",
    ),
    (
        "reversed surrogate pair",
        b'{"keys": ["id"], "id": 1, "s": "\\udc00\\ud800"}',
        {},
        400,
        "half a surrogate pair",
    ),
    ("NaN", b'{"keys": ["id"], "id": 1, "x": NaN}', {}, 400, "not valid JSON"),
    ("Infinity", b'{"keys": ["id"], "id": 1, "x": Infinity}', {}, 400, "not valid JSON"),
    ("-Infinity", b'{"keys": ["id"], "id": 1, "x": -Infinity}', {}, 400, "not valid JSON"),
    ("a number beyond a double", b'{"keys": ["id"], "id": 1, "x": 1e999}', {}, 400, "not valid JSON"),
    ("a repeated field", b'{"keys": ["id"], "id": 1, "id": 2}', {}, 400, "more than once"),
    ("a repeated field, spaced", b'{"keys" : ["id"], "id" : 1, "n" : 1, "n" : 2}', {}, 400, "more than once"),
    (
        "a repeated field, escaped",
        b'{"keys": ["id"], "id": 1, "n": 1, "\\u006e": 2}',
        {},
        400,
        "more than once",
    ),
    (
        "a repeated field, nested",
        b'{"keys": ["id"], "id": 1, "o": {"a": 1, "a": 2}}',
        {},
        400,
        "more than once",
    ),
    (
        "a repeated field in the second point",
        b'[{"keys": ["id"], "id": 1, "t": "10:00"}, {"keys": ["id"], "id": 2, "t": "11:00", "t": "12:00"}]',
        {},
        400,
        "more than once",
    ),
    (
        "deep nesting beyond the limit",
        json.dumps({**V2, "x": json.loads("[" * 40 + "]" * 40)}).encode(),
        {},
        400,
        "nested deeper",
    ),
    (
        "deep nesting beyond any reader",
        b'{"keys": ["id"], "id": 1, "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        {},
        400,
        "nested too deeply",
    ),
    (
        "10,000 fields",
        json.dumps({**V2, **{f"f{i}": i for i in range(10_000)}}).encode(),
        {},
        400,
        "at most 1000",
    ),
    ("an empty body", b"", {}, 400, "empty"),
    ("a body of spaces", b"  \n\t ", {}, 400, "empty"),
    ("an empty array", b"[]", {}, 400, "empty array"),
    (
        "a form-encoded body",
        b"keys=id&id=1",
        {"content-type": "application/x-www-form-urlencoded"},
        400,
        "not valid JSON",
    ),
    ("a body over the limit", b'{"keys": ["id"], "id": 1, "s": "' + b"x" * LIMIT + b'"}', {}, 413, "larger"),
    ("a Content-Length over the limit", b"{}", {"content-length": str(LIMIT + 1)}, 413, "larger"),
    ("a Content-Length that is not a number", b"{}", {"content-length": "12abc"}, 400, "Content-Length"),
    (
        "an unknown Content-Encoding",
        gzip.compress(json.dumps(V2).encode()),
        {"content-encoding": "br"},
        415,
        "not supported",
    ),
    ("gzip that is not gzip", b"plain text", {"content-encoding": "gzip"}, 400, "not valid gzip"),
    (
        "truncated gzip",
        gzip.compress(json.dumps(V2).encode())[:-12],
        {"content-encoding": "gzip"},
        400,
        "truncated",
    ),
    (
        "gzip followed by garbage",
        gzip.compress(json.dumps(V2).encode()) + b"junk",
        {"content-encoding": "gzip"},
        400,
        "not valid gzip",
    ),
    ("a small gzip bomb", gzip.compress(b" " * (LIMIT + 1)), {"content-encoding": "gzip"}, 413, "larger"),
    (
        "SQL in a key field name",
        json.dumps({"keys": ['id"); DROP TABLE orders; --'], "id": 1}).encode(),
        {},
        400,
        "missing",
    ),
    ("a NUL in a field name", json.dumps({**V2, "a\x00b": 1}).encode(), {}, 400, "NUL"),
    ("a field name over 63 bytes", json.dumps({**V2, "é" * 32: 1}).encode(), {}, 400, "longer than 63"),
    (
        "field names equal ignoring case",
        json.dumps({**V2, "Name": 1, "NAME": 2}).encode(),
        {},
        400,
        "differ only in case",
    ),
]


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    ("body", "headers", "status", "says"), [pytest.param(*case[1:], id=case[0]) for case in REFUSED]
)
def test_hostile_bodies_are_refused_and_change_nothing(
    seeded: Api, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    before = state(seeded)
    reasons = answer(post_raw(seeded, body, **headers), status)["reasons"]
    assert any(says in r for r in reasons), reasons
    assert state(seeded) == before


# -- bodies that look hostile but are fine, stored exactly -------------------------------


def test_integers_beyond_64_bits_keep_every_digit(api: Api) -> None:
    big = 2**64 + 1
    answer(post_raw(api, b'{"keys": ["id"], "id": 1, "big": %d, "neg": -%d}' % (big, big * 10**30)), 201)
    rows = api.storage.warehouse.query(api.client_id, 'SELECT big, neg FROM "orders"')[1]
    assert [str(v) for v in rows[0]] == [str(big), f"-{big * 10**30}"]


def test_a_4_mib_string_is_stored_whole(api: Api) -> None:
    text = "é" + "x" * (4 * MIB - 4) + "ü"
    answer(api.push({"keys": ["id"], "id": 1, "text": text}), 201)
    assert api.storage.warehouse.query(api.client_id, 'SELECT text FROM "orders"')[1] == [(text,)]


@pytest.mark.backends("sqlite")
def test_the_content_type_does_not_matter(api: Api) -> None:
    for i, ctype in enumerate(["text/csv", "application/xml", "multipart/form-data; boundary=x", "nonsense"]):
        answer(post_raw(api, json.dumps({"keys": ["id"], "id": i}).encode(), **{"content-type": ctype}), 201)
    assert len(api.storage.warehouse.query(api.client_id, 'SELECT id FROM "orders"')[1]) == 4


@pytest.mark.backends("sqlite")
def test_escaped_characters_and_pretty_printing_are_not_mistaken_for_repeats(api: Api) -> None:
    point = {
        "keys": ["id"],
        "id": 1,
        "q": 'a": "b',
        "t": "12:30:00",
        "url": "http://x/y?a=1:2",
        "nested": {"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]},
        "\u00e9t\u00e9": "\U0001f600",
    }
    for body in (
        json.dumps(point),
        json.dumps(point, indent=2),
        json.dumps(point, separators=(" , ", " : ")),
        json.dumps(point, ensure_ascii=False),
    ):
        answer(post_raw(api, body.encode()), 201)
    row = api.storage.warehouse.query(api.client_id, 'SELECT q, t, "été" FROM "orders"')[1]
    assert row == [('a": "b', "12:30:00", "\U0001f600")]


@pytest.mark.backends("sqlite")
def test_gzip_with_several_members_is_read_whole(api: Api) -> None:
    body = gzip.compress(b'[{"keys": ["id"], "id": 1},') + gzip.compress(b'{"keys": ["id"], "id": 2}]')
    assert answer(post_raw(api, body, **{"content-encoding": "gzip"}), 201)["inserted"] == 2


@pytest.mark.parametrize(
    "name",
    [
        'x"; DROP TABLE orders; --',
        "a') VALUES (1); --",
        "select",
        "from",
        "rowid",
        "oid",
        "_rowid_",
        "*",
        'quote"in"middle',
        "back`tick",
        "[bracket]",
        "semi;colon",
        "new\nline",
        "sp ace",
        "Ünïcödé",
        "🙂",
        "-- comment",
        "/* c */",
    ],
)
def test_field_names_built_to_look_like_sql_are_just_names(api: Api, name: str) -> None:
    answer(api.push({"keys": ["id"], "id": 1, name: "v"}), 201)
    answer(api.push({"keys": ["id"], "id": 2, name: "w"}), 201)
    columns, rows = api.storage.warehouse.query(api.client_id, 'SELECT * FROM "orders" ORDER BY "id"')
    assert name in columns
    assert [r[columns.index(name)] for r in rows] == ["v", "w"]


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("name", ["ctid", "xmin", "tableoid"])
def test_field_names_a_backend_keeps_for_itself_are_refused_whatever_the_backend(
    seeded: Api, name: str
) -> None:
    before = state(seeded)
    reasons = answer(seeded.push({"keys": ["id"], "id": 1, name: "v"}), 400)["reasons"]
    assert any("reserved" in r for r in reasons), reasons
    assert state(seeded) == before


@pytest.mark.parametrize(
    "table", ["select", "drop", "table", "master_sqlite_", "order_by", "x" * 63, "_", "0"]
)
def test_table_names_that_are_sql_words_are_just_names(api: Api, table: str) -> None:
    answer(api.push({"keys": ["id"], "id": 1}, table=table), 201)
    assert table in [t.schema.name for t in api.storage.warehouse.tables(api.client_id)]


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "table",
    [
        "orders;drop",
        "orders--",
        "ord%20ers",
        "örders",
        "ｏｒｄｅｒｓ",
        "orders%00",
        "x" * 64,
        "sqlite_master",
        "_importapi_tables",
        "pg_class",
        "a.b",
        "%2e%2e",
    ],
)
def test_table_names_outside_the_alphabet_are_refused(seeded: Api, table: str) -> None:
    before = state(seeded)
    answer(seeded.http.post(seeded.url(table), json=V2), 400)
    assert state(seeded) == before


# -- keys in the query string and headers ------------------------------------------------


@pytest.mark.backends("sqlite")
def test_key_tricks_in_query_and_header(seeded: Api) -> None:
    path = f"/v2/client/{seeded.client_id}/table/orders/data"
    key = seeded.key
    other = seeded.storage.catalog.create_key(seeded.client_id)[1]
    before = state(seeded)
    refused = [
        (f"{path}?apikey={key}&apikey={other}", {}),  # two different keys
        (f"{path}?apikey={key}", {"authorization": f"Bearer {other}"}),  # query and header differ
        (f"{path}?apikey=", {}),  # empty
        (f"{path}?apikey={key}&apikey=", {}),  # a key and an empty one
        (f"{path}?APIKEY={key}", {}),  # the name is case-sensitive
        (f"{path}?api_key={key}", {}),
        (f"{path}?apikey[]={key}", {}),
        (f"{path}?apikey={key[:-1]}", {}),  # one character short
        (f"{path}?apikey={key}%00", {}),
        (f"{path}?apikey={key}x", {}),
        (f"{path}?apikey={key.upper()}", {}),
        (path, {"authorization": f"Basic {key}"}),
        (path, {"authorization": "Bearer"}),
        (path, {"x-api-key": key}),
    ]
    for url, headers in refused:
        answer(seeded.http.post(url, json={"keys": ["id"], "id": 9}, headers=headers), 401)
    assert state(seeded) == before
    accepted = [
        (f"{path}?apikey={key}&apikey={key}", {}),  # the same key twice is one key
        (f"{path}?apikey={key}", {"authorization": f"Bearer {key}"}),
        (f"{path}?other=1&apikey={key}&x=%2F", {}),
        (path, {"authorization": f"bearer   {key}"}),
    ]
    for url, headers in accepted:
        answer(seeded.http.post(url, json={"keys": ["id"], "id": 9}, headers=headers), 201)


# -- the real server: raw request lines, and a gzip bomb ---------------------------------


def raw_request(server: Server, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client normalizes the path) and read the whole answer."""
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.e2e
def test_path_tricks_are_answered_not_followed(server: Server) -> None:
    key = server.key
    cases = {
        b"/v2/client/1/table/../table/orders/data": 404,
        b"/v2/client/1/table/orders/../data": 404,
        b"/v2/client/2/../1/table/orders/data": 404,
        b"/v2/client/1/table/a%2Fb/data": 404,
        b"/v2/client/1/table/orders%2Fdata/data": 404,
        b"/v2/client/1/table/%2e%2e/data": 400,
        b"/v2/client/1/table/ord%C3%A9rs/data": 400,
        b"/v2/client/1/table/orders%00/data": 400,
        b"/v2/client/01/table/orders/data": 201,  # the same client, written with a leading zero
        b"/v2/client/-1/table/orders/data": 404,
        b"/v2/client/1%2F/table/orders/data": 404,
        b"//v2/client/1/table/orders/data": 404,
        b"/v2/client/1/table/orders/data/": 404,
    }
    body = json.dumps({"keys": ["id"], "id": 1}).encode()
    for path, expected in cases.items():
        request = (
            b"POST " + path + b"?apikey=" + key.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        status, answer_body = raw_request(server, request)
        assert status == expected, (path, answer_body)
        assert json.loads(answer_body)["code"] == expected
    tables = httpx.get(f"{server.base}/v2/client/1/authenticate?apikey={key}")
    assert tables.status_code == 200


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _crc32_shift(crc: int, length: int) -> int:
    """The CRC-32 state after ``length`` zero bytes are appended (zlib's crc32_combine)."""
    odd = [0xEDB88320] + [1 << n for n in range(31)]
    even = [_gf2_times(odd, odd[n]) for n in range(32)]
    odd = [_gf2_times(even, even[n]) for n in range(32)]
    while length:
        even = [_gf2_times(odd, odd[n]) for n in range(32)]
        if length & 1:
            crc = _gf2_times(even, crc)
        length >>= 1
        if not length:
            break
        odd = [_gf2_times(even, even[n]) for n in range(32)]
        if length & 1:
            crc = _gf2_times(odd, crc)
        length >>= 1
    return crc


def _crc32_repeated(piece: bytes, times: int) -> int:
    """CRC-32 of ``piece * times`` without building it: doubling with crc32_combine."""
    result, result_len = 0, 0
    power, power_len = zlib.crc32(piece), len(piece)
    while times:
        if times & 1:
            result = _crc32_shift(result, power_len) ^ power
            result_len += power_len
        times >>= 1
        if times:
            power = _crc32_shift(power, power_len) ^ power
            power_len *= 2
    return result


def gzip_bomb(mib: int) -> bytes:
    """A valid gzip file of ``[`` and ``mib`` MiB of spaces and ``]``, at about 1:1000."""
    chunk = b" " * MIB
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(b"[" + chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeat = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH) == repeat  # a full flush resets it
    last = deflate.compress(b"]") + deflate.flush()
    crc = _crc32_shift(zlib.crc32(b"[" + chunk), MIB * (mib - 1)) ^ _crc32_repeated(chunk, mib - 1)
    crc = zlib.crc32(b"]", crc)
    size = (MIB * mib + 2) % 2**32
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + first + repeat * (mib - 1) + last + crc.to_bytes(4, "little") + size.to_bytes(4, "little")


def test_the_bomb_maker_makes_valid_gzip() -> None:
    small = gzip_bomb(3)
    assert gzip.decompress(small) == b"[" + b" " * (3 * MIB) + b"]"
    assert _crc32_repeated(b"abc", 5) == zlib.crc32(b"abc" * 5)


def test_gunzip_stops_at_the_limit_without_inflating_the_rest() -> None:
    bomb = gzip_bomb(64)  # 64 MiB inflated, 64 KiB sent
    assert len(bomb) < 100_000
    with pytest.raises(Exception) as info:
        gunzip(bomb, MIB)
    assert getattr(info.value, "status", None) == 413
    assert gunzip(bomb, 65 * MIB).startswith(b"[ ")


@pytest.mark.e2e
def test_a_gzip_bomb_of_gigabytes_is_refused_and_memory_stays_small(server: Server) -> None:
    """4.8 GiB of JSON whitespace in a 5 MB body (just under the 5 MiB limit) is a 413, and
    the server's memory does not grow by anything like that; a bomb over the byte limit is
    refused on its Content-Length, before it is read."""
    pid = server.process.pid
    url = f"{server.base}/v2/client/1/table/orders/data?apikey={server.key}"
    bomb = gzip_bomb(4800)
    assert len(bomb) < LIMIT
    with httpx.Client(timeout=120) as http:
        answer(http.post(url, json=V2), 201)  # warm: the client's writer and tables exist
        before = rss_kib(pid)
        assert before is not None
        answer(http.post(url, content=bomb, headers={"content-encoding": "gzip"}), 413)
        after = rss_kib(pid)
        assert after is not None and after - before < 64 * 1024, (before, after)  # KiB: under 64 MiB
        bigger = bomb[:-8] + bomb[10:-8]  # ~10 MB on the wire: refused on its length alone
        answer(http.post(url, content=bigger, headers={"content-encoding": "gzip"}), 413)
        answer(http.get(f"{server.base}/"), 200)


# -- properties: the validator and the whole request path never fail unexpectedly -------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=20,
)
POINTS = st.dictionaries(st.sampled_from(["keys", "id", "_id", "a", "B", "b", "c"]), JSON_VALUES, max_size=6)
BODIES = POINTS | st.lists(POINTS, max_size=4) | JSON_VALUES


@settings(max_examples=300, deadline=None)
@given(body=BODIES, version=st.sampled_from([1, 2]))
def test_the_validator_answers_a_batch_or_a_bad_request_for_any_json(body: Any, version: int) -> None:
    try:
        batch = validate(body, "t", version=version)
    except BadRequest as exc:
        assert exc.reasons and all(isinstance(r, str) and r for r in exc.reasons)
        return
    assert 1 <= len(batch.points) <= Limits().max_points
    for point in batch.points:
        assert all(k in point and point[k] is not None for k in batch.key_fields)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=64) | st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_the_decoder_answers_a_value_or_a_bad_request_for_any_bytes(raw: bytes) -> None:
    try:
        decode_json(raw)
    except BadRequest:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=BODIES.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=40))
def test_no_body_makes_the_app_answer_500(api: Api, body: bytes) -> None:
    r = post_raw(api, body, table="fuzzed")
    assert r.status_code in (201, 400, 413), r.text
    answer(r, r.status_code)
