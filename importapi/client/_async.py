"""The asyncio client, ``AsyncClient``: the same pushes as ``Client``, awaited.

It runs the very steps the sync client runs (``importapi.client._core``); only the
waiting differs. ``data`` may also be an async iterable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Coroutine
from contextlib import aclosing
from typing import Any, Self

import httpx

from importapi.client._batching import Batch, Batcher, abatches, as_records
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
    authenticated,
)
from importapi.client._retry import Retry
from importapi.client._sync import no_reply, reply_of

Outcome = tuple[Reply, int]


async def drive(steps: Steps, send: Callable[[Send], Coroutine[Any, Any, Reply]]) -> Outcome:
    """Carry out a request's steps with ``await``."""
    reply: Reply | None = None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration as stop:
            outcome: Outcome = stop.value
            return outcome
        if isinstance(step, Wait):
            await asyncio.sleep(step.seconds)
            reply = None
        else:
            reply = await send(step)


class AsyncClient(ClientBase):
    """``Client`` for asyncio programs: ``await client.authenticate()``,
    ``await client.push_data(table_name, data)``; use it with ``async with``."""

    def __init__(
        self,
        client_id: int,
        api_key: str,
        *,
        url: str | None = None,
        concurrency: int = 4,
        gzip: bool = False,
        retry: Retry | None = None,
        timeout: float = 60.0,
        max_points: int = 100,
        max_bytes: int = 5 * 1024 * 1024,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            client_id,
            api_key,
            url=url,
            concurrency=concurrency,
            gzip=gzip,
            retry=retry,
            max_points=max_points,
            max_bytes=max_bytes,
        )
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, step: Send) -> Reply:
        try:
            response = await self._http.request(
                step.method, step.url, headers=step.headers, content=step.content
            )
        except httpx.TransportError as exc:
            return no_reply(exc)
        return reply_of(response)

    async def authenticate(self) -> bool:
        """True if the key may push data for this client."""
        return authenticated((await drive(self._auth_steps(None), self._send))[0])

    async def authenticateWithAPI(self, base_url: str | None = None) -> Answer:  # the original name
        reply, _ = await drive(self._auth_steps(base_url), self._send)
        return Answer(0, reply.status, reply.content)

    async def push_data(
        self,
        table_name: str,
        data: Any,
        base_url: str | None = None,
        *,
        progress: Progress | None = None,
        keep_answers: bool = True,
    ) -> PushSummary:
        """As ``Client.push_data``; ``data`` may also be an async iterable."""
        records = data if isinstance(data, AsyncIterable) else as_records(data)
        pushing = self._pushing(table_name, base_url, progress, keep_answers)
        running: dict[asyncio.Task[Outcome], Batch] = {}
        try:
            async with aclosing(abatches(records, Batcher(self.max_points, self.max_bytes))) as source:
                async for batch in source:
                    while running and not pushing.may_start(batch, len(running)):
                        await _collect(pushing, running, asyncio.FIRST_COMPLETED)
                    if pushing.stopped:
                        break
                    running[asyncio.ensure_future(drive(pushing.steps(batch), self._send))] = batch
                    _reap(pushing, {t for t in running if t.done()}, running)  # done already
        except asyncio.CancelledError:
            for task in running:
                task.cancel()
            raise
        finally:
            while running:  # what was sent is waited for, also on an error
                await _collect(pushing, running, asyncio.ALL_COMPLETED)
        return pushing.result()


async def _collect(pushing: Pushing, running: dict[asyncio.Task[Outcome], Batch], when: str) -> None:
    done, _ = await asyncio.wait(running, return_when=when)
    _reap(pushing, done, running)


def _reap(
    pushing: Pushing, done: set[asyncio.Task[Outcome]], running: dict[asyncio.Task[Outcome], Batch]
) -> None:
    for task in done:
        batch = running.pop(task)
        if not task.cancelled():
            pushing.finish(batch, task.result())
