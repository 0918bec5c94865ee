"""The owner's account: the password hash, the login throttle, `importapi admin set-password`,
and the password printed once at the first start of the real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from importapi.console.owner import (
    PASSWORD_SETTING,
    LoginThrottle,
    check_password,
    hash_password,
    set_first_password,
    validate_password,
)
from importapi.storage import Storage, open_storage
from tests.helpers import sqlite_url, start_server, stop_server


def test_a_password_hash_checks_the_password_and_nothing_else() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$32768$8$1$")
    assert check_password("correct horse", stored)
    assert not check_password("correct horsE", stored)
    assert not check_password("", stored)
    assert hash_password("correct horse") != stored  # a fresh salt each time
    assert "correct horse" not in stored


@pytest.mark.parametrize(
    "stored", ["", "plain", "scrypt$1$2$3", "bcrypt$1$2$3$4$5", "scrypt$x$8$1$AA==$AA=="]
)
def test_a_malformed_stored_hash_never_matches(stored: str) -> None:
    assert not check_password("anything", stored)


@pytest.mark.parametrize("bad", ["", "short", " leading space", "trailing space "])
def test_weak_or_ambiguous_passwords_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_password(bad)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_doubles_the_wait_after_free_failures_and_forgets_on_success() -> None:
    clock = Clock()
    throttle = LoginThrottle(free=3, max_wait=5, clock=clock)
    for _ in range(3):
        assert throttle.wait_for("1.2.3.4") == 0
        throttle.failed("1.2.3.4")
    waits = []
    for _ in range(5):
        waits.append(throttle.wait_for("1.2.3.4"))
        clock.now += waits[-1]
        assert throttle.wait_for("1.2.3.4") == 0
        throttle.failed("1.2.3.4")
    assert waits == [1, 2, 4, 5, 5]  # doubling, capped at max_wait
    assert throttle.wait_for("5.6.7.8") == 0  # counted per address
    throttle.succeeded("1.2.3.4")
    assert throttle.wait_for("1.2.3.4") == 0


def test_the_throttle_tracks_a_bounded_number_of_addresses() -> None:
    throttle = LoginThrottle(free=0, max_tracked=10, clock=Clock())
    for n in range(50):
        throttle.failed(f"10.0.0.{n}")
    assert throttle.wait_for("10.0.0.49") > 0
    assert throttle.wait_for("10.0.0.0") == 0  # the oldest were let go


def set_password_cli(folder: Path, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "importapi", "admin", "set-password", "--database", sqlite_url(folder)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_admin_set_password_stores_only_a_slow_hash(data_dir: Path) -> None:
    done = set_password_cli(data_dir, "my console password\n")
    assert done.returncode == 0, done.stderr
    assert "password is set" in done.stdout
    with open_storage(str(data_dir)) as storage:
        stored = storage.catalog.get_setting(PASSWORD_SETTING)
    assert stored and check_password("my console password", stored)
    assert "my console password" not in "".join(p.read_bytes().decode("latin-1") for p in data_dir.iterdir())


def test_admin_set_password_refuses_a_short_password(data_dir: Path) -> None:
    done = set_password_cli(data_dir, "short\n")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: the password must have at least 8 characters")
    with open_storage(str(data_dir)) as storage:
        assert storage.catalog.get_setting(PASSWORD_SETTING) is None


def test_the_first_password_is_made_once(storage: Storage) -> None:
    first = set_first_password(storage)
    assert first and len(first) >= 16
    assert set_first_password(storage) is None
    stored = storage.catalog.get_setting(PASSWORD_SETTING)
    assert stored and check_password(first, stored)


@pytest.mark.e2e
def test_the_first_start_prints_the_console_password_once_and_it_signs_in(tmp_path: Path) -> None:
    server = start_server(tmp_path / "warehouse", tmp_path / "first.log")
    try:
        printed = re.search(r"owner password\n\n    (\S+)\n", server.log_path.read_text())
        assert printed, server.log_path.read_text()
        with httpx.Client(base_url=server.base) as http:
            token = re.search(r'name="csrf" value="([^"]+)"', http.get("/console/login").text)
            assert token
            answer = http.post("/console/login", data={"csrf": token.group(1), "password": printed.group(1)})
            assert answer.status_code == 303 and answer.headers["location"] == "/console/data"
            assert http.get("/console/data").status_code == 200
    finally:
        stop_server(server)
    again = start_server(tmp_path / "warehouse", tmp_path / "again.log")
    try:
        assert "owner password" not in again.log_path.read_text()
    finally:
        stop_server(again)
