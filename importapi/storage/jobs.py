"""Queued pushes and their answers: from the thread that applied them to the event loop or
the thread waiting for each, once per group rather than once per push."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from importapi.errors import ServerError
from importapi.push import Push, PushResult

log = logging.getLogger("importapi.storage")

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


def rows_of(push: Push) -> int:
    """The data points of a push, over all its tables."""
    return sum(len(batch.points) for batch in push.batches)


class Groups:
    """Pushes queued for at most ``running`` threads of an executor, each of which takes the
    pushes waiting for one client (up to ``most`` of them, or ``most_rows`` rows) and applies
    them as one group, so that under load a transaction's cost (its round trips, its commit,
    the hand-overs of Python's lock) is shared by several pushes.

    A push that finds no thread at work starts one at once: without load, groups are of one
    push and nothing waits. While one is at work, another starts for a client that has no
    group at work, and otherwise only once ``second_rows`` rows wait: a transaction of its
    own is worth its cost for that many rows, and groups under load stay large instead of
    splitting into many small ones."""

    def __init__(
        self,
        executor: Executor,
        apply: Callable[[list[Job]], None],
        *,
        running: int,
        most: int,
        most_rows: int,
        second_rows: int,
    ) -> None:
        self._executor = executor
        self._apply = apply
        self._limit = running
        self._most = most
        self._most_rows = most_rows
        self._second_rows = second_rows
        self._pending: deque[tuple[Job, int]] = deque()
        self._waiting_rows = 0
        self._lock = threading.Lock()
        self._running = 0
        self._at_work: Counter[int] = Counter()  # the clients whose groups are being applied

    def put(self, job: Job) -> None:
        size = rows_of(job.push)
        with self._lock:
            self._pending.append((job, size))
            self._waiting_rows += size
            if not self._wanted(self._running):
                return
            self._running += 1
        try:
            self._executor.submit(self._drain)
        except RuntimeError:  # the executor is shut down: the server is stopping
            with self._lock:
                self._running -= 1
                if (job, size) not in self._pending:
                    return  # a thread still at work took it: it will be answered
                self._pending.remove((job, size))
                self._waiting_rows -= size
            raise

    def _wanted(self, others: int) -> bool:
        """Should a thread take pushes, ``others`` being at work besides it? Yes when none
        is, when enough rows wait, or when the next push's client has no group at work
        (waiting would not make its group any larger)."""
        if not self._pending or others >= self._limit:
            return False
        if others == 0 or self._waiting_rows >= self._second_rows:
            return True
        return self._pending[0][0].push.client_id not in self._at_work

    def _take(self) -> list[Job]:
        pending = self._pending
        first, rows = pending.popleft()
        group = [first]
        client = first.push.client_id
        while (
            pending
            and len(group) < self._most
            and rows + pending[0][1] <= self._most_rows
            and pending[0][0].push.client_id == client
        ):
            job, size = pending.popleft()
            group.append(job)
            rows += size
        self._waiting_rows -= rows
        self._at_work[client] += 1
        return group

    def _drain(self) -> None:
        group: list[Job] = []
        while True:
            with self._lock:
                if group:
                    self._at_work -= Counter((group[0].push.client_id,))
                if not self._wanted(self._running - 1):
                    self._running -= 1
                    return
                group = self._take()
            try:
                self._apply(group)
            except Exception:  # a thread must outlive any one group, and answer it
                log.exception("a group of %d pushes failed", len(group))
                answer([(job, ServerError()) for job in group])
