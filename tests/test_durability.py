"""Durability under SIGKILL, the short form of ``bench/soak.py`` (``make soak`` is the long one).

Pushers keep writing to the real server process, on the RJMetrics route and the Stitch batch
route, while it is killed at random moments (after a random number of acknowledged requests
of each) and restarted. After every kill, before the restart, the warehouse must hold every
acknowledged group at its last acknowledged value (or at a later one whose answer the kill
swallowed), no request half applied (a batch: all its groups, and their subtable rows, or
none), every subtable row that of its parent row's record, and nothing of a refused request
or a stale batch.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.soak import Harness, ProcessTarget, StitchPusher, batch_children, rss_kib, torn_batches
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
    """On every backend: the real ``importapi serve --database URL``, SIGKILLed three times,
    with two RJMetrics pushers and one Stitch batch pusher for each of two clients."""
    target = ProcessTarget(database, tmp_path / "server.log", env={"IMPORTAPI_ACCESS_LOG": "0"})
    harness = Harness(
        target,
        database,
        clients=2,
        pushers_per_client=2,
        stitch_pushers=2,
        groups=12,
        group_size=8,
        batch_group_size=50,
        batch_groups=(4, 10),
        bad_ratio=0.1,
        seed=7,
    )
    rng = random.Random(7)
    harness.start()
    try:
        for _ in range(3):
            wait_for_more(harness, rng.randint(10, 40), rng.randint(2, 6))
            harness.kill_and_restart()
        wait_for_more(harness, 20, 4)
        wait_until(
            lambda: harness.counts.batches_refused and harness.counts.stale_batches_acked,
            timeout=120,
            what="a refused batch and a stale one",
        )
        harness.sample_rss()
        harness.stop()
    finally:
        target.kill()
    report = harness.report()
    assert report["kills"] == 3
    assert report["acknowledged_requests"] >= 50
    assert report["problems"] == []
    assert report["lost_acknowledged"] == report["half_applied"] == report["phantom"] == 0
    assert report["subtable_mismatch"] == report["wrong_answer"] == 0
    assert report["unexpected_5xx"] == report["unexpected_4xx"] == report["unexpected_errors"] == 0
    assert report["batch_route"]["acknowledged_batches"] >= 10
    assert report["batch_route"]["acknowledged_records"] >= 10 * 4 * 50
    assert report["memory"]["peak_mib_per_life"], "the server's memory was sampled"


def wait_for_more(harness: Harness, pushes: int, batches: int) -> None:
    """Until ``pushes`` more RJMetrics pushes and ``batches`` more batches are acknowledged."""
    push_goal = harness.acked("rjmetrics") + pushes
    batch_goal = harness.acked("batch") + batches
    wait_until(
        lambda: harness.acked("rjmetrics") >= push_goal and harness.acked("batch") >= batch_goal,
        timeout=120,
        what=f"{push_goal} acknowledged pushes and {batch_goal} acknowledged batches",
    )


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


def test_the_harness_notices_a_torn_batch_and_wrong_subtable_rows(killable: KillableServer) -> None:
    """The batch route's checks are not vacuous either: behind the server's back, delete a
    row of a group, make a batch applied in one of its groups and not in another, and give
    subtables a row merged into a parent's items and a row of no parent (SQLite)."""
    harness = Harness(
        killable,
        killable.database,
        clients=1,
        pushers_per_client=0,
        stitch_pushers=1,
        groups=6,
        batch_group_size=10,
        batch_groups=(2, 3),
        bad_ratio=0.0,
        seed=3,
    )
    harness.start()
    try:
        wait_until(lambda: harness.acked("batch") >= 15, timeout=60, what="15 acknowledged batches")
        harness.stop()
    finally:
        killable.kill()
    assert harness.counts.problems == []
    pusher = harness.pushers[0]
    assert isinstance(pusher, StitchPusher)
    import sqlite3

    conn = sqlite3.connect(killable.data_dir / f"client_{pusher.client_id}.sqlite3")
    held = dict(conn.execute(f'SELECT id, req FROM "{pusher.table}"').fetchall())
    req, (torn, *others) = max(
        (r, g) for r, g in pusher.touched.items() if len(g) > 1 and all(pusher.possible[x] == {r} for x in g)
    )
    plain = next(
        k
        for k, r in held.items()
        if k // 10 not in (torn, *others) and batch_children(pusher.n, r, k) == (set(), set())
    )
    with_items = next(
        k for k, r in held.items() if k // 10 not in (torn, plain // 10) and batch_children(pusher.n, r, k)[0]
    )
    with conn:
        conn.execute(f'DELETE FROM "{pusher.table}" WHERE id = ?', (plain,))  # one row of a group
        for table in (pusher.table, f"{pusher.table}__items", f"{pusher.table}__items__marks"):
            source = "id" if table == pusher.table else "_sdc_source_key_id"
            conn.execute(f'DELETE FROM "{table}" WHERE {source} / 10 = ?', (torn,))
        conn.execute(
            f'INSERT INTO "{pusher.table}__items" (_sdc_source_key_id, _sdc_level_0_id, sku, qty, _sdc_sequence)'
            " VALUES (?, 7, 'older', 7, 1), (9999, 0, 'orphan', 0, 1)",
            (with_items,),
        )
    conn.close()
    pusher.possible[torn] = {None, req}  # as if request ``req`` had made that group, unanswered
    harness.verify()
    assert harness.counts.half_applied == 2, harness.counts.problems
    assert harness.counts.subtable_mismatch == 2, harness.counts.problems
    assert harness.counts.lost_acked == harness.counts.phantom == 0, harness.counts.problems


def test_a_batch_is_torn_when_one_group_holds_it_and_another_does_not() -> None:
    touched = {5: (0, 1, 2), 6: (1,), 7: (3,)}
    observed = {0: 5, 1: 6, 2: 4, 3: None}  # 5 landed in group 0, its group 2 holds 4; 7 never landed
    assert torn_batches(observed, touched) == [(5, 2)]
    assert torn_batches({0: 5, 1: None, 2: 5}, touched) == [(5, 1)]


def test_rss_of_a_live_and_a_missing_process() -> None:
    import os

    assert (rss_kib(os.getpid()) or 0) > 0
    assert rss_kib(2**22 + 12345) is None
