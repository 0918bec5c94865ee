"""The console's Stitch Import API parts: "Add a Data Source" -> "Stitch Import API" (a key
shown once, target-stitch's config.json, the pipe, a stitchclient snippet and a curl batch),
Activity by API with stale counts and refusal codes, and Tables with the timestamp and date
kinds, Stitch's system columns and table versions.

In process first (fixtures and helpers of test_console.py, by name); then against the real
server: headless Chromium adds a Stitch data source, copies its config.json with the Copy
button and pushes a batch with it, and the real target-stitch and stitchclient run what the
page shows (skipped without them, as in test_stitch_clients.py).
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from importapi.storage import open_storage
from tests import stitch_streams as singer
from tests import test_console, test_stitch_clients
from tests.helpers import Server, console_server, sqlite_url, wait_until
from tests.test_console import Console, csrf_of

try:  # it skips itself at import without Chromium; the in-process tests here run regardless
    from tests import test_console_browser as chromium
except pytest.skip.Exception:
    chromium = None  # type: ignore[assignment]

if chromium is not None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    browser = chromium.browser

# Other modules' fixtures, requested here by name.
console, owner = test_console.console, test_console.owner
target_stitch = test_stitch_clients.target_stitch
stitchclient_python = test_stitch_clients.stitchclient_python

SEQ = 1_796_113_870_373_400_000  # about where target-stitch's sequences are: beyond 2**53
SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["null", "string"]},
        "created_at": {"type": ["null", "string"], "format": "date-time"},
        "birthday": {"type": ["null", "string"], "format": "date"},
    },
}
ROW = {"id": 1, "email": "joe@schmo.com", "created_at": "2012-08-01T14:22:32Z", "birthday": "1980-02-29"}
SYSTEM_COLUMNS = [
    "_sdc_received_at",
    "_sdc_batched_at",
    "_sdc_sequence",
    "_sdc_table_version",
    "_sdc_extracted_at",
]
PIPE = "tap-xyz --config tap.json --catalog catalog.json | target-stitch --config config.json > state.json"


def batch(
    table: str = "orders", *messages: dict[str, Any], keys: list[str] | None = None, **extra: Any
) -> Any:
    """A batch body as target-stitch sends it."""
    messages = messages or ({"action": "upsert", "sequence": SEQ, "data": ROW},)
    key_names = ["id"] if keys is None else keys
    return {
        "table_name": table,
        "schema": SCHEMA,
        "key_names": key_names,
        "messages": list(messages),
        **extra,
    }


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def snippet(page: str, element_id: str) -> str:
    """The text of a copyable block, as the Copy button copies it."""
    match = re.search(rf'<pre id="{element_id}"><code>(.*?)</code></pre>', page, re.DOTALL)
    assert match, f"no #{element_id} on the page"
    return html.unescape(match.group(1))


def text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def row_cells(page: str, section: str, request_id: str) -> dict[str, str]:
    """The cells of one Activity row, by their labels, as text."""
    part = page[page.index(f'id="{section}"') :]
    match = re.search(rf'<tr data-request-id="{request_id}">(.*?)</tr>', part, re.DOTALL)
    assert match, f"request {request_id} is not among the {section}"
    return {
        label: text(cell)
        for label, cell in re.findall(r'<td data-label="([^"]+)"[^>]*>(.*?)</td>', match.group(1), re.DOTALL)
    }


def article(page: str, table: str, client_id: int = 1) -> str:
    """One table's entry on the Tables page."""
    match = re.search(
        rf'<article class="tableinfo" id="table-{client_id}-{table}">(.*?)</article>', page, re.DOTALL
    )
    assert match, f"no table {table} on the Tables page"
    return match.group(1)


def add_stitch_source(http: Any, client_id: int = 1) -> str:
    """Add a Stitch data source for the client; the page that shows its new key."""
    choose = http.get(f"/console/data/connections/{client_id}/add")
    assert choose.status_code == 200
    shown = http.post(
        f"/console/data/connections/{client_id}/add", data={"csrf": csrf_of(choose), "source": "stitch"}
    )
    assert shown.status_code == 200, shown.text
    return str(shown.text)


def shown_key(page: str) -> str:
    match = re.search(r'id="api-key" class="key">([^<]+)<', page)
    assert match
    return match.group(1)


# -- Add a Data Source -> Stitch Import API ----------------------------------------------------


def test_the_stitch_source_shows_its_key_once_with_a_config_target_stitch_takes(owner: Console) -> None:
    choose = owner.http.get(f"/console/data/connections/{owner.client_id}/add").text
    assert "Select Stitch Import API" in choose and "Select Data Import API" in choose
    page = add_stitch_source(owner.http, owner.client_id)
    key = shown_key(page)
    assert "Stitch Import API is ready" in page
    config = json.loads(snippet(page, "snippet-config"))
    batch_url = "http://testserver/v2/import/batch"
    assert config == {
        "token": key,
        "client_id": owner.client_id,
        "small_batch_url": batch_url,
        "big_batch_url": batch_url,
        "batch_size_preferences": {},
        "disable_collection": True,
    }
    sandbox = json.loads(snippet(page, "snippet-config-sandbox"))
    sandbox_url = "http://testserver/sandbox/v2/import/batch"
    assert sandbox == {**config, "small_batch_url": sandbox_url, "big_batch_url": sandbox_url}
    assert snippet(page, "snippet-pipe") == PIPE

    # The key works with the config's URL: target-stitch's request, in process.
    answer = owner.http.post(
        urlsplit(config["small_batch_url"]).path, json=batch(), headers=bearer(config["token"])
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["message"] == "Batch Accepted!"
    # ... and the sandbox's stores nothing.
    tried = owner.http.post(
        urlsplit(sandbox["small_batch_url"]).path, json=batch("tried"), headers=bearer(key)
    )
    assert tried.status_code == 201 and tried.json()["sandbox"] is True
    assert [t.schema.name for t in owner.storage.warehouse.tables(owner.client_id)] == ["orders"]

    # Shown once: the listing names the key by its id only; a second visit makes a new one.
    listing = owner.http.get("/console/data/connections").text
    assert key not in listing and key.split("_")[1] in listing
    assert key not in owner.http.get(f"/console/data/connections/{owner.client_id}/add").text
    assert len(owner.storage.catalog.list_keys(owner.client_id)) == 2


def test_the_curl_and_stitchclient_snippets_use_the_key_and_this_server(owner: Console) -> None:
    page = add_stitch_source(owner.http, owner.client_id)
    key = shown_key(page)
    curl = snippet(page, "snippet-curl")
    assert curl.startswith('curl -X POST "http://testserver/v2/import/batch"')
    assert f'-H "Authorization: Bearer {key}"' in curl
    assert snippet(page, "snippet-curl-sandbox") == curl.replace("/v2/import/", "/sandbox/v2/import/")
    body = json.loads(curl.split(" -d '", 1)[1].removesuffix("'"))
    sent = owner.http.post("/v2/import/batch", json=body, headers=bearer(key))
    assert sent.status_code == 201, sent.text
    (orders,) = owner.storage.warehouse.tables(owner.client_id)
    assert orders.schema.columns["created_at"].kind.label == "timestamp"

    python = snippet(page, "snippet-stitchclient")
    compile(python, "snippet-stitchclient", "exec")  # valid Python, as shown
    assert "from stitchclient.client import Client" in python
    assert 'BASE = "http://testserver"' in python and f'API_KEY = "{key}"' in python
    assert f"CLIENT_ID = {owner.client_id}" in python
    assert 'override_stitch_url=BASE + "/v2/import/push"' in python and ") as client:" in python
    assert re.search(r'client\.push\(\s*\{\s*"action": "upsert",\s*"table_name": "orders",', python)


def test_the_data_import_api_page_has_no_stitch_snippets(owner: Console) -> None:
    choose = owner.http.get(f"/console/data/connections/{owner.client_id}/add")
    page = owner.http.post(
        f"/console/data/connections/{owner.client_id}/add",
        data={"csrf": csrf_of(choose), "source": "import-api"},
    ).text
    assert "Data Import API is ready" in page
    assert "snippet-config" not in page and "/v2/import/" not in page


# -- Activity ----------------------------------------------------------------------------------


def test_activity_shows_each_api_the_stale_records_and_the_refusal_codes(owner: Console) -> None:
    key = owner.key
    record = {
        "client_id": owner.client_id,
        "table_name": "customers",
        "action": "upsert",
        "key_names": ["id"],
    }
    newer = owner.http.post(
        "/v2/import/push",
        json=[{**record, "sequence": 20, "data": {"id": 1, "name": "Finn"}}],
        headers=bearer(key),
    )
    older = owner.http.post(
        "/v2/import/push",
        json=[
            {**record, "sequence": 10, "data": {"id": 1, "name": "Old Finn"}},
            {**record, "sequence": 11, "data": {"id": 2, "name": "Jake"}},
        ],
        headers=bearer(key),
    )
    assert newer.status_code == older.status_code == 201
    assert older.json()["stale"] == 1
    several = owner.http.post(
        "/v2/import/push",
        json=[
            {**record, "sequence": 30, "data": {"id": 3}},
            {**record, "table_name": "orders", "sequence": 30, "data": {"id": 3}},
        ],
        headers=bearer(key),
    )
    checked = owner.http.post(
        "/v2/import/validate", json=[{**record, "sequence": 40, "data": {"id": 4}}], headers=bearer(key)
    )
    sandboxed = owner.http.post("/sandbox/v2/import/batch", json=batch(), headers=bearer(key))
    rjmetrics = owner.push(table="plain")
    unfit = owner.http.post(
        "/v2/import/batch",
        json=batch("orders", {"action": "upsert", "sequence": SEQ, "data": {**ROW, "email": 5}}),
        headers=bearer(key),
    )
    keyless = owner.http.post("/v2/import/push", json=[{**record, "sequence": 1, "data": {"id": 5}}])
    assert (several.status_code, checked.status_code, sandboxed.status_code) == (201, 200, 201)
    assert (unfit.status_code, keyless.status_code) == (400, 401)
    owner.recorder.flush()
    page = owner.http.get("/console/activity").text

    def pushed(r: httpx.Response) -> dict[str, str]:
        return row_cells(page, "pushes", r.headers["x-request-id"])

    def refused(r: httpx.Response) -> dict[str, str]:
        return row_cells(page, "refusals", r.headers["x-request-id"])

    first = pushed(newer)
    assert first.pop("Time").endswith(" UTC")
    assert first == {
        "Client": f"shop ({owner.client_id})",
        "API": "Stitch push",
        "Table": "customers",
        "Data points": "1",
        "Inserted": "1",
        "Replaced": "0",
        "Stale": "0",
        "Where": "production",
        "Status": "201",
    }
    stale = pushed(older)
    assert (stale["API"], stale["Data points"], stale["Inserted"], stale["Stale"]) == (
        "Stitch push",
        "2",
        "1",
        "1",
    )
    assert '<span class="stale" title="1 record not applied' in page
    assert (pushed(several)["API"], pushed(several)["Table"]) == ("Stitch push", "several tables")
    assert (pushed(checked)["API"], pushed(checked)["Where"], pushed(checked)["Status"]) == (
        "Stitch validate",
        "checked only",
        "200",
    )
    assert (pushed(sandboxed)["API"], pushed(sandboxed)["Where"]) == ("Stitch batch", "sandbox")
    assert pushed(rjmetrics)["API"] == "Data Import API"

    details = unfit.json()["details"]
    assert [d["code"] for d in details] == ["record_not_conforming"]
    seen = refused(unfit)
    assert (seen["API"], seen["Status"], seen["Where"]) == ("Stitch batch", "400", "production")
    assert (
        seen["Reasons"] == f"record_not_conforming data point {details[0]['point']}: {details[0]['message']}"
    )
    assert (
        '<span class="badge code" title="refusal code (docs/errors.md)">record_not_conforming</span>' in page
    )
    assert (refused(keyless)["API"], refused(keyless)["Status"]) == ("Stitch push", "401")
    assert refused(keyless)["Reasons"].startswith("api_key_missing ")


# -- Tables ------------------------------------------------------------------------------------


def test_tables_show_a_tables_subtables_and_a_subtables_parent(owner: Console) -> None:
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "line_items": {
                "type": "array",
                "items": {"type": "object", "properties": {"sku": {"type": "string"}}},
            },
            "a" * 40: {"type": "object", "properties": {"b" * 40: {"type": "integer"}}},
        },
    }
    data = {"id": 1, "line_items": [{"sku": "A"}], "a" * 40: {"b" * 40: 1}}
    body = batch("orders", {"action": "upsert", "sequence": SEQ, "data": data}) | {"schema": schema}
    answer = owner.http.post("/v2/import/batch", json=body, headers=bearer(owner.key))
    assert answer.status_code == 201, answer.text
    page = owner.http.get("/console/data/tables").text
    orders, items = article(page, "orders"), article(page, "orders__line_items")
    assert re.search(r'subtables:\s*<a href="#table-1-orders__line_items">orders__line_items</a>', orders)
    assert 'subtable of <a href="#table-1-orders">orders</a>, tied by _sdc_source_key_id' in items
    assert f'title="the field {"a" * 40}.{"b" * 40}"' in orders  # the shortened column's field


def test_tables_show_timestamps_dates_system_columns_and_the_table_version(owner: Console) -> None:
    version = 1_796_111_209_374
    full = batch(
        "orders",
        {"action": "activate_version", "sequence": SEQ},
        {
            "action": "upsert",
            "sequence": SEQ + 1,
            "data": ROW,
            "time_extracted": "2026-12-01T07:46:49.376708Z",
        },
        {"action": "activate_version", "sequence": SEQ + 2},
        table_version=version,
    )
    appended = batch(
        "events", {"action": "upsert", "sequence": SEQ, "data": {"id": 7, "email": None}}, keys=[]
    )
    for body in (full, appended):
        answer = owner.http.post("/v2/import/batch", json=body, headers=bearer(owner.key))
        assert answer.status_code == 201, answer.text
    owner.push(table="plain")  # the Data Import API: no system columns, no table version

    page = owner.http.get("/console/data/tables").text
    orders, events, plain = (article(page, name) for name in ("orders", "events", "plain"))
    chips = dict(re.findall(r'<span class="name">([^<]+)</span>\s*<span class="type">([^<]+)</span>', orders))
    assert {n: chips[n] for n in ROW} == {
        "id": "integer",
        "email": "text",
        "created_at": "timestamp",
        "birthday": "date",
    }
    assert {n: chips[n] for n in SYSTEM_COLUMNS} == {
        "_sdc_received_at": "timestamp",
        "_sdc_batched_at": "timestamp",
        "_sdc_sequence": "integer",
        "_sdc_table_version": "integer",
        "_sdc_extracted_at": "timestamp",
    }
    marked = re.findall(r'<li class="system"[^>]*>\s*<span class="name">([^<]+)</span>', orders)
    assert sorted(marked) == sorted(SYSTEM_COLUMNS)
    assert orders.count('<span class="system">system</span>') == len(SYSTEM_COLUMNS)
    assert f"table version {version}" in orders
    assert re.search(r'<li class="key system"[^>]*>\s*<span class="name">__sdc_primary_key</span>', events)
    assert "table version" not in events and "table version" not in plain
    assert "system" not in plain

    detail = owner.http.get("/console/data/tables/1/orders").text
    assert re.search(rf'id="table-version"><code>{version}</code>', detail)
    assert re.search(r'<code>_sdc_sequence</code> <span class="badge system"', detail)
    assert not re.search(r'<code>email</code> <span class="badge system"', detail)
    assert '<td class="time">2012-08-01T14:22:32.000000Z</td>' in detail
    assert '<td class="time">1980-02-29</td>' in detail
    assert '<td class="time">2026-12-01T07:46:49.376708Z</td>' in detail  # _sdc_extracted_at
    assert '<th class="system">_sdc_batched_at</th>' in detail


# -- the real server: Chromium, target-stitch and stitchclient ----------------------------------

BROWSER_PASSWORD = "owner password 1"


@pytest.fixture(scope="module")
def stitch_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server, on a warehouse whose owner password was set with the command line."""
    with console_server(tmp_path_factory.mktemp("stitch-console"), BROWSER_PASSWORD) as server:
        yield server


def stitch_page(server: Server) -> str:
    """Sign in to the real server's console over HTTP and add a Stitch data source."""
    with httpx.Client(base_url=server.base, timeout=30) as http:
        token = csrf_of(http.get("/console/login"))
        signed_in = http.post("/console/login", data={"csrf": token, "password": BROWSER_PASSWORD})
        assert signed_in.status_code == 303
        return add_stitch_source(http)


def stored_rows(server: Server, table: str) -> list[dict[str, Any]]:
    with open_storage(sqlite_url(server.data_dir)) as storage:
        columns, rows = storage.warehouse.query(1, f'SELECT * FROM "{table}" ORDER BY id')
    return [dict(zip(columns, r)) for r in rows]


@pytest.mark.e2e
@pytest.mark.browser
@pytest.mark.skipif(
    chromium is None, reason="headless Chromium is not installed (see test_console_browser.py)"
)
def test_in_chromium_add_a_stitch_source_copy_its_config_and_push_a_batch_with_it(
    browser: WebDriver, stitch_console: Server
) -> None:
    assert chromium is not None
    driver, base = browser, stitch_console.base
    driver.set_window_size(*chromium.DESKTOP)
    driver.get(base + "/console/login")
    driver.delete_all_cookies()
    driver.get(base + "/console/login")
    chromium.sign_in(driver, BROWSER_PASSWORD)
    chromium.follow(driver, "Connections")
    chromium.go(
        driver,
        driver.find_element(By.CSS_SELECTOR, "#client-1").find_element(By.LINK_TEXT, "Add a Data Source"),
    )
    chromium.shoot(driver, "stitch-01-add-a-data-source")
    chromium.press(driver, "Select Stitch Import API")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Stitch Import API is ready"
    key = driver.find_element(By.ID, "api-key").text
    chromium.shoot(driver, "stitch-02-stitch-import-api-key")

    # Copy config.json with its button, and read it back off the clipboard.
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    button = driver.find_element(By.CSS_SELECTOR, "button[data-copy='snippet-config']")
    button.click()
    wait_until(lambda: button.text == "Copied", timeout=10, what="the Copy button to say Copied")
    copied = driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('failed: ' + e))"
    )
    config = json.loads(copied)
    assert config == {
        "token": key,
        "client_id": 1,
        "small_batch_url": f"{base}/v2/import/batch",
        "big_batch_url": f"{base}/v2/import/batch",
        "batch_size_preferences": {},
        "disable_collection": True,
    }

    # A batch as target-stitch sends it, with the copied config.
    answer = httpx.post(
        config["small_batch_url"],
        json=batch(
            "shipments",
            {"action": "activate_version", "sequence": SEQ},
            {"action": "upsert", "sequence": SEQ + 1, "data": ROW},
            {"action": "activate_version", "sequence": SEQ + 2},
            table_version=7,
        ),
        headers={**bearer(config["token"]), "content-type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    again = httpx.post(  # an older record of the same row: answered 201, not applied
        config["small_batch_url"], json=batch("shipments", table_version=7), headers=bearer(key), timeout=30
    )
    assert again.status_code == 201 and again.json()["stale"] == 1, again.text
    refused = httpx.post(
        config["small_batch_url"], json=batch("shipments", keys=["nope"]), headers=bearer(key), timeout=30
    )
    assert refused.status_code == 400, refused.text

    # Tables: the kinds, the system columns marked, the table version.
    chromium.follow(driver, "Tables")
    article = driver.find_element(By.ID, "table-1-shipments")
    kinds = {
        li.find_element(By.CLASS_NAME, "name").text: (
            li.find_element(By.CLASS_NAME, "type").text,
            li.get_attribute("class") or "",
        )
        for li in article.find_elements(By.CSS_SELECTOR, ".columns li")
    }
    assert kinds["created_at"] == ("timestamp", "") and kinds["birthday"] == ("date", "")
    assert kinds["id"] == ("integer", "key")
    assert {n for n, (_, classes) in kinds.items() if "system" in classes} == set(SYSTEM_COLUMNS)
    assert "table version 7" in article.text
    chromium.shoot(driver, "stitch-03-tables")
    chromium.go(driver, article.find_element(By.LINK_TEXT, "shipments"))
    assert driver.find_element(By.ID, "table-version").text.startswith("7")
    chromium.shoot(driver, "stitch-04-table-shipments")

    # Activity: the batch, by its API, and the refusal with its code.
    chromium.follow(driver, "Activity")
    row = chromium.reload_until(
        driver, f"#pushes tr[data-request-id='{answer.headers['x-request-id']}']", "the batch"
    )
    seen = chromium.cells(row)
    assert (seen["API"], seen["Table"], seen["Inserted"], seen["Stale"]) == (
        "Stitch batch",
        "shipments",
        "1",
        "0",
    )
    row = chromium.reload_until(
        driver, f"#refusals tr[data-request-id='{refused.headers['x-request-id']}']", "the refusal"
    )
    stale = chromium.cells(
        driver.find_element(By.CSS_SELECTOR, f"#pushes tr[data-request-id='{again.headers['x-request-id']}']")
    )
    assert (stale["Inserted"], stale["Replaced"], stale["Stale"]) == ("0", "0", "1")
    seen = chromium.cells(row)
    assert seen["API"] == "Stitch batch" and seen["Status"] == "400"
    code = row.find_element(By.CSS_SELECTOR, ".reasons .badge.code").text
    assert code == refused.json()["details"][0]["code"]
    chromium.shoot(driver, "stitch-05-activity")


@pytest.mark.e2e
def test_target_stitch_takes_the_config_shown_and_stores_a_tap_stream(
    stitch_console: Server, target_stitch: str, tmp_path: Path
) -> None:
    page = stitch_page(stitch_console)
    config = tmp_path / "config.json"
    config.write_text(snippet(page, "snippet-config"))
    properties = {"id": singer.INTEGER, "name": singer.TEXT, "updated_at": singer.DATE_TIME}
    stream = [
        singer.schema("tap_customers", properties, ["id"]),
        singer.record("tap_customers", {"id": 1, "name": "Finn", "updated_at": "2026-12-01T07:46:49Z"}),
        singer.record("tap_customers", {"id": 2, "name": "Jake", "updated_at": "2026-12-01T07:46:50Z"}),
        singer.state(singer.bookmark("tap_customers", updated_at="2026-12-01T07:46:50Z")),
    ]
    done = subprocess.run(
        [target_stitch, "--config", str(config)],
        input=singer.jsonl(stream),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert [json.loads(line) for line in done.stdout.splitlines()] == [stream[-1]["value"]]
    assert [(r["id"], r["name"]) for r in stored_rows(stitch_console, "tap_customers")] == [
        (1, "Finn"),
        (2, "Jake"),
    ]


@pytest.mark.e2e
def test_the_stitchclient_snippet_runs_as_shown(
    stitch_console: Server, stitchclient_python: str, tmp_path: Path
) -> None:
    page = stitch_page(stitch_console)
    program = tmp_path / "push.py"
    program.write_text(snippet(page, "snippet-stitchclient"))
    done = subprocess.run(
        [stitchclient_python, str(program)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1]"  # callback_function=print, once its request was stored
    (row,) = [r for r in stored_rows(stitch_console, "orders") if r["id"] == 1]
    assert (row["email"], row["created_at"]) == ("joe@schmo.com", "2012-08-01T14:22:32.000000Z")
