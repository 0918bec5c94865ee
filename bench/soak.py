"""Durability under SIGKILL: push continuously, kill the server at random moments, check.

Several pushers (threads; each owns one table of one client) send requests in a loop, one
at a time. A request writes a whole *group* of data points, all stamped with the request's
sequence number, so a request that was half applied shows as a group whose rows disagree.
Every so often a request carries one bad data point at its end and must be refused whole.

For every group the harness knows which states the warehouse may hold: the last
acknowledged request's, or that of a later request whose answer never came (the server
died first). After each SIGKILL, before the restart, and at the end it reads every table
and counts:

    lost acknowledged   a group older than its last 201 (or missing after one)
    half applied        a group whose rows come from different requests, or are missing
    phantom             a group holding a refused request, or one never sent
    unexpected 5xx      any 5xx answer
    unexpected errors   no answer while the server was not being killed

and it samples the server's resident memory (RSS) as it goes. The long form ends with a
calm stretch without kills, to see whether memory stops growing:

    python -m bench.soak --minutes 12 --calm-minutes 4       (make soak)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from importapi.storage import Storage, open_storage


class Target(Protocol):
    """A server the harness can start and SIGKILL."""

    def start(self) -> str:
        """Start the server, wait until it answers, return its base URL."""

    def kill(self) -> None:
        """SIGKILL the server and wait for it to be gone."""

    def pid(self) -> int | None: ...


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process from /proc (Linux), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def wait_until_up(base: str, proc: subprocess.Popen[Any] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} while starting")
        try:
            if httpx.get(base + "/", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server at {base} did not start within {timeout} s")
        time.sleep(0.05)


class ProcessTarget:
    """``python -m importapi serve`` in a session of its own, SIGKILLed as a group."""

    def __init__(
        self, database: str, log_path: Path, workers: int = 1, env: dict[str, str] | None = None
    ) -> None:
        self.database = database
        self.log_path = log_path
        self.workers = workers
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "importapi",
                    "serve",
                    "--port",
                    str(port),
                    "--workers",
                    str(self.workers),
                    "--database",
                    self.database,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base, self.proc)
        return base

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


@dataclass
class Counts:
    requests: int = 0
    acked: int = 0
    acked_points: int = 0
    refused_as_expected: int = 0
    unknown: int = 0
    lost_acked: int = 0
    half_applied: int = 0
    phantom: int = 0
    unexpected_5xx: int = 0
    unexpected_4xx: int = 0
    unexpected_errors: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.problems) < 50:
            self.problems.append(f"{kind}: {text}")


class Pusher:
    """One table of one client, pushed by one thread, one request at a time."""

    def __init__(self, harness: Harness, n: int, client_id: int, key: str, rng: random.Random) -> None:
        self.h = harness
        self.n = n
        self.client_id = client_id
        self.key = key
        self.table = f"soak_{n}"
        self.rng = rng
        self.seq = 0
        self.lock = threading.Lock()
        # group -> the request sequence numbers the warehouse may show (None: no rows yet)
        self.possible: dict[int, set[int | None]] = {}

    def points(self, group: int, seq: int, bad: bool) -> list[dict[str, Any]]:
        size = self.h.group_size
        out: list[dict[str, Any]] = []
        for j in range(size):
            point: dict[str, Any] = {
                "keys": ["id"],
                "id": group * size + j,
                "grp": group,
                "seq": seq,
                "v": f"{self.n}:{seq}:{j}",
                "pad": "x" * self.rng.randrange(0, 200),
            }
            # The schema keeps changing for a while (new columns), then one column widens.
            if seq <= 30:
                point[f"c{seq % 15}"] = seq
            point["num"] = seq if seq < 60 else seq + 0.5
            out.append(point)
        if bad:
            out.append({"id": -1, "grp": group, "seq": seq})  # no "keys": the request must fail whole
        return out

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.h.stopping.is_set():
                if not self.h.up.wait(timeout=0.5):
                    continue
                self.one(http)

    def one(self, http: httpx.Client) -> None:
        self.seq += 1
        seq = self.seq
        groups = min(self.h.groups, 1 + seq // 4)  # new groups appear over time: inserts
        group = self.rng.randrange(groups)
        bad = self.rng.random() < self.h.bad_ratio
        body = self.points(group, seq, bad)
        with self.lock:
            state = self.possible.setdefault(group, {None})
            if not bad:
                state.add(seq)  # it may land from the moment it is sent
        url = f"{self.h.base}/v2/client/{self.client_id}/table/{self.table}/data"
        counts = self.h.counts
        kills_before = self.h.kills
        try:
            answer = http.post(url, json=body, headers={"Authorization": f"Bearer {self.key}"})
        except httpx.HTTPError as exc:
            with self.h.counts_lock:
                counts.requests += 1
                counts.unknown += 1
                if not self.h.killing.is_set() and self.h.kills == kills_before:
                    counts.problem("unexpected_errors", f"{self.table} seq {seq}: {exc!r}")
            self.h.up.wait(timeout=60)  # the harness restarts the server
            return
        with self.lock, self.h.counts_lock:
            counts.requests += 1
            status = answer.status_code
            if status == 201 and not bad:
                self.possible[group] = {seq}
                counts.acked += 1
                counts.acked_points += len(body)
            elif status == 400 and bad:
                counts.refused_as_expected += 1
            elif status >= 500:
                counts.unknown += 1
                counts.problem("unexpected_5xx", f"{self.table} seq {seq}: {status} {answer.text[:200]}")
            else:
                counts.problem(
                    "unexpected_4xx", f"{self.table} seq {seq} (bad={bad}): {status} {answer.text[:200]}"
                )

    def verify(self, storage: Storage) -> None:
        """Compare the warehouse with what may be there; then narrow to what is."""
        size = self.h.group_size
        counts = self.h.counts
        rows: list[tuple[Any, ...]] = []
        if self.table in {t.schema.name for t in storage.warehouse.tables(self.client_id)}:
            _, rows = storage.warehouse.query(self.client_id, f'SELECT id, grp, seq, v FROM "{self.table}"')
        by_group: dict[int, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_group.setdefault(row[1], []).append(row)
        with self.lock, self.h.counts_lock:
            for group in set(by_group) | set(self.possible):
                possible = self.possible.get(group, {None})
                found = by_group.get(group, [])
                seqs = {r[2] for r in found}
                where = f"{self.table} group {group}"
                if not found:
                    if None not in possible:
                        counts.problem("lost_acked", f"{where}: no rows; expected seq in {possible}")
                    continue
                if len(seqs) != 1 or len(found) != size:
                    counts.problem("half_applied", f"{where}: {len(found)} rows from requests {sorted(seqs)}")
                    self.possible[group] = possible | seqs
                    continue
                (seq,) = seqs
                bad_values = [r for r in found if r[3] != f"{self.n}:{seq}:{r[0] - group * size}"]
                if bad_values:
                    counts.problem("half_applied", f"{where}: values {bad_values[:2]} differ from seq {seq}")
                if seq not in possible:
                    known = max((s for s in possible if s is not None), default=0)
                    kind = "lost_acked" if seq < known else "phantom"
                    counts.problem(
                        kind, f"{where}: holds seq {seq}; expected one of {sorted(possible, key=str)}"
                    )
                self.possible[group] = {seq}


class Harness:
    def __init__(
        self,
        target: Target,
        database: str,
        *,
        clients: int = 2,
        pushers_per_client: int = 2,
        groups: int = 40,
        group_size: int = 10,
        bad_ratio: float = 0.07,
        seed: int = 0,
    ) -> None:
        self.target = target
        self.database = database
        self.groups = groups
        self.group_size = group_size
        self.bad_ratio = bad_ratio
        self.rng = random.Random(seed)
        self.counts = Counts()
        self.counts_lock = threading.Lock()
        self.up = threading.Event()
        self.killing = threading.Event()
        self.stopping = threading.Event()
        self.kills = 0
        self.base = ""
        self.rss: list[tuple[float, int, int]] = []  # (seconds since start, life, KiB)
        self.started = time.monotonic()
        self.pushers: list[Pusher] = []
        with open_storage(database) as storage:
            for c in range(clients):
                client = storage.create_client(f"soak-{c}")
                _, key = storage.catalog.create_key(client.client_id)
                for _ in range(pushers_per_client):
                    n = len(self.pushers)
                    self.pushers.append(
                        Pusher(self, n, client.client_id, key, random.Random(seed * 1000 + n))
                    )
        self.threads = [
            threading.Thread(target=p.run, name=f"pusher-{p.n}", daemon=True) for p in self.pushers
        ]

    def start(self) -> None:
        self.base = self.target.start()
        self.up.set()
        for t in self.threads:
            t.start()

    def acked(self) -> int:
        with self.counts_lock:
            return self.counts.acked

    def kill_and_restart(self) -> None:
        self.killing.set()
        self.up.clear()
        self.target.kill()
        self.kills += 1
        self.verify()  # the state the crash left, before anything else touches it
        self.base = self.target.start()
        self.killing.clear()
        self.up.set()

    def verify(self) -> None:
        with open_storage(self.database) as storage:
            for p in self.pushers:
                p.verify(storage)

    def sample_rss(self) -> None:
        pid = self.target.pid()
        kib = rss_kib(pid) if pid else None
        if kib is not None:
            self.rss.append((round(time.monotonic() - self.started, 1), self.kills, kib))

    def stop(self) -> None:
        self.stopping.set()
        self.up.set()
        for t in self.threads:
            t.join(timeout=60)
        self.verify()

    def run_for(
        self, seconds: float, *, next_kill: Callable[[], float] | None, sample_every: float = 5.0
    ) -> None:
        """Push for ``seconds``; kill whenever ``next_kill()`` seconds have passed (None: never)."""
        end = time.monotonic() + seconds
        kill_at = time.monotonic() + next_kill() if next_kill else float("inf")
        sample_at = time.monotonic()
        while (now := time.monotonic()) < end:
            if now >= sample_at:
                self.sample_rss()
                sample_at = now + sample_every
            if now >= kill_at:
                self.kill_and_restart()
                kill_at = time.monotonic() + next_kill() if next_kill else float("inf")
            time.sleep(0.05)

    def report(self) -> dict[str, Any]:
        c = self.counts
        elapsed = time.monotonic() - self.started
        return {
            "seconds": round(elapsed, 1),
            "kills": self.kills,
            "requests": c.requests,
            "acknowledged_requests": c.acked,
            "acknowledged_points": c.acked_points,
            "points_per_second": round(c.acked_points / elapsed, 1) if elapsed else 0,
            "refused_as_expected": c.refused_as_expected,
            "unknown_outcome": c.unknown,
            "lost_acknowledged": c.lost_acked,
            "half_applied": c.half_applied,
            "phantom": c.phantom,
            "unexpected_5xx": c.unexpected_5xx,
            "unexpected_4xx": c.unexpected_4xx,
            "unexpected_errors": c.unexpected_errors,
            "problems": c.problems,
            "memory": memory_summary(self.rss, self.kills),
        }


def memory_summary(samples: list[tuple[float, int, int]], last_life: int) -> dict[str, Any]:
    """Peak RSS per process life, and how the last (calm) life grew over its second half."""
    peaks: dict[int, int] = {}
    for _, life, kib in samples:
        peaks[life] = max(peaks.get(life, 0), kib)
    last = [(t, kib) for t, life, kib in samples if life == last_life]
    summary: dict[str, Any] = {"peak_mib_per_life": [round(v / 1024, 1) for _, v in sorted(peaks.items())]}
    if len(last) >= 4:
        half = last[len(last) // 2 :]
        summary["last_life_mib"] = [round(k / 1024, 1) for _, k in last]
        summary["last_life_seconds"] = round(last[-1][0] - last[0][0], 1)
        summary["second_half_growth_mib"] = round((half[-1][1] - half[0][1]) / 1024, 1)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=12, help="whole run, calm stretch included")
    parser.add_argument("--calm-minutes", type=float, default=4, help="final stretch without kills")
    parser.add_argument(
        "--kill-every",
        type=float,
        nargs=2,
        default=(6, 16),
        metavar=("MIN", "MAX"),
        help="seconds between kills, drawn uniformly",
    )
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--pushers-per-client", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database", default=None, help="default: SQLite in a temporary folder")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="importapi-soak-"))
    database = args.database or f"sqlite:///{folder / 'warehouse'}"
    target = ProcessTarget(
        database, folder / "server.log", workers=args.workers, env={"IMPORTAPI_ACCESS_LOG": "0"}
    )
    harness = Harness(
        target, database, clients=args.clients, pushers_per_client=args.pushers_per_client, seed=args.seed
    )
    rng = random.Random(args.seed)
    low, high = args.kill_every
    print(
        f"soak: {args.minutes} min ({args.calm_minutes} calm) on {database}; log {target.log_path}",
        flush=True,
    )
    harness.start()
    try:
        harness.run_for((args.minutes - args.calm_minutes) * 60, next_kill=lambda: rng.uniform(low, high))
        print(f"soak: {harness.kills} kills so far; calm stretch", flush=True)
        harness.run_for(args.calm_minutes * 60, next_kill=None)
        harness.stop()
    finally:
        target.kill()
    report = harness.report()
    print(json.dumps(report, indent=2))
    bad = (
        report["lost_acknowledged"]
        + report["half_applied"]
        + report["phantom"]
        + report["unexpected_5xx"]
        + report["unexpected_4xx"]
        + report["unexpected_errors"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
