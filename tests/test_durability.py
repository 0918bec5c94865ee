"""Durability under SIGKILL, the short form of ``bench/soak.py`` (``make soak`` is the long one).

Pushers keep writing to the real server process while it is killed at random moments (after
a random number of acknowledged requests) and restarted. After every kill, before the
restart, the warehouse must hold every acknowledged group at its last acknowledged value (or
at a later one whose answer the kill swallowed), no request half applied, and nothing of a
refused request.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.soak import Harness, ProcessTarget, rss_kib
from tests.helpers import Server, start_server, wait_until

pytestmark = pytest.mark.e2e


class KillableServer:
    """The suite's real server process (``start_server``), restarted on the same warehouse."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "warehouse"
        self.database = f"sqlite:///{self.data_dir}"
        self.server: Server | None = None
        self.starts = 0

    def start(self) -> str:
        self.starts += 1
        self.server = start_server(self.data_dir, self.tmp_path / f"server-{self.starts}.log")
        return self.server.base

    def kill(self) -> None:
        if self.server is not None:
            self.server.process.kill()  # SIGKILL: no shutdown, no flush, no goodbye
            self.server.process.wait()
            self.server = None

    def pid(self) -> int | None:
        return self.server.process.pid if self.server else None


@pytest.fixture
def killable(tmp_path: Path):  # type: ignore[no-untyped-def]
    target = KillableServer(tmp_path)
    yield target
    target.kill()


def test_every_acknowledged_push_survives_sigkill_and_none_is_half_applied(
    database: str, tmp_path: Path
) -> None:
    """On every backend: the real ``importapi serve --database URL``, SIGKILLed three times."""
    target = ProcessTarget(database, tmp_path / "server.log", env={"IMPORTAPI_ACCESS_LOG": "0"})
    harness = Harness(
        target, database, clients=2, pushers_per_client=2, groups=12, group_size=8, bad_ratio=0.1, seed=7
    )
    rng = random.Random(7)
    harness.start()
    try:
        for _ in range(3):
            goal = harness.acked() + rng.randint(10, 40)
            wait_until(
                lambda goal=goal: harness.acked() >= goal, timeout=120, what=f"{goal} acknowledged pushes"
            )
            harness.kill_and_restart()
        goal = harness.acked() + 20
        wait_until(lambda: harness.acked() >= goal, timeout=120, what="pushes after the last restart")
        harness.sample_rss()
        harness.stop()
    finally:
        target.kill()
    report = harness.report()
    assert report["kills"] == 3
    assert report["acknowledged_requests"] >= 50
    assert report["problems"] == []
    assert report["lost_acknowledged"] == report["half_applied"] == report["phantom"] == 0
    assert report["unexpected_5xx"] == report["unexpected_4xx"] == report["unexpected_errors"] == 0
    assert report["memory"]["peak_mib_per_life"], "the server's memory was sampled"


def test_the_harness_notices_a_lost_acknowledged_push(killable: KillableServer) -> None:
    """The check is not vacuous: delete acknowledged rows behind the server's back (SQLite,
    through the suite's own server fixture)."""
    harness = Harness(
        killable,
        killable.database,
        clients=1,
        pushers_per_client=1,
        groups=3,
        group_size=4,
        bad_ratio=0.0,
        seed=3,
    )
    harness.start()
    try:
        wait_until(lambda: harness.acked() >= 10, timeout=60, what="10 acknowledged pushes")
        harness.stop()
    finally:
        killable.kill()
    pusher = harness.pushers[0]
    import sqlite3

    conn = sqlite3.connect(killable.data_dir / f"client_{pusher.client_id}.sqlite3")
    with conn:
        conn.execute(f'DELETE FROM "{pusher.table}" WHERE grp = 0 AND id % 4 = 1')  # one row of group 0
        conn.execute(f'DELETE FROM "{pusher.table}" WHERE grp = 1')  # all of group 1
    conn.close()
    harness.verify()
    assert harness.counts.half_applied == 1
    assert harness.counts.lost_acked == 1


def test_rss_of_a_live_and_a_missing_process() -> None:
    import os

    assert (rss_kib(os.getpid()) or 0) > 0
    assert rss_kib(2**22 + 12345) is None
