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
import tempfile

from importapi.settings import Settings

SERVERS = ("uvicorn", "granian")


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
