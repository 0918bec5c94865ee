"""The asyncio client, ``AsyncClient``: the same pushes as ``Client``, awaited.

It runs the very steps the sync client runs (``importapi.client._core``); only the
waiting differs. ``data`` may also be an async iterable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable
from contextlib import aclosing
from typing import Any, Self

import httpx

from importapi.client import _core
from importapi.client._batching import Batch, Batcher, abatches, as_records
from importapi.client._sync import no_reply, reply_of

Outcome = tuple[_core.Reply, int]


async def drive(steps: _core.Steps, send: Callable[[_core.Send], Awaitable[_core.Reply]]) -> Outcome:
    """Carry out a request's steps with ``await``."""
    step = _core.advance(steps, None)
    while isinstance(step, _core.Send | _core.Wait):
        if isinstance(step, _core.Send):
            step = _core.advance(steps, await send(step))
        else:
            await asyncio.sleep(step.seconds)
            step = _core.advance(steps, None)
    return step


class AsyncClient(_core.ClientBase):
    """``Client`` for asyncio programs: ``await client.authenticate()``,
    ``await client.push_data(table_name, data)``; use it with ``async with``."""

    def _open(self, transport: httpx.AsyncBaseTransport | None, timeout: float) -> None:
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, step: _core.Send) -> _core.Reply:
        try:
            response = await self._http.request(
                step.method, step.url, headers=step.headers, content=step.content
            )
        except httpx.TransportError as exc:
            return no_reply(exc)
        return reply_of(response)

    async def authenticate(self) -> bool:
        """True if the key may push data for this client."""
        return _core.authenticated((await drive(self._auth_steps(None), self._send))[0])

    async def authenticateWithAPI(self, base_url: str | None = None) -> _core.Answer:  # the original name
        reply, _ = await drive(self._auth_steps(base_url), self._send)
        return _core.Answer(0, reply.status, reply.content)

    async def push_data(
        self,
        table_name: str,
        data: Any,
        base_url: str | None = None,
        *,
        progress: _core.Progress | None = None,
        keep_answers: bool = True,
    ) -> _core.PushSummary:
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


async def _collect(pushing: _core.Pushing, running: dict[asyncio.Task[Outcome], Batch], when: str) -> None:
    done, _ = await asyncio.wait(running, return_when=when)
    _reap(pushing, done, running)


def _reap(
    pushing: _core.Pushing, done: set[asyncio.Task[Outcome]], running: dict[asyncio.Task[Outcome], Batch]
) -> None:
    for task in done:
        batch = running.pop(task)
        if not task.cancelled():
            pushing.finish(batch, task.result())
