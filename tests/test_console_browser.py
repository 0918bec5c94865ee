"""The console in a real browser: Debian's headless Chromium, driven through chromedriver,
against the real server process.

The owner signs in, goes Data -> Connections -> Add a Data Source -> Data Import API, reads
the key off the page, pushes the seed's Example 2 with it over HTTP, finds the table (2 rows,
typed columns) on Tables and the push on Activity, revokes the key, and sees the next push
refused with 401 and listed among the refusals. Every page is saved as a screenshot under
test-output/console/, at desktop and phone widths.

Without chromium and chromedriver these tests skip, saying why; under CI=true they fail
instead (``make test`` installs both through scripts/ensure-chromium.sh).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.helpers import EXAMPLE_2, Server, console_server, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "console"
PASSWORD = "owner password 1"
DESKTOP, PHONE = (1280, 900), (390, 844)

if not (CHROMIUM and CHROMEDRIVER):
    reason = (
        "headless Chromium is not installed (needs /usr/bin/chromium and /usr/bin/chromedriver: "
        "run scripts/ensure-chromium.sh as root, or apt-get install chromium chromium-driver)"
    )
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI=true but {reason}")
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server, on a warehouse whose owner password was set with the command line."""
    with console_server(tmp_path_factory.mktemp("console"), PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture
def fresh(browser: WebDriver, console: Server) -> WebDriver:
    """The browser signed out, at desktop width."""
    browser.set_window_size(*DESKTOP)
    browser.get(console.base + "/console/login")
    browser.delete_all_cookies()
    return browser


def shoot(driver: WebDriver, name: str, *, phone: bool = True) -> None:
    """Save the whole page at desktop width and, unless told not to, at phone width too."""
    sizes = [("desktop", DESKTOP, False), ("phone", PHONE, True)] if phone else [("desktop", DESKTOP, False)]
    for label, (width, height), mobile in sizes:
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        full = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": max(height, full)})
        driver.save_screenshot(str(SHOTS / f"{name}-{label}.png"))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _replaced(page: WebElement) -> Any:
    """Has a new document replaced the one ``page`` is the root of? Asked while the old one
    is going, Chromium may answer that the node no longer belongs to a document rather than
    that it is stale: both mean replaced."""

    def check(_driver: WebDriver) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return check


def go(driver: WebDriver, element: WebElement) -> None:
    """Click a link or a submit button and wait until the next page has replaced this one."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 20, poll_frequency=0.05).until(_replaced(page))


def sign_in(driver: WebDriver, password: str) -> None:
    field = driver.find_element(By.ID, "password")
    field.clear()
    field.send_keys(password)
    go(driver, driver.find_element(By.CSS_SELECTOR, "form button[type=submit].primary"))


def follow(driver: WebDriver, text: str) -> None:
    go(driver, driver.find_element(By.LINK_TEXT, text))


def press(driver: WebDriver, label: str) -> None:
    go(driver, driver.find_element(By.XPATH, f"//button[normalize-space()='{label}']"))


def page_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def reload_until(driver: WebDriver, css: str, what: str) -> WebElement:
    """Reload the page until ``css`` matches (the activity window is written a moment later)."""

    def found() -> WebElement | None:
        driver.refresh()
        hits = driver.find_elements(By.CSS_SELECTOR, css)
        return hits[0] if hits else None

    return wait_until(found, timeout=20, what=what)


def cells(row: WebElement) -> dict[str, str]:
    return {td.get_attribute("data-label"): td.text for td in row.find_elements(By.TAG_NAME, "td")}


def push(console: Server, client_id: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{console.base}/v2/client/{client_id}/table/orders/data",
        params={"apikey": key},
        json=EXAMPLE_2,
        timeout=30,
    )


def test_owner_adds_a_data_source_pushes_sees_tables_and_activity_then_revokes(
    fresh: WebDriver, console: Server
) -> None:
    driver = fresh
    driver.get(console.base + "/console/")
    assert driver.current_url.startswith(console.base + "/console/login")
    shoot(driver, "01-login")
    sign_in(driver, PASSWORD)
    assert driver.current_url == console.base + "/console/data"
    shoot(driver, "02-data")

    # Data -> Connections -> Add a Data Source -> Data Import API
    follow(driver, "Data")
    follow(driver, "Connections")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Connections"
    shoot(driver, "03-connections")
    go(
        driver,
        driver.find_element(By.CSS_SELECTOR, "#client-1").find_element(By.LINK_TEXT, "Add a Data Source"),
    )
    shoot(driver, "04-add-a-data-source")
    press(driver, "Select Data Import API")
    key = driver.find_element(By.ID, "api-key").text
    client_id = driver.find_element(By.ID, "client-id").text
    assert key.startswith("imp_") and client_id == "1"
    assert (
        f"{console.base}/v2/client/1/table/orders/data?apikey={key}"
        in driver.find_element(By.ID, "snippet-curl").text
    )
    assert f'API_KEY = "{key}"' in driver.find_element(By.ID, "snippet-python").text
    assert driver.find_element(By.ID, "base-sandbox").text == f"{console.base}/sandbox/v2"
    shoot(driver, "05-data-import-api-key")

    # The key off the page works: the seed's Example 2, over HTTP.
    answer = push(console, client_id, key)
    assert answer.status_code == 201, answer.text
    assert (answer.json()["inserted"], answer.json()["replaced"]) == (2, 1)
    pushed_id = answer.headers["x-request-id"]

    # Tables: the table, its 2 rows and its column types.
    follow(driver, "Data")
    follow(driver, "Tables")
    article = driver.find_element(By.ID, "table-1-orders")
    assert article.find_element(By.CLASS_NAME, "rows").text == "2 rows"
    types = {
        li.find_element(By.CLASS_NAME, "name").text: li.find_element(By.CLASS_NAME, "type").text
        for li in article.find_elements(By.CSS_SELECTOR, ".columns li")
    }
    assert types == {"id": "integer", "email": "text", "status": "text", "created_at": "text"}
    assert "key" in article.find_element(By.CSS_SELECTOR, ".columns li:first-child").get_attribute("class")
    shoot(driver, "06-tables")
    go(driver, article.find_element(By.LINK_TEXT, "orders"))
    rows = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in driver.find_elements(By.CSS_SELECTOR, "table.data tbody tr")
    ]
    assert rows == [
        ["1", "joe@schmo.com", "complete", "2012-08-05 04:51:02"],
        ["2", "anne@schmo.com", "pending", "2012-08-03 23:12:30"],
    ]
    shoot(driver, "07-table-orders")

    # Activity: the push, with its counts.
    follow(driver, "Activity")
    row = reload_until(driver, f"#pushes tr[data-request-id='{pushed_id}']", "the push on Activity")
    seen = cells(row)
    assert (seen["Table"], seen["Data points"], seen["Inserted"], seen["Replaced"]) == (
        "orders",
        "3",
        "2",
        "1",
    )
    assert (seen["Where"], seen["Status"]) == ("production", "201")
    shoot(driver, "08-activity")

    # Revoke the key; the next push is refused and listed with its reason.
    follow(driver, "Data")
    follow(driver, "Connections")
    key_row = driver.find_element(By.CSS_SELECTOR, f"tr[data-key-id='{key.split('_')[1]}']")
    key_row.find_element(By.TAG_NAME, "summary").click()
    shoot(driver, "09-revoke-confirm", phone=False)
    go(driver, key_row.find_element(By.CSS_SELECTOR, "button.danger"))
    assert "Revoked key" in driver.find_element(By.CLASS_NAME, "flash").text
    key_row = driver.find_element(By.CSS_SELECTOR, f"tr[data-key-id='{key.split('_')[1]}']")
    assert "revoked" in cells(key_row)["Status"]
    shoot(driver, "10-connections-revoked")
    refused = push(console, client_id, key)
    assert refused.status_code == 401, refused.text
    follow(driver, "Activity")
    row = reload_until(
        driver,
        f"#refusals tr[data-request-id='{refused.headers['x-request-id']}']",
        "the refusal on Activity",
    )
    seen = cells(row)
    assert seen["Status"] == "401" and "push to orders" in seen["Request"]
    assert "revoked" in seen["Reasons"]
    shoot(driver, "11-activity-refusal")


def test_a_wrong_password_is_refused(fresh: WebDriver, console: Server) -> None:
    fresh.get(console.base + "/console/login")
    sign_in(fresh, "not the password")
    assert fresh.find_element(By.CSS_SELECTOR, "[role=alert]").text == "That password is not right."
    assert fresh.current_url.startswith(console.base + "/console/login")
    shoot(fresh, "12-login-wrong-password")
    fresh.get(console.base + "/console/data/connections")
    assert fresh.current_url.startswith(console.base + "/console/login")


def test_a_form_without_its_csrf_token_is_refused(fresh: WebDriver, console: Server) -> None:
    fresh.get(console.base + "/console/login")
    sign_in(fresh, PASSWORD)
    follow(fresh, "Data")
    follow(fresh, "Connections")
    before = len(fresh.find_elements(By.CSS_SELECTOR, "section[id^=client-]"))
    fresh.execute_script(
        "document.querySelector(\"form[action$='/data/clients'] input[name=csrf]\").remove()"
    )
    fresh.find_element(By.ID, "client-name").send_keys("forged")
    press(fresh, "Create client")
    assert fresh.find_element(By.TAG_NAME, "h1").text == "This form has expired"
    assert "Nothing was changed" in page_text(fresh)
    shoot(fresh, "13-csrf-refused", phone=False)
    fresh.get(console.base + "/console/data/connections")
    assert len(fresh.find_elements(By.CSS_SELECTOR, "section[id^=client-]")) == before
    assert "forged" not in page_text(fresh)


def test_pages_need_a_login(fresh: WebDriver, console: Server) -> None:
    for path in (
        "/console/data",
        "/console/data/connections",
        "/console/data/tables",
        "/console/data/tables/1/orders",
        "/console/data/tables/1/orders.csv",
        "/console/activity",
        "/console/data/connections/1/add",
    ):
        fresh.get(console.base + path)
        assert fresh.current_url.startswith(console.base + "/console/login?next="), path
        assert fresh.find_element(By.TAG_NAME, "h1").text == "Sign in"
    # Signing out ends the session.
    sign_in(fresh, PASSWORD)
    assert fresh.current_url == console.base + "/console/data/connections/1/add"
    press(fresh, "Sign out")
    assert "You are signed out." in page_text(fresh)
    fresh.get(console.base + "/console/activity")
    assert fresh.current_url.startswith(console.base + "/console/login")
