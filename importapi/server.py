"""Running the application under a production HTTP server.

Settings travel to worker processes through the environment, which the application
factory reads. The server's own access log is off: it would print query strings, and a
query string can hold an API key. The application writes its own access log instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import TextIO

from importapi.settings import Settings

SERVERS = ("uvicorn", "granian")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _SecondsCachedFormatter(logging.Formatter):
    """The standard format, with the date and time worked out once a second, not per line."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._text, self._second = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)), second
        return f"{self._text},{int(record.msecs):03d}"


class BufferedLineHandler(logging.Handler):
    """Writes log lines in batches: at most ``interval`` seconds after they were logged, at
    once when ``capacity`` are waiting, and when the process ends. One write a batch, not one
    a line: the access log of a busy server costs a write per request otherwise. A process
    killed outright loses at most the last ``interval`` of lines."""

    def __init__(self, stream: TextIO, interval: float = 0.2, capacity: int = 1000) -> None:
        super().__init__()
        self.stream, self.interval, self.capacity = stream, interval, capacity
        self.lines: list[str] = []
        self.wake = threading.Event()
        threading.Thread(target=self._run, name="log-writer", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 -- logging's own rule: a bad record never stops the caller
            self.handleError(record)
            return
        if len(self.lines) == 1:
            self.wake.set()
        elif len(self.lines) >= self.capacity:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self.lines = self.lines, []
            if lines:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            time.sleep(self.interval)
            try:
                self.flush()
            except (OSError, ValueError):  # the stream is closed (the process is ending)
                return


_configured = False


def flush_access_log() -> None:
    """Write out the access log's waiting lines (at shutdown: the process may end by its
    signal, without the exit handlers that would write them)."""
    for handler in logging.getLogger("importapi.access").handlers:
        handler.flush()


def configure_logging() -> None:
    """Log to standard error; the access log (``importapi.access``) in batches. Once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    access = logging.getLogger("importapi.access")
    handler = BufferedLineHandler(sys.stderr)
    handler.setFormatter(_SecondsCachedFormatter(LOG_FORMAT))
    access.addHandler(handler)
    access.propagate = False


def _export(settings: Settings) -> None:
    limits = settings.limits
    os.environ.update({
        "IMPORTAPI_DATABASE": settings.database,
        "IMPORTAPI_MAX_POINTS": str(limits.max_points),
        "IMPORTAPI_MAX_BODY_BYTES": str(limits.max_body_bytes),
        "IMPORTAPI_MAX_DEPTH": str(limits.max_depth),
        "IMPORTAPI_MAX_COLUMNS": str(limits.max_columns),
        "IMPORTAPI_SQLITE_SYNCHRONOUS": settings.sqlite_synchronous,
        "IMPORTAPI_KEY_TOUCH_SECONDS": str(settings.key_touch_seconds),
        "IMPORTAPI_POOL_SIZE": str(settings.pool_size),
        "IMPORTAPI_ACCESS_LOG": "1" if settings.access_log else "0",
    })


def _share_metrics(workers: int) -> None:
    """Give the workers one folder for their counters, so /metrics sums them all.

    prometheus_client reads the folder from the environment when it is imported, which
    happens in each worker after this. An operator's own folder is used as it is.
    """
    if workers < 2 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder = tempfile.mkdtemp(prefix="importapi-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def run(settings: Settings, *, host: str, port: int, workers: int = 1, server: str | None = None) -> None:
    server = server or os.environ.get("IMPORTAPI_SERVER") or "uvicorn"
    if server not in SERVERS:
        raise ValueError(f"IMPORTAPI_SERVER must be one of {', '.join(SERVERS)}, not {server!r}")
    _export(settings)
    _share_metrics(workers)
    configure_logging()
    if server == "granian":
        from granian import Granian
        from granian.constants import Interfaces

        Granian(
            "importapi.app:create_app", factory=True, address=host, port=port,
            interface=Interfaces.ASGI, workers=workers, log_access=False,
        ).serve()
        return
    import uvicorn

    uvicorn.run(
        "importapi.app:create_app", factory=True, host=host, port=port, workers=workers,
        access_log=False, proxy_headers=False, server_header=False, log_config=None,
        timeout_graceful_shutdown=10,
        # Slow clients: a request's head has a deadline (importapi.protocol), its body one
        # too (IMPORTAPI_BODY_TIMEOUT, in the app), and an idle connection is closed after 5 s.
        http="importapi.protocol:HeaderDeadlineProtocol", timeout_keep_alive=5,
    )
