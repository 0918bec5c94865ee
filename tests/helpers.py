"""Helpers shared by the tests: running the real ``importapi`` command line as a
subprocess, polling with a deadline, pushing a batch straight into a warehouse."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from importapi.push import Batch, Push, PushResult
from importapi.storage import Storage

T = TypeVar("T")


def sqlite_url(folder: Path) -> str:
    """The ``--database`` URL of a SQLite folder (absolute paths give four slashes)."""
    return f"sqlite:///{folder}"


def run_cli(
    *args: str,
    database: Path | str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m importapi ARGS [--database URL]``; never raises on a non-zero exit."""
    full_env = {k: v for k, v in os.environ.items() if k != "IMPORTAPI_DATABASE"}
    full_env.update(env or {})
    argv = [sys.executable, "-m", "importapi", *args]
    if database is not None:
        argv += ["--database", database if isinstance(database, str) else sqlite_url(database)]
    return subprocess.run(
        argv, check=False, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )


def cli_json(*args: str, database: Path | str, **kw: Any) -> Any:
    """Run a subcommand that prints JSON; fail the test with its stderr if it fails."""
    done = run_cli(*args, database=database, **kw)
    assert done.returncode == 0, f"importapi {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return json.loads(done.stdout)


def query_rows(client_id: int, sql: str, database: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = cli_json("query", str(client_id), sql, "--format", "json", database=database)
    return rows


def wait_until(probe: Callable[[], T], *, timeout: float = 15, what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def integrity_ok(path: Path) -> bool:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def apply(
    storage: Storage, client_id: int, batch: Batch, *, sandbox: bool = False, timeout: float = 60
) -> PushResult:
    """Push one validated batch through the warehouse, as the server does; its result."""
    (result,) = storage.warehouse.submit(Push(client_id, [batch], sandbox)).result(timeout)
    return result


def submit(storage: Storage, client_id: int, batch: Batch) -> Future[list[PushResult]]:
    """Queue one validated batch, without waiting for it."""
    return storage.warehouse.submit(Push(client_id, [batch]))
