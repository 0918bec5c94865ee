"""Queued pushes and their answers: from the thread that applied them to the event loop or
the thread waiting for each, once per group rather than once per push."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from dataclasses import dataclass

from importapi.push import Push, PushResult

Results = list[PushResult]
Outcome = Results | BaseException


@dataclass
class Job:
    """A queued push, answered through a thread's future or an event loop's."""

    push: Push
    future: Future[Results] | None
    loop: asyncio.AbstractEventLoop | None = None
    answer: asyncio.Future[Results] | None = None


def _deliver(outcomes: list[tuple[asyncio.Future[Results], Outcome]]) -> None:
    """On the event loop: answer every push of a group at once."""
    for answer, outcome in outcomes:
        if answer.done():  # the request was cancelled (its client went away)
            continue
        if isinstance(outcome, BaseException):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)


def answer(jobs: list[tuple[Job, Outcome]]) -> None:
    """Resolve each job's future; pushes from event loops with one call per loop, not one
    wake-up and hand-over per push."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Results], Outcome]]] = {}
    for job, outcome in jobs:
        if job.loop is not None and job.answer is not None:
            by_loop.setdefault(job.loop, []).append((job.answer, outcome))
        elif job.future is not None and not job.future.done():
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
    for loop, outcomes in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver, outcomes)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass
