"""Running the application under a production HTTP server, and what that does to the process.

Settings travel to worker processes through the environment (``Settings.to_env``: every
one of them), which ``serve_app``, the factory each worker calls, reads back. Process-wide
state is set here and nowhere else: logging, the interpreter's switch interval, the frozen
heap. The server's own access log is off: it would print query strings, and a query string
can hold an API key. The application writes its own access log instead.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import TextIO

from importapi.app import ImportApi, create_app
from importapi.settings import Settings

KEEP_ALIVE_SECONDS = 20
# The event loop holds Python's lock while it reads requests; a writer thread back from
# SQLite waits for it up to this long (5 ms by default) before it asks the loop to hand it
# over. A forced hand-over stops both threads until the waiting one is awake, which on a
# virtual machine whose idle cores halt takes tens to hundreds of microseconds; with turns
# this long the writer mostly takes the lock when the loop lets it go to wait for sockets.
# 2 ms against 50 us (alternating rounds): the RJMetrics route +7.5% (12 pairs, 11 ahead),
# the batch route +4%, random keys +4%, PostgreSQL the same, the half-rate p99 no worse
# (docs/decisions.md, "Turns of Python's lock").
SWITCH_INTERVAL = 0.002  # seconds
# The garbage collector walks its youngest generation once this many more objects it tracks
# are alive than at its last pass (700 by default). Objects of a small request die before
# they count for long; a batch body's 20,000 rows (tuples) live until they are written, and
# at 700 the collector ran about 28 times while one body's rows were being made: 15% of the
# batch route's time in process, 10% at 10,000, under 2% at 50,000. A pass then walks
# about 50,000 objects (~15 ms), which only happens while big bodies are in flight, each of
# them holding Python's lock as long to be decoded. A/B in docs/decisions.md.
GC_YOUNG_OBJECTS = 50_000


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _SecondsCachedFormatter(logging.Formatter):
    """The standard format, with the date and time worked out once a second, not per line."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: ARG002
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


def serve_app() -> ImportApi:
    """The application as a server process runs it (the factory every worker calls)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    configure_logging()  # in each worker process too
    app = create_app(Settings.from_env())
    app.on_shutdown.append(flush_access_log)
    # Everything made so far lives as long as the process: the garbage collector's full
    # passes need not walk it again (shorter pauses in the latency's tail).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])
    return app


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


def run(settings: Settings, *, workers: int = 1) -> None:
    os.environ.update(settings.to_env())
    _share_metrics(workers)
    configure_logging()
    if settings.server == "granian":
        from granian import Granian
        from granian.constants import Interfaces

        Granian(
            "importapi.server:serve_app",
            factory=True,
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            workers=workers,
            log_access=False,
        ).serve()
        return
    import uvicorn

    uvicorn.run(
        "importapi.server:serve_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        # Slow clients: a request's head has a deadline (importapi.protocol), its body one
        # too (IMPORTAPI_BODY_TIMEOUT, in the app). An idle connection is closed after 20 s:
        # longer than the 15 s that target-stitch's HTTP client keeps one for reuse, so a
        # client never sends a request on a connection the server is just closing.
        http="importapi.protocol:HeaderDeadlineProtocol",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
