"""``jobs.Groups``: how queued pushes become groups, on a real thread pool.

The groups' work here is a function that records each group and, where a test says so,
waits for the test to let it go: what is tested is who takes which pushes, when, and that
every push is answered once.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from importapi.errors import ServerError
from importapi.push import Batch, Push
from importapi.storage.jobs import Groups, Job


def job(client_id: int = 1, rows: int = 1) -> Job:
    batch = Batch("t", ("id",), [{"id": i} for i in range(rows)])
    return Job(Push(client_id, [batch]), Future())


class Recorder:
    """Applies groups by recording them; with ``hold``, each group waits for ``go``."""

    def __init__(self, hold: bool = False) -> None:
        self.groups: list[list[Job]] = []
        self.started = threading.Semaphore(0)
        self.go = threading.Event()
        if not hold:
            self.go.set()
        self._lock = threading.Lock()

    def __call__(self, group: list[Job]) -> None:
        with self._lock:
            self.groups.append(group)
        self.started.release()
        assert self.go.wait(30)
        for j in group:
            assert j.future is not None
            j.future.set_result([])


@pytest.fixture
def executor() -> Any:
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


def groups(executor: ThreadPoolExecutor, apply: Any, **options: int) -> Groups:
    settings = {"running": 4, "most": 64, "most_rows": 1000, "second_rows": 100} | options
    return Groups(executor, apply, **settings)


def test_without_load_a_push_is_applied_at_once_on_its_own(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    queue = groups(executor, recorder)
    first = job()
    queue.put(first)
    assert first.future is not None
    first.future.result(timeout=10)
    second = job()
    queue.put(second)
    assert second.future is not None
    second.future.result(timeout=10)
    assert recorder.groups == [[first], [second]]


def test_pushes_queued_while_a_group_runs_make_the_next_group(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder(hold=True)
    queue = groups(executor, recorder)
    lead = job()
    queue.put(lead)
    assert recorder.started.acquire(timeout=10)
    waiting = [job(rows=10) for _ in range(9)]  # 90 rows: fewer than a second group needs
    for j in waiting:
        queue.put(j)
    recorder.go.set()
    for j in [lead, *waiting]:
        assert j.future is not None
        j.future.result(timeout=10)
    assert recorder.groups == [[lead], waiting]


def test_a_second_group_starts_once_enough_rows_wait(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder(hold=True)
    queue = groups(executor, recorder, second_rows=100)
    queue.put(job())
    assert recorder.started.acquire(timeout=10)
    queue.put(job(rows=60))
    assert not recorder.started.acquire(timeout=0.2)  # 60 rows wait: not yet
    queue.put(job(rows=40))
    assert recorder.started.acquire(timeout=10)  # 100 rows: a second group takes them
    assert [sum(len(j.push.batches[0].points) for j in g) for g in recorder.groups] == [1, 100]
    recorder.go.set()


def test_a_group_holds_one_client_and_at_most_its_limits(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder(hold=True)
    queue = groups(executor, recorder, running=1, most=3, most_rows=50)
    queue.put(job())
    assert recorder.started.acquire(timeout=10)
    queued = [
        job(1),
        job(1),
        job(2),
        job(2),
        job(1, rows=30),
        job(1, rows=30),
        job(1),
        job(1),
        job(1),
        job(1),
    ]
    for j in queued:
        queue.put(j)
    recorder.go.set()
    for j in queued:
        assert j.future is not None
        j.future.result(timeout=10)
    assert recorder.groups[1:] == [queued[0:2], queued[2:4], queued[4:5], queued[5:8], queued[8:10]]


def test_a_group_whose_work_fails_answers_every_push(executor: ThreadPoolExecutor) -> None:
    def broken(group: list[Job]) -> None:
        raise RuntimeError("broken")

    queue = groups(executor, broken)
    jobs = [job() for _ in range(3)]
    for j in jobs:
        queue.put(j)
    for j in jobs:
        assert j.future is not None
        with pytest.raises(ServerError):
            j.future.result(timeout=10)
    after = job()  # the queue goes on
    queue.put(after)
    assert after.future is not None
    with pytest.raises(ServerError):
        after.future.result(timeout=10)


def test_a_push_refused_while_the_executor_stops_is_never_applied() -> None:
    """A push that needs a thread of its own after the executor stopped is refused; the
    thread still at work must not apply it after all."""
    recorder = Recorder(hold=True)
    pool = ThreadPoolExecutor(max_workers=2)
    queue = groups(pool, recorder, second_rows=100)
    first = job()
    queue.put(first)
    assert recorder.started.acquire(timeout=10)
    pool.shutdown(wait=False)
    late = job(rows=100)  # enough rows waiting to want a second thread
    with pytest.raises(RuntimeError):
        queue.put(late)
    recorder.go.set()
    assert first.future is not None
    first.future.result(timeout=10)
    pool.shutdown(wait=True)
    assert recorder.groups == [[first]]
    assert late.future is not None and not late.future.done()


def test_a_push_of_an_idle_client_goes_beside_a_busy_one(executor: ThreadPoolExecutor) -> None:
    """Waiting would not make its group larger: it does not wait for rows to pile up."""
    recorder = Recorder(hold=True)
    queue = groups(executor, recorder, second_rows=100)
    first = job(client_id=1)
    queue.put(first)
    assert recorder.started.acquire(timeout=10)
    other = job(client_id=2)
    queue.put(other)
    assert recorder.started.acquire(timeout=5)  # a second thread, at once
    assert recorder.groups == [[first], [other]]
    recorder.go.set()
