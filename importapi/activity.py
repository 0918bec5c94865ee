"""The activity window: the latest pushes and refusals, for the console's Activity page.

``ActivityRecorder`` is an observer of the API (``ImportApi.observers``). On the request
path it only appends a tuple to a bounded in-memory queue; a background thread writes the
queue to the catalog (``Catalog.record_activity``) a moment later, in one transaction,
and the warehouse keeps only the newest ``keep`` pushes and ``keep`` refusals. Because the
window lives in the warehouse, every server process records into it and the console of any
process shows all of them.

What is recorded: every push (the RJMetrics data route, the Stitch batch, push and validate
routes), sandbox pushes included and marked, and every refusal of an API route (a bad key
on authenticate, a 404 under ``/v1`` or ``/v2``).
Status probes and successful authentications are not activity.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque

from importapi.observe import RequestRecord
from importapi.storage.base import Activity
from importapi.storage.catalog import Catalog

log = logging.getLogger("importapi.activity")

KEEP = 200  # pushes, and as many refusals, kept in the window
FLUSH_SECONDS = 0.25
_API_PREFIXES = ("/v1/", "/v2/", "/sandbox/v1/", "/sandbox/v2/")
PUSH_ROUTES = frozenset(("data", "batch", "push", "validate"))


def _stamp(seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class _Stamps:
    """``_stamp`` of each second, made once: a write's events mostly share a second or two."""

    def __init__(self) -> None:
        self.second, self.text = -1, ""

    def __call__(self, seconds: float) -> str:
        whole = int(seconds)
        if whole != self.second:
            self.second, self.text = whole, _stamp(whole)
        return self.text


def _from_path(path: str) -> tuple[int | None, str | None]:
    """The client id and table a refused request was aimed at, read from its path (a
    refusal may come before the key check that would otherwise tell)."""
    parts = path.removeprefix("/sandbox").split("/")
    cid = int(parts[3]) if len(parts) > 3 and parts[3].isascii() and parts[3].isdigit() else None
    table = parts[5].lower() if len(parts) > 6 and parts[4] == "table" and parts[5] else None
    return cid, table[:63] if table else None


class ActivityRecorder:
    """Observer that queues finished requests and writes them in the background."""

    def __init__(self, catalog: Catalog, keep: int = KEEP, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.catalog = catalog
        self.keep = keep
        self.flush_seconds = flush_seconds
        # Bounded: under a flood only the newest requests matter to the window anyway.
        self._pending: deque[tuple[float, RequestRecord]] = deque(maxlen=4 * keep)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._flushing = threading.Lock()
        self._stamps = _Stamps()  # used under _flushing only
        self._thread = threading.Thread(target=self._run, name="activity-writer", daemon=True)
        self._thread.start()

    def __call__(self, req: RequestRecord) -> None:
        """The hot path: one check and one append, nothing else."""
        route = req.route
        if route not in PUSH_ROUTES and (
            req.status < 400
            or route in ("status", "import_status")
            or (route == "other" and not req.path.startswith(_API_PREFIXES))
        ):
            return
        self._pending.append((time.time(), req))
        if not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while not self._closing.is_set():
            self._wake.wait()
            # Gather what arrives in the next moment into the same transaction.
            self._closing.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write everything queued so far (the writer thread calls this; so does close)."""
        with self._flushing:
            events = []
            while self._pending:
                events.append(self._event(self._pending.popleft()))
            if not events:
                return
            try:
                self.catalog.record_activity(events, self.keep)
            except Exception:
                log.warning("could not record %d activity events", len(events), exc_info=True)

    def _event(self, item: tuple[float, RequestRecord]) -> Activity:
        at, req = item
        cid, table = req.client_id, req.table
        if req.status >= 400 and cid is None:  # refused before the key said whose it is
            cid, table = _from_path(req.path)
        return Activity(
            self._stamps(at),
            req.rid,
            req.route,
            cid,
            req.key_id,
            table,
            req.points,
            req.inserted,
            req.replaced,
            req.sandbox,
            req.status,
            tuple(req.details),
            req.stale,
        )

    def close(self) -> None:
        """Stop the writer and write what is still queued."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()
