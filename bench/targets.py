"""The systems a benchmark run starts: importapi itself and Datasette, the peer a user would
otherwise pick. Each starts on a fresh database and stops when its block ends."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.records import body_for

HERE = Path(__file__).parent
DATASETTE_VERSION = "1.0a41"
DATASETTE_VENV = HERE / ".venv-datasette"


@dataclass
class Running:
    name: str
    base: str
    path: str
    fmt: str
    pid: int
    token: str = ""
    key: str = ""
    folder: Path = field(default_factory=Path)

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not start:\n{log.read_text()}")


@contextmanager
def _process(
    cmd: list[str], env: dict[str, str], log: Path, ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    try:
        _wait_ready(ready_url, proc, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def importapi(
    folder: Path | None = None,
    *,
    workers: int = 1,
    database: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Running]:
    """``importapi serve`` with its defaults, on a fresh warehouse unless one is given."""
    own = folder is None
    folder = folder or Path(tempfile.mkdtemp(prefix="bench-importapi-"))
    port = free_port()
    log = folder.parent / f"{folder.name}.log"
    cmd = [
        sys.executable,
        "-m",
        "importapi",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--database",
        database or str(folder),
    ]
    try:
        with _process(cmd, env or {}, log, f"http://127.0.0.1:{port}/") as proc:
            key = re.search(r"imp_[A-Za-z0-9_-]+", log.read_text())
            if key is None:  # an existing warehouse: make a key for this run
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "importapi",
                        "keys",
                        "create",
                        "1",
                        "--json",
                        "--database",
                        database or str(folder),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                key = re.search(r"imp_[A-Za-z0-9_-]+", out)
            assert key is not None
            yield Running(
                "importapi",
                f"http://127.0.0.1:{port}",
                f"/v2/client/1/table/bench/data?apikey={key.group(0)}",
                "importapi",
                proc.pid,
                key=key.group(0),
                folder=folder,
            )
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
            log.unlink(missing_ok=True)


def ensure_datasette() -> Path:
    exe = DATASETTE_VENV / "bin" / "datasette"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DATASETTE_VENV)], check=True)
        subprocess.run(
            [str(DATASETTE_VENV / "bin" / "pip"), "install", "-q", f"datasette=={DATASETTE_VERSION}"],
            check=True,
        )
    return exe


@contextmanager
def datasette() -> Iterator[Running]:
    """Datasette's JSON write API on a WAL database whose table has ``id`` as primary key."""
    exe = ensure_datasette()
    folder = Path(tempfile.mkdtemp(prefix="bench-datasette-"))
    db = folder / "bench.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(
            "CREATE TABLE bench (id INTEGER PRIMARY KEY, name TEXT, email TEXT, amount REAL,"
            " active INTEGER, created_at TEXT)"
        )
    conn.close()
    secret = "bench-secret"
    token = subprocess.run(
        [str(exe), "create-token", "root", "--secret", secret], capture_output=True, text=True, check=True
    ).stdout.strip()
    port = free_port()
    try:
        with _process(
            [str(exe), "serve", str(db), "--port", str(port), "--root"],
            {"DATASETTE_SECRET": secret},
            folder / "datasette.log",
            f"http://127.0.0.1:{port}/",
        ) as proc:
            yield Running(
                "datasette",
                f"http://127.0.0.1:{port}",
                "/bench/bench/-/upsert",
                "datasette",
                proc.pid,
                token=token,
                folder=folder,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def prefill(target: Running, rows: int) -> None:
    """Push ``rows`` records with ids 0..rows-1 over HTTP, for the replacement mix."""
    with httpx.Client(base_url=target.base, headers=target.headers(), timeout=60) as client:
        for n in range(rows // 100):
            r = client.post(
                target.path,
                content=body_for(target.fmt, "ascending", n, 0, 0),
                headers={"Content-Type": "application/json"},
            )
            r.raise_for_status()


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    """Resident memory of a process and its children (workers), in MB."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total
