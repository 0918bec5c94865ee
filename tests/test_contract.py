"""The contract, sections 1, 2 and 6: the wire surface, clients and keys, status codes.

Every test goes through the ASGI app in process (``tests/helpers.py``), on each backend.
Section 3 (upsert) is in ``test_contract_upsert.py``, sections 4 and 5 (sandbox, v1) in
``test_contract_sandbox_v1.py``; the checks all three use are in ``tests/helpers.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from importapi.app import create_app
from importapi.settings import Settings
from importapi.storage import open_storage
from tests.backends import backend_of, break_schema_table, every_row_as_text, refusing_connections
from tests.helpers import (
    EXAMPLE_1,
    Api,
    InProcessClient,
    assert_details_match,
    auth_url,
    envelope,
    error_reasons,
    pushed,
    second_client,
    snapshot,
    user_tables,
    wait_until,
)

# A test marked backends("sqlite") with nothing of SQLite's own to prove is answered before
# the warehouse (or the catalog) is asked anything: routing, where the key is read from, the
# answer's headers and envelope. That code is the same whatever the backend, so one proves it.

# -- 1. Wire surface ---------------------------------------------------------------------


def test_status_answers_200_with_envelope(api: Api) -> None:
    """GET / is 200 while the service can take writes, with the code/message envelope."""
    r = api.http.get("/")
    envelope(r, 200)
    assert r.headers["content-type"] == "application/json"


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_authenticate_live_key_is_exactly_200(api: Api, version: str) -> None:
    """Authenticate answers exactly 200 for a live key of the client (Python and Clojure
    clients accept nothing else)."""
    envelope(api.http.get(auth_url(api, api.key, version=version)), 200)


@pytest.mark.parametrize(
    "query",
    [
        "?apikey=wrong",
        "?apikey=",
        "",
        "?key=RIGHT",
        "?apikey=RIGHTx",
        "?apikey=imp_000000000000_abcdefghijkl",
    ],
    ids=["wrong", "blank", "none", "other-param", "suffix", "well-shaped-unknown"],
)
def test_authenticate_without_a_live_key_is_401(api: Api, query: str) -> None:
    """A wrong, empty, missing or altered key is a 401 with reasons."""
    r = api.http.get(auth_url(api) + query.replace("RIGHT", api.key))
    error_reasons(r, 401)
    assert api.key not in r.text


def test_key_of_another_client_is_401_and_touches_nothing(api: Api) -> None:
    """A key of client 1 used on client 2's paths is a 401, and client 2's data is untouched."""
    cid2, key2 = second_client(api)
    pushed(api.push(EXAMPLE_1, cid=cid2, key=key2))
    before = api.storage.warehouse.tables(cid2)
    rows_before = api.storage.warehouse.query(cid2, "SELECT * FROM orders")

    error_reasons(api.http.get(auth_url(api, api.key, cid=cid2)), 401)
    error_reasons(api.http.get(auth_url(api, api.key, cid=999)), 401)
    error_reasons(api.push(EXAMPLE_1, cid=999), 401)
    for method in ("POST", "PUT"):
        r = api.http.request(
            method,
            api.url(cid=cid2, key=api.key),
            json={"keys": ["id"], "id": 1, "status": "hacked", "new_col": 1},
        )
        error_reasons(r, 401)
        r = api.http.request(method, api.url("intruder", cid=cid2, key=api.key), json=EXAMPLE_1)
        error_reasons(r, 401)

    assert api.storage.warehouse.tables(cid2) == before
    assert api.storage.warehouse.query(cid2, "SELECT * FROM orders") == rows_before
    # and the other way round: client 2's key on client 1 stores nothing for client 1
    error_reasons(api.push(EXAMPLE_1, key=key2), 401)
    assert user_tables(api) == []


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_post_and_put_both_upsert(api: Api, method: str) -> None:
    """POST and PUT on the data path both upsert and answer exactly 201."""
    body = pushed(api.http.request(method, api.url(), json=EXAMPLE_1))
    assert body["inserted"] == 1 and body["replaced"] == 0
    body = pushed(api.http.request(method, api.url(), json={**EXAMPLE_1, "status": "complete"}))
    assert body["inserted"] == 0 and body["replaced"] == 1
    assert [(r["id"], r["status"]) for r in api.rows()] == [(1, "complete")]


def test_v1_routes_answer(api: Api) -> None:
    """The same routes exist under /v1/."""
    envelope(api.http.get(auth_url(api, api.key, version="v1")), 200)
    pushed(api.push({"_id": 7, "status": "ok"}, version="v1"))
    assert api.rows() == [{"_id": 7, "status": "ok"}]


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/v2",
        "/v2/client",
        "/v2/client/1",
        "/v3/client/1/authenticate",
        "/v2/clients/1/authenticate",
        "/v2/client/abc/authenticate",
        "/v2/client/0/authenticate",
        "/v2/client/-1/authenticate",
        "/v2/client/1.0/authenticate",
        "/v2/client/1/authenticat",
        "/v2/client/1/authenticate/x",
        "/v2/client/1/table/orders",
        "/v2/client/1/table/orders/datas",
        "/v2/client/1/table/orders/data/x",
        "/v2/client/abc/table/orders/data",
        "/sandbox/nope",
        "/v2//client/1/authenticate",
        "/sandboxx/v2/client/1/authenticate",
        "/v2/client/1/authenticate/",
        "/v2/client/1/table/orders/data/",
    ],
)
def test_unknown_paths_are_404(api: Api, path: str) -> None:
    """Anything that is not one of the contract's paths is a 404 (a non-numeric or
    non-positive client id included), whatever the method, and stores nothing."""
    for method in ("GET", "POST"):
        r = api.http.request(method, f"{path}?apikey={api.key}", json=EXAMPLE_1)
        error_reasons(r, 404)
    assert user_tables(api) == []


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/", {"GET", "HEAD"}),
        ("DELETE", "/", {"GET", "HEAD"}),
        ("POST", "/v2/client/1/authenticate", {"GET", "HEAD"}),
        ("PUT", "/v1/client/1/authenticate", {"GET", "HEAD"}),
        ("GET", "/v2/client/1/table/orders/data", {"POST", "PUT"}),
        ("DELETE", "/v2/client/1/table/orders/data", {"POST", "PUT"}),
        ("PATCH", "/v1/client/1/table/orders/data", {"POST", "PUT"}),
        ("DELETE", "/sandbox/v2/client/1/table/orders/data", {"POST", "PUT"}),
    ],
)
def test_wrong_method_is_405_with_allow(api: Api, method: str, path: str, allow: set[str]) -> None:
    """A known path with a wrong method is a 405 whose Allow header lists the right ones."""
    r = api.http.request(method, f"{path}?apikey={api.key}", json=EXAMPLE_1)
    error_reasons(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} == allow
    assert user_tables(api) == []


@pytest.mark.backends("sqlite")
def test_bearer_header_carries_the_key(api: Api) -> None:
    """The key may be sent as Authorization: Bearer K instead of ?apikey=K."""
    bearer = {"Authorization": f"Bearer {api.key}"}
    envelope(api.http.get(auth_url(api), headers=bearer), 200)
    pushed(api.http.post(f"/v2/client/{api.client_id}/table/orders/data", json=EXAMPLE_1, headers=bearer))
    assert len(api.rows()) == 1
    error_reasons(api.http.get(auth_url(api), headers={"Authorization": "Bearer nope"}), 401)


@pytest.mark.backends("sqlite")
def test_two_different_keys_are_refused(api: Api) -> None:
    """A request presenting two different keys (query and header) is a 401, even when both are
    live keys of the client, and stores nothing."""
    _, key2 = api.storage.catalog.create_key(api.client_id)
    r = api.http.post(api.url(key=api.key), json=EXAMPLE_1, headers={"Authorization": f"Bearer {key2}"})
    error_reasons(r, 401)
    error_reasons(api.http.get(auth_url(api, api.key), headers={"Authorization": f"Bearer {key2}"}), 401)
    assert user_tables(api) == []


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    ("user_agent", "content_type"),
    [
        ("Needle/0.6.3", "text/plain"),
        ("python-requests/2.31.0", "application/json"),
        ("curl/8.5.0", "application/json"),
        ("Ruby", "application/json"),
        (None, "application/json"),
    ],
)
def test_content_type_text_plain_only_for_needle(api: Api, user_agent: str | None, content_type: str) -> None:
    """Answers are application/json, except to the Node.js client's needle 0.6.3, which gets
    text/plain; the body is the same JSON envelope either way, errors included."""
    headers = {"User-Agent": user_agent} if user_agent else {}
    for r, status in [
        (api.http.get("/", headers=headers), 200),
        (api.http.get(auth_url(api, api.key), headers=headers), 200),
        (api.http.post(api.url(), json=EXAMPLE_1, headers=headers), 201),
        (api.http.get(auth_url(api, "bad"), headers=headers), 401),
        (api.http.post(api.url(), json=[], headers=headers), 400),
    ]:
        envelope(r, status)
        assert r.headers["content-type"].split(";")[0] == content_type


@pytest.mark.backends("sqlite")
def test_connection_close_is_echoed(api: Api) -> None:
    """A request saying Connection: close gets an answer saying Connection: close."""
    for r in [
        api.http.get("/", headers={"Connection": "close"}),
        api.http.get(auth_url(api, api.key), headers={"Connection": "close"}),
        api.http.post(api.url(), json=EXAMPLE_1, headers={"Connection": "close"}),
        api.http.post(api.url(), json=[], headers={"Connection": "close"}),
    ]:
        assert r.headers.get("connection", "").lower() == "close"
    assert "close" not in api.http.get("/").headers.get("connection", "").lower()


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/octet-stream",
        "multipart/form-data; boundary=x",
        None,
    ],
)
def test_body_is_json_whatever_the_content_type(api: Api, content_type: str | None) -> None:
    """The body is read as JSON whatever Content-Type says (curl -d sends a form type)."""
    headers = {"Content-Type": content_type} if content_type else {}
    raw = b'{"keys": ["id"], "id": 1, "status": "pending"}'
    pushed(api.http.post(api.url(), content=raw, headers=headers))
    assert api.rows() == [{"id": 1, "status": "pending"}]


@pytest.mark.backends("sqlite")
def test_ruby_timeout_header_is_harmless(api: Api) -> None:
    """The Ruby client's extra header Timeout: 10 changes nothing."""
    pushed(
        api.http.post(
            api.url(), json=EXAMPLE_1, headers={"Timeout": "10", "Content-Type": "application/json"}
        )
    )
    assert len(api.rows()) == 1


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("bad", ["malformed", "empty", "oversized", "br-encoding", "bad-table", "no-keys"])
def test_bad_key_is_401_even_for_a_bad_request(api: Api, bad: str) -> None:
    """The key is checked before anything about the body or the table name."""
    url = api.url("a-b" if bad == "bad-table" else "orders", key="imp_000000000000_wrongwrongwrong")
    content = {
        "malformed": b"{not json",
        "empty": b"",
        "oversized": b" " * (5 * 1024 * 1024 + 1),
        "no-keys": b'{"id": 1}',
    }.get(bad, b'{"keys": ["id"], "id": 1}')
    headers = {"Content-Encoding": "br"} if bad == "br-encoding" else {}
    error_reasons(api.http.post(url, content=content, headers=headers), 401)
    assert user_tables(api) == []


def test_key_never_appears_in_a_log_line(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the access log on, no log line carries the key, whatever the outcome."""
    app = create_app(Settings(database=str(data_dir), access_log=True))
    storage = app.storage
    client = storage.create_client("logged")
    _, key = storage.catalog.create_key(client.client_id)
    _, revoked = storage.catalog.create_key(client.client_id)
    http = InProcessClient(app)
    caplog.set_level(logging.DEBUG)
    try:
        base = f"/v2/client/{client.client_id}"
        http.get(f"{base}/authenticate?apikey={key}")
        http.post(f"{base}/table/orders/data?apikey={key}", json=EXAMPLE_1)
        http.post(f"{base}/table/orders/data?apikey={key}", json=[])
        http.post(f"{base}/table/orders/data", json=EXAMPLE_1, headers={"Authorization": f"Bearer {key}"})
        http.get(f"/v2/client/{client.client_id + 1}/authenticate?apikey={key}")
        http.get(f"{base}/authenticate?apikey={key}x")
        storage.catalog.revoke_key(revoked.split("_")[1])
        http.get(f"{base}/authenticate?apikey={revoked}")
        http.get(f"{base}/nope?apikey={key}")
    finally:
        http.close()
        app.close()
    # only the server's own loggers: the test's HTTP client (httpx) logs the URLs it sends
    text = "\n".join(
        f"{rec.getMessage()} {rec.exc_text or ''}"
        for rec in caplog.records
        if rec.name.startswith("importapi")
    )
    assert '"status":201' in text.replace(" ", ""), "the access log was not captured"
    secret = key.split("_", 2)[2]
    for k in (key, revoked):
        assert k not in text
    assert secret not in text


# -- 2. Clients and keys -----------------------------------------------------------------


def test_revoked_key_is_401_and_other_keys_still_work(api: Api) -> None:
    """A revoked key is refused at once (even after being used); the client's other key,
    created for rotation, keeps working."""
    info2, key2 = api.storage.catalog.create_key(api.client_id)
    envelope(api.http.get(auth_url(api, api.key)), 200)
    pushed(api.push(EXAMPLE_1))
    info1 = next(k for k in api.storage.catalog.list_keys(api.client_id) if k.key_id != info2.key_id)

    revoked = api.storage.catalog.revoke_key(info1.key_id)
    assert revoked.revoked_at is not None

    error_reasons(api.http.get(auth_url(api, api.key)), 401)
    before = snapshot(api)
    error_reasons(api.push({**EXAMPLE_1, "status": "revoked", "extra": 1}), 401)
    assert snapshot(api) == before
    envelope(api.http.get(auth_url(api, key2)), 200)
    pushed(api.push({**EXAMPLE_1, "status": "rotated"}, key=key2))
    assert api.rows()[0]["status"] == "rotated"


def test_key_revoked_by_another_process_is_refused(api: Api, database: str) -> None:
    """A key revoked through another connection to the warehouse (as `importapi keys revoke`
    does) is refused by the running server."""
    envelope(api.http.get(auth_url(api, api.key)), 200)
    key_id = api.storage.catalog.list_keys(api.client_id)[0].key_id
    with open_storage(database) as other:
        other.catalog.revoke_key(key_id)
    error_reasons(api.http.get(auth_url(api, api.key)), 401)
    error_reasons(api.push(EXAMPLE_1), 401)
    assert user_tables(api) == []


def test_key_created_by_another_process_works(api: Api, database: str) -> None:
    """A key created through another connection (as `importapi keys create` does) works."""
    envelope(api.http.get(auth_url(api, api.key)), 200)
    with open_storage(database) as other:
        _, key2 = other.catalog.create_key(api.client_id)
    envelope(api.http.get(auth_url(api, key2)), 200)


def test_keys_are_url_safe_random_and_distinct(api: Api) -> None:
    """Keys use only [A-Za-z0-9_-] (no legacy client URL-encodes them), carry at least 128
    random bits, and are all different."""
    keys = [api.key] + [api.storage.catalog.create_key(api.client_id)[1] for _ in range(30)]
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", key), key
    # after the public key id comes the secret: at least 22 base64url characters (132 bits),
    # and no two keys share even its first 8 characters (it is random, not a counter)
    secrets_ = [k.split("_", 2)[2] for k in keys]
    assert all(len(s) >= 22 for s in secrets_)
    assert len({s[:8] for s in secrets_}) == len(secrets_)


def test_several_keys_per_client_all_work(api: Api) -> None:
    """One client may have several live keys at once; each authenticates and pushes."""
    _, key2 = api.storage.catalog.create_key(api.client_id)
    _, key3 = api.storage.catalog.create_key(api.client_id)
    for n, key in enumerate([api.key, key2, key3], start=1):
        envelope(api.http.get(auth_url(api, key)), 200)
        pushed(api.push({"keys": ["id"], "id": n}, key=key))
    assert [r["id"] for r in api.rows(order="id")] == [1, 2, 3]
    assert len(api.storage.catalog.list_keys(api.client_id)) == 3


def test_keys_are_stored_only_as_hashes(api: Api, data_dir: Path, database: str) -> None:
    """No file of the warehouse (PostgreSQL: no row of any of its tables) holds a key (or
    its secret part) in plain text, after keys were created, used and revoked."""
    _, key2 = api.storage.catalog.create_key(api.client_id)
    envelope(api.http.get(auth_url(api, api.key)), 200)
    pushed(api.push(EXAMPLE_1))
    pushed(api.push(EXAMPLE_1, key=key2))
    api.storage.catalog.revoke_key(key2.split("_")[1])
    if backend_of(api.storage) == "sqlite":
        files = [p for p in data_dir.rglob("*") if p.is_file()]
        blob = b"".join(p.read_bytes() for p in files)
        assert any(p.name.startswith("catalog") for p in files)
    else:
        blob = every_row_as_text(database)
    # the scan does see the catalog: the key ids, which are not secret, are there
    assert key2.split("_")[1].encode() in blob
    for key in (api.key, key2):
        assert key.encode() not in blob
        assert key.split("_", 2)[2].encode() not in blob


def test_keys_cannot_read_data_back(api: Api) -> None:
    """Keys are write-only: the data path does not answer GET, and no answer carries the data."""
    pushed(api.push({"keys": ["id"], "id": 1, "secret": "do-not-echo"}))
    bearer = {"Authorization": f"Bearer {api.key}"}
    for r in [
        api.http.get(api.url()),
        api.http.get(api.url(), headers=bearer),
        api.http.get(auth_url(api, api.key)),
        api.push({"keys": ["id"], "id": 1}),
    ]:
        assert "do-not-echo" not in r.text
    error_reasons(api.http.get(api.url()), 405)


def test_key_records_created_and_last_used_times(api: Api) -> None:
    """A key has a created time at once, and a last-used time after a production push."""
    (info,) = api.storage.catalog.list_keys(api.client_id)
    assert info.created_at and info.last_used_at is None and info.revoked_at is None
    pushed(api.push(EXAMPLE_1))
    wait_until(lambda: api.storage.catalog.list_keys(api.client_id)[0].last_used_at is not None)


# -- 6. Status codes and the error envelope ------------------------------------------------

_ERRORS: dict[int, tuple[str, Callable[[Api], httpx.Response]]] = {
    400: ("Bad Request", lambda a: a.push([])),
    401: ("Unauthorized", lambda a: a.http.get(auth_url(a, "wrong"))),
    404: ("Not Found", lambda a: a.http.get("/v2/client/1/nothing-here")),
    405: ("Method Not Allowed", lambda a: a.http.request("DELETE", a.url())),
    413: ("Payload Too Large", lambda a: a.http.post(a.url(), content=b" " * (5 * 1024 * 1024 + 1))),
    415: (
        "Unsupported Media Type",
        lambda a: a.http.post(a.url(), content=b"{}", headers={"Content-Encoding": "br"}),
    ),
}


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("status", sorted(_ERRORS))
def test_error_envelope_is_locked(api: Api, status: int) -> None:
    """Every error answer is exactly {"code", "message", "reasons", "details"} in that order,
    labelled application/json, with the status as code, a non-empty list of reasons and the
    same problems as details."""
    message, request = _ERRORS[status]
    r = request(api)
    body = r.json()
    assert r.status_code == status
    assert list(body) == ["code", "message", "reasons", "details"]
    assert_details_match(body)
    assert body["code"] == status and body["message"] == message
    assert isinstance(body["reasons"], list) and body["reasons"]
    assert all(isinstance(x, str) and x.strip() for x in body["reasons"])
    assert r.headers["content-type"] == "application/json"


@pytest.mark.backends("sqlite")
def test_status_is_503_when_the_storage_cannot_be_reached(api: Api, data_dir: Path) -> None:
    """GET / answers 503 (with the error envelope) while the data folder is gone, as when its
    volume is unmounted, and 200 again once it is back."""
    envelope(api.http.get("/"), 200)
    moved = data_dir.with_name("unmounted")
    data_dir.rename(moved)
    try:
        r = api.http.get("/")
        assert list(r.json()) == ["code", "message", "reasons", "details"]
        error_reasons(r, 503)
    finally:
        moved.rename(data_dir)
    envelope(api.http.get("/"), 200)


@pytest.mark.backends("postgresql")
def test_status_is_503_while_the_database_refuses_connections(api: Api, database: str) -> None:
    """GET / answers 503 while the database server takes no connections (here: it refuses
    them for this database and has dropped the open ones), and 200 again once it does."""
    envelope(api.http.get("/"), 200)
    with refusing_connections(database):
        r = api.http.get("/")
        assert list(r.json()) == ["code", "message", "reasons", "details"]
        error_reasons(r, 503)
    wait_until(lambda: api.http.get("/").status_code == 200, timeout=30)


@pytest.mark.backends("postgresql")
def test_database_error_is_500_with_request_id_and_no_internals(api: Api, database: str) -> None:
    """A storage failure (here a client's schema table broken behind the server's back) is
    a 500 with the envelope and a request id, nothing of the driver's message; keys still work."""
    pushed(api.push(EXAMPLE_1))
    break_schema_table(database, api.client_id)
    r = api.http.post(api.url(), json=EXAMPLE_1)
    reasons = error_reasons(r, 500)
    assert r.json()["request_id"] in " ".join(reasons)
    assert "Traceback" not in r.text and "psycopg" not in r.text and "column" not in r.text
    envelope(api.http.get(auth_url(api, api.key)), 200)


@pytest.mark.backends("sqlite")
def test_server_error_is_500_with_request_id_and_no_traceback(api: Api, data_dir: Path) -> None:
    """A storage failure (here a corrupt client file) is a 500 with the envelope and a
    request id matching the X-Request-Id header, and no stack trace; nothing else breaks."""
    (data_dir / f"client_{api.client_id}.sqlite3").write_bytes(b"this is not a database" * 100)
    r = api.http.post(api.url(), json=EXAMPLE_1)
    reasons = error_reasons(r, 500)
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["request_id"] in " ".join(reasons)
    assert "Traceback" not in r.text and "sqlite" not in r.text.lower()
    envelope(api.http.get(auth_url(api, api.key)), 200)
