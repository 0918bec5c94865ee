"""The web console in process (through the ASGI app, as the server runs it): sign-in,
sessions, CSRF, and what each page shows and changes. The real browser drives the same
pages in test_console_browser.py."""

from __future__ import annotations

import csv
import functools
import html
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from importapi.activity import ActivityRecorder
from importapi.app import ImportApi, create_app
from importapi.console.owner import PASSWORD_SETTING, hash_password, set_password
from importapi.settings import Settings
from importapi.storage import Storage
from tests.helpers import EXAMPLE_2, InProcessClient

PASSWORD = "a good password"


@dataclass
class Console:
    http: InProcessClient
    storage: Storage
    api: ImportApi
    client_id: int
    key: str

    @property
    def recorder(self) -> ActivityRecorder:
        return next(o for o in self.api.observers if isinstance(o, ActivityRecorder))

    def csrf(self, path: str = "/console/data/connections") -> str:
        return csrf_of(self.http.get(path))

    def sign_in(self, password: str = PASSWORD) -> httpx.Response:
        token = csrf_of(self.http.get("/console/login"))
        return self.http.post("/console/login", data={"csrf": token, "password": password})

    def push(
        self, data: object = EXAMPLE_2, table: str = "orders", key: str | None = None, prefix: str = ""
    ) -> httpx.Response:
        return self.http.post(
            f"{prefix}/v2/client/{self.client_id}/table/{table}/data",
            params={"apikey": key or self.key},
            json=data,
        )


@functools.cache
def hashed(password: str) -> str:
    """One scrypt hash for the whole module: each costs a tenth of a second."""
    return hash_password(password)


def csrf_of(response: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert match, f"no CSRF token on {response.url}: {response.text[:300]}"
    return match.group(1)


def open_console(data_dir: Path, base_url: str = "http://testserver") -> Iterator[Console]:
    api = create_app(Settings(database=str(data_dir), access_log=False))
    storage = api.storage
    client = storage.create_client("shop")
    _, key = storage.catalog.create_key(client.client_id)
    storage.catalog.set_setting(PASSWORD_SETTING, hashed(PASSWORD))
    http = InProcessClient(api)
    http.client.base_url = httpx.URL(base_url)
    try:
        yield Console(http, storage, api, client.client_id, key)
    finally:
        http.close()
        api.close()


@pytest.fixture
def console(data_dir: Path) -> Iterator[Console]:
    yield from open_console(data_dir)


@pytest.fixture
def owner(console: Console) -> Console:
    """The console with the owner signed in."""
    assert console.sign_in().status_code == 303
    return console


PAGES = [
    "/console/",
    "/console/data",
    "/console/data/connections",
    "/console/data/tables",
    "/console/data/tables/1/orders",
    "/console/data/tables/1/orders.csv",
    "/console/data/tables/1/orders.jsonl",
    "/console/data/connections/1/add",
    "/console/activity",
]


# -- signing in ---------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_a_login(console: Console, path: str) -> None:
    console.push()
    answer = console.http.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login?next=")
    assert "joe@schmo.com" not in answer.text


@pytest.mark.parametrize(
    "path", ["/console/data/clients", "/console/data/connections/1/add", "/console/logout"]
)
def test_forms_need_a_login_and_change_nothing(console: Console, path: str) -> None:
    token = console.csrf("/console/login")
    answer = console.http.post(path, data={"csrf": token, "name": "x", "source": "import-api"})
    assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login")
    assert [c.name for c in console.storage.catalog.list_clients()] == ["shop"]
    assert len(console.storage.catalog.list_keys(console.client_id)) == 1


def test_the_right_password_signs_in_and_goes_where_it_was_asked(console: Console) -> None:
    first = console.http.get("/console/activity")
    target = first.headers["location"].split("next=")[1]
    token = csrf_of(console.http.get(first.headers["location"]))
    answer = console.http.post(
        "/console/login", data={"csrf": token, "password": PASSWORD, "next": "/console/activity"}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console/activity"
    assert target == "%2Fconsole%2Factivity"
    assert console.http.get("/console/activity").status_code == 200


@pytest.mark.parametrize(
    "next_url",
    ["https://elsewhere.example/", "//elsewhere.example/console/", "/console/login", "/v2/client/1"],
)
def test_after_signing_in_only_console_pages_are_a_destination(console: Console, next_url: str) -> None:
    token = csrf_of(console.http.get("/console/login"))
    answer = console.http.post("/console/login", data={"csrf": token, "password": PASSWORD, "next": next_url})
    assert answer.headers["location"] == "/console/data"


def test_a_wrong_password_is_refused(console: Console) -> None:
    answer = console.sign_in("not the password")
    assert answer.status_code == 401
    assert "That password is not right." in answer.text
    assert console.http.get("/console/data").status_code == 303


def test_without_an_owner_password_nobody_signs_in(data_dir: Path) -> None:
    api = create_app(Settings(database=str(data_dir), access_log=False))
    storage = api.storage
    storage.create_client("shop")
    http = InProcessClient(api)
    try:
        token = csrf_of(http.get("/console/login"))
        answer = http.post("/console/login", data={"csrf": token, "password": ""})
        assert answer.status_code == 401 and "importapi admin set-password" in answer.text
    finally:
        http.close()
        api.close()


def test_failed_logins_are_slowed_down(console: Console) -> None:
    for _ in range(3):  # three tries are free; then each failure makes the next one wait
        assert console.sign_in("wrong password").status_code == 401
    slowed = console.sign_in(PASSWORD)  # not even looked at: it comes too soon
    assert slowed.status_code == 429
    assert int(slowed.headers["retry-after"]) >= 1
    assert "Too many failed attempts" in slowed.text
    assert console.http.get("/console/data").status_code == 303  # not signed in


def test_the_session_cookie_is_signed_httponly_samesite_and_scoped(console: Console) -> None:
    answer = console.http.get("/console/login")
    cookie = answer.headers["set-cookie"].lower()
    assert cookie.startswith("importapi_console=")
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    console.sign_in()
    jar = console.http.client.cookies
    value = jar["importapi_console"]
    jar.clear()
    tampered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    console.http.client.cookies.set("importapi_console", tampered, path="/console")
    assert console.http.get("/console/data").status_code == 303


def test_over_https_the_session_cookie_is_secure(data_dir: Path) -> None:
    for console in open_console(data_dir, base_url="https://warehouse.example"):
        answer = console.http.get("/console/login")
        assert "secure" in answer.headers["set-cookie"].lower()


def test_signing_out_ends_the_session_and_its_copies(owner: Console) -> None:
    copied = owner.http.client.cookies["importapi_console"]
    answer = owner.http.post("/console/logout", data={"csrf": owner.csrf()})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    assert owner.http.get("/console/data").status_code == 303
    owner.http.client.cookies.clear()
    owner.http.client.cookies.set("importapi_console", copied, path="/console")
    assert owner.http.get("/console/data").status_code == 303


def test_pages_are_not_cached_framed_or_allowed_other_sites_scripts(owner: Console) -> None:
    for path in ("/console/data/tables", "/console/data", "/console/activity"):
        headers = owner.http.get(path).headers
        assert headers["cache-control"] == "no-store"
        assert headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "default-src 'self'" in headers["content-security-policy"]


def test_a_new_password_signs_every_session_out(owner: Console) -> None:
    assert owner.http.get("/console/data").status_code == 200
    set_password(owner.storage, "another good password")
    assert owner.http.get("/console/data").status_code == 303


# -- CSRF -----------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    owner: Console, token: str | None
) -> None:
    key_id = owner.storage.catalog.list_keys(owner.client_id)[0].key_id
    data = {} if token is None else {"csrf": token}
    forms = [
        (f"/console/data/connections/{owner.client_id}/keys/{key_id}/revoke", data),
        ("/console/data/clients", {**data, "name": "forged"}),
        (f"/console/data/connections/{owner.client_id}/add", {**data, "source": "import-api"}),
        ("/console/logout", data),
    ]
    for path, form in forms:
        answer = owner.http.post(path, data=form)
        assert answer.status_code == 403, path
        assert "This form has expired" in answer.text
    assert owner.storage.catalog.list_keys(owner.client_id)[0].revoked_at is None
    assert len(owner.storage.catalog.list_keys(owner.client_id)) == 1
    assert [c.name for c in owner.storage.catalog.list_clients()] == ["shop"]
    assert owner.http.get("/console/data").status_code == 200  # still signed in


def test_the_login_form_needs_its_csrf_token(console: Console) -> None:
    console.http.get("/console/login")
    answer = console.http.post("/console/login", data={"password": PASSWORD})
    assert answer.status_code == 403
    assert console.http.get("/console/data").status_code == 303


# -- Data -> Connections ----------------------------------------------------------


def test_add_a_data_source_shows_a_working_key_once_with_snippets(owner: Console) -> None:
    choose = owner.http.get(f"/console/data/connections/{owner.client_id}/add")
    assert "Data Import API" in choose.text
    shown = owner.http.post(
        f"/console/data/connections/{owner.client_id}/add",
        data={"csrf": csrf_of(choose), "source": "import-api"},
    )
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
    key = re.search(r'id="api-key" class="key">([^<]+)<', shown.text).group(1)  # type: ignore[union-attr]
    assert f"http://testserver/v2/client/{owner.client_id}/table/orders/data?apikey={key}" in shown.text
    assert (
        f"http://testserver/sandbox/v2/client/{owner.client_id}/table/orders/data?apikey={key}" in shown.text
    )
    assert f'API_KEY = "{key}"' in html.unescape(shown.text)
    assert owner.push(key=key).status_code == 201
    listing = owner.http.get("/console/data/connections").text
    assert key not in listing and key.split("_")[1] in listing


def test_an_unknown_data_source_is_refused(owner: Console) -> None:
    answer = owner.http.post(
        f"/console/data/connections/{owner.client_id}/add", data={"csrf": owner.csrf(), "source": "ftp"}
    )
    assert answer.status_code == 400
    assert len(owner.storage.catalog.list_keys(owner.client_id)) == 1


def test_revoking_a_key_refuses_its_next_push(owner: Console) -> None:
    assert owner.push().status_code == 201
    key_id = owner.key.split("_")[1]
    answer = owner.http.post(
        f"/console/data/connections/{owner.client_id}/keys/{key_id}/revoke", data={"csrf": owner.csrf()}
    )
    assert answer.status_code == 303
    assert "Revoked key" in owner.http.get("/console/data/connections").text
    refused = owner.push()
    assert refused.status_code == 401
    assert refused.json()["reasons"] == [f"the API key {key_id} has been revoked"]


def test_a_key_is_revoked_only_through_its_own_client(owner: Console) -> None:
    other = owner.storage.create_client("other")
    key_id = owner.key.split("_")[1]
    answer = owner.http.post(
        f"/console/data/connections/{other.client_id}/keys/{key_id}/revoke", data={"csrf": owner.csrf()}
    )
    assert answer.status_code == 404
    assert owner.storage.catalog.list_keys(owner.client_id)[0].revoked_at is None


def test_create_a_client(owner: Console) -> None:
    answer = owner.http.post("/console/data/clients", data={"csrf": owner.csrf(), "name": "  Warehouse B "})
    assert answer.status_code == 303
    assert [c.name for c in owner.storage.catalog.list_clients()] == ["shop", "Warehouse B"]
    assert "Created client 2 (Warehouse B)" in owner.http.get("/console/data/connections").text
    owner.http.post("/console/data/clients", data={"csrf": owner.csrf(), "name": "   "})
    assert len(owner.storage.catalog.list_clients()) == 2


def test_unknown_clients_and_pages_are_404(owner: Console) -> None:
    assert owner.http.get("/console/data/connections/99/add").status_code == 404
    assert owner.http.get("/console/data/tables/1/nothing").status_code == 404
    assert owner.http.get("/console/data/tables/1/nothing.csv").status_code == 404
    assert owner.http.get("/console/nowhere").status_code == 404


# -- Tables ---------------------------------------------------------------------


def test_tables_show_key_fields_column_types_widening_and_counts(owner: Console) -> None:
    owner.push()
    owner.push({"keys": ["sku"], "sku": "A1", "price": 1}, table="items")
    owner.push({"keys": ["sku"], "sku": "A2", "price": 1.5}, table="items")  # price widens to double
    page = owner.http.get("/console/data/tables").text
    items = page[page.index('id="table-1-items"') : page.index('id="table-1-orders"')]
    orders = page[page.index('id="table-1-orders"') :]
    assert "2 rows" in items and "2 rows" in orders
    assert re.search(
        r'<li class="key"[^>]*>\s*<span class="name">sku</span>\s*<span class="type">text', items
    )
    assert re.search(r'price</span>\s*<span class="type">double</span>\s*<span class="widened"', items)
    assert re.search(r'email</span>\s*<span class="type">text</span>\s*</li>', orders)
    detail = owner.http.get("/console/data/tables/1/items").text
    price = re.search(r"<code>price</code>.*?</tr>", detail, re.DOTALL)
    assert price and "double" in price.group(0) and "UTC" in price.group(0)


def test_a_table_page_is_paged_and_sorted_by_key(owner: Console) -> None:
    for start in range(0, 120, 100):
        owner.push(
            [{"keys": ["n"], "n": n, "even": n % 2 == 0} for n in range(start, min(start + 100, 120))],
            table="numbers",
        )
    first = owner.http.get("/console/data/tables/1/numbers").text
    assert "Page 1 of 3" in first
    assert _first_cells(first)[:3] == ["0", "1", "2"] and len(_first_cells(first)) == 50
    second = owner.http.get("/console/data/tables/1/numbers?page=2").text
    assert _first_cells(second)[0] == "50"
    last_desc = owner.http.get("/console/data/tables/1/numbers?order=desc&page=3").text
    assert _first_cells(last_desc) == [str(n) for n in range(19, -1, -1)]
    assert "Page 3 of 3" in owner.http.get("/console/data/tables/1/numbers?page=99").text
    assert '<td class="bool">true</td>' in first


def _first_cells(html: str) -> list[str]:
    body = html[html.index('<table class="data">') :]
    return re.findall(r"<tr><td class=\"num\">(\d+)</td>", body)


def test_downloads_as_csv_and_json_lines(owner: Console) -> None:
    owner.push(
        [
            {"keys": ["id"], "id": 2, "ok": True, "tags": ["a", "b"], "big": 2**70, "note": None},
            {"keys": ["id"], "id": 1, "ok": False, "tags": {"k": 1}, "big": 5, "note": "x,y"},
        ]
    )
    answer = owner.http.get("/console/data/tables/1/orders.csv")
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"] == 'attachment; filename="client1-orders.csv"'
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert rows == [
        ["id", "ok", "tags", "big", "note"],
        ["1", "false", '{"k":1}', "5", "x,y"],
        ["2", "true", '["a","b"]', str(2**70), ""],
    ]
    lines = owner.http.get("/console/data/tables/1/orders.jsonl").text.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": 1, "ok": False, "tags": {"k": 1}, "big": 5, "note": "x,y"},
        {"id": 2, "ok": True, "tags": ["a", "b"], "big": 2**70, "note": None},
    ]


# -- Activity -------------------------------------------------------------------


def test_activity_lists_pushes_and_refusals_with_reasons(owner: Console) -> None:
    pushed = owner.push()
    sandboxed = owner.push(prefix="/sandbox")
    bad_body = owner.push([{"keys": ["id"], "email": "no id"}])
    bad_key = owner.push(key="imp_000000000000_" + "x" * 32)
    owner.recorder.flush()
    page = owner.http.get("/console/activity").text
    pushes = page[page.index('id="pushes"') : page.index('id="refusals"')]
    refusals = page[page.index('id="refusals"') :]
    assert pushed.headers["x-request-id"] in pushes and sandboxed.headers["x-request-id"] in pushes
    assert "sandbox" in pushes
    assert bad_body.headers["x-request-id"] in refusals and bad_key.headers["x-request-id"] in refusals
    for reason in bad_body.json()["reasons"] + bad_key.json()["reasons"]:
        assert reason.replace("'", "&#39;") in refusals
    refused = {a.request_id: a for a in owner.storage.catalog.recent_activity(10, refused=True)}
    unknown_key = refused[bad_key.headers["x-request-id"]]
    assert (unknown_key.client_id, unknown_key.table, unknown_key.status) == (owner.client_id, "orders", 401)


def test_the_console_leaves_the_api_and_its_envelope_alone(owner: Console) -> None:
    for path in ("/consoles", "/console-x", "/v2/console"):
        answer = owner.http.get(path)
        assert answer.status_code == 404
        assert answer.json()["code"] == 404 and answer.json()["reasons"]
    assert owner.http.get("/").json()["message"] == "OK"
