"""The blocking client, ``Client``: a drop-in for the original Python client.

Records are read and batched in the caller's thread (a generator that holds a database
cursor stays in its thread); requests go out from a small thread pool over one pool of
keep-alive connections.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Self

import httpx

from importapi.client._batching import Batch, Batcher, as_records, batches
from importapi.client._core import (
    Answer,
    ClientBase,
    Progress,
    Pushing,
    PushSummary,
    Reply,
    Send,
    Steps,
    Wait,
    advance,
    authenticated,
)

Outcome = tuple[Reply, int]


def drive(steps: Steps, send: Callable[[Send], Reply]) -> Outcome:
    """Carry out a request's steps with blocking calls."""
    step = advance(steps, None)
    while isinstance(step, Send | Wait):
        if isinstance(step, Wait):
            time.sleep(step.seconds)
            step = advance(steps, None)
        else:
            step = advance(steps, send(step))
    return step


def reply_of(response: httpx.Response) -> Reply:
    return Reply(response.status_code, response.content, response.headers.get("retry-after"))


def no_reply(exc: httpx.TransportError) -> Reply:
    if isinstance(exc, httpx.UnsupportedProtocol):
        raise ValueError(f"the server's URL is not usable: {exc}") from None
    return Reply(error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _close(http: httpx.Client, pool: ThreadPoolExecutor) -> None:
    pool.shutdown(wait=True)
    http.close()


class Client(ClientBase):
    """A client of an Import API server.

    ``Client(client_id, api_key)``, ``authenticate()`` and ``push_data(table_name, data,
    base_url=None)`` work as they did in the original client; ``data`` may also be one
    dict or any iterable (a generator is streamed). ``push_data`` returns a
    ``PushSummary`` (which iterates like the original's list of answers) and raises
    ``PushRefused`` on a 4xx or ``PushFailed`` once retries run out.
    """

    def _open(self, transport: httpx.BaseTransport | None, timeout: float) -> None:
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="importapi-push")
        # Code written for the original client never closes it: clean up when it is dropped.
        self._closer = weakref.finalize(self, _close, self._http, self._pool)

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, step: Send) -> Reply:
        try:
            response = self._http.request(step.method, step.url, headers=step.headers, content=step.content)
        except httpx.TransportError as exc:
            return no_reply(exc)
        return reply_of(response)

    def authenticate(self) -> bool:
        """True if the key may push data for this client."""
        return authenticated(drive(self._auth_steps(None), self._send)[0])

    def authenticateWithAPI(self, base_url: str | None = None) -> Answer:  # the original name
        reply, _ = drive(self._auth_steps(base_url), self._send)
        return Answer(0, reply.status, reply.content)

    def push_data(
        self,
        table_name: str,
        data: Any,
        base_url: str | None = None,
        *,
        progress: Progress | None = None,
        keep_answers: bool = True,
    ) -> PushSummary:
        """Upsert ``data`` into ``table_name``; ``base_url=Client.SANDBOX_BASE`` checks it in
        the sandbox. ``progress`` is called with the summary as requests are acknowledged;
        ``keep_answers=False`` keeps no per-request answers (for endless streams)."""
        records = as_records(data)
        pushing = self._pushing(table_name, base_url, progress, keep_answers)
        running: dict[Future[Outcome], Batch] = {}
        try:
            for batch in batches(records, Batcher(self.max_points, self.max_bytes)):
                while running and not pushing.may_start(batch, len(running)):
                    _collect(pushing, running, FIRST_COMPLETED)
                if pushing.stopped:
                    break
                running[self._pool.submit(drive, pushing.steps(batch), self._send)] = batch
                _collect(pushing, running, FIRST_COMPLETED, timeout=0)  # whatever is done already
        finally:
            while running:  # what was sent is waited for, also on an error or Ctrl-C
                _collect(pushing, running, ALL_COMPLETED)
        return pushing.result()


def _collect(
    pushing: Pushing, running: dict[Future[Outcome], Batch], when: str, timeout: float | None = None
) -> None:
    done, _ = wait(running, timeout, return_when=when)
    for future in done:
        pushing.finish(running.pop(future), future.result())
