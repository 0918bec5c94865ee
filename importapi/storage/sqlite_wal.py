"""A client file's WAL, looked after off the writer thread: its flush to disk after each
commit (``Flusher``) and its copy back into the file (``Checkpointer``), so a commit waits
for neither."""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from importapi.storage.sqlite_sql import connect

log = logging.getLogger("importapi.storage")

# Once the WAL holds this many frames (16 MiB of 4 KiB pages), the writer finishes the next
# background checkpoint so that the WAL starts over (see Checkpointer); below it, the WAL
# is left to grow and the writer spends nothing on checkpoints. Each start over slows the
# flushes around it for a few milliseconds; from a longer WAL, for longer: at half of the
# full rate, 8192 frames (32 MiB) gave a p99 of 17.4/14.4/15.3 ms, 4096 13.7/11.2/11.6 and
# 32768 22.4 (the full rate the same; docs/decisions.md).
RESTART_WAL_FRAMES = 4096
# Before asking the writer to finish, the checkpointer copies again what was committed while
# its last copy ran, until that was at most SHORT_TAIL_FRAMES (a push or two) or it has tried
# CHASES times (a writer at full speed commits faster than a copy shrinks the tail).
SHORT_TAIL_FRAMES = 256
CHASES = 12


Then = Callable[[OSError | None], None]


def flush(fd: int) -> None:
    """Put what was written to the file on disk (the flush SQLite's commit does with FULL)."""
    os.fdatasync(fd)


class Flusher:
    """Makes the writer's commits durable, then acknowledges them, on a thread of its own.

    With ``synchronous = FULL`` SQLite flushes the WAL to disk inside each COMMIT, and the
    writer waits for the disk before it can start the next group. Instead the writer commits
    with ``synchronous = NORMAL`` (the frames written, not flushed) and hands the group's
    answer to this thread, which flushes the WAL and only then answers: a push is still
    acknowledged only once its commit is on disk, while the writer is already applying the
    next group, and the commits that queue up during a flush share the next one. A commit is
    visible to readers a flush before it is acknowledged. SQLite keeps the WAL consistent
    with ``NORMAL`` (it flushes before each checkpoint and when the WAL starts over), so a
    crash loses at most commits that were never acknowledged.
    """

    def __init__(self, path: Path) -> None:
        self.wal = path.with_name(path.name + "-wal")
        self.pending: queue.SimpleQueue[Then | None] = queue.SimpleQueue()
        self.lock = threading.Lock()  # one flush at a time, and the descriptor with it
        # opened at the first flush and kept: SQLite removes a WAL only when the file's last
        # connection closes, and the writer's stays open for as long as this flusher lives
        self.fd: int | None = None
        self.thread = threading.Thread(target=self._run, name=f"flush-{path.stem}", daemon=True)
        self.thread.start()

    def after_flush(self, then: Then) -> None:
        """Call ``then(None)`` once everything committed so far is on disk (``then(error)`` if
        the flush failed)."""
        self.pending.put(then)

    def flushing(self) -> bool:
        """Whether a flush is under way."""
        return self.lock.locked()

    def flush_now(self) -> OSError | None:
        """Flush on the calling thread (the writer, with no other push waiting, need not hand
        its group over); the error if it failed."""
        with self.lock:
            try:
                if self.fd is None:
                    self.fd = os.open(self.wal, os.O_RDONLY)
                flush(self.fd)
            except OSError as exc:
                log.error("flushing %s failed: its pushes are refused", self.wal.name, exc_info=True)
                return exc
        return None

    def stop(self) -> None:
        """Flush and answer what is pending, then end the thread."""
        self.pending.put(None)
        self.thread.join(timeout=30)
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            waiting = [self.pending.get()]
            while True:
                try:
                    waiting.append(self.pending.get_nowait())
                except queue.Empty:
                    break
            stopping = None in waiting
            thens = [then for then in waiting if then is not None]
            if not thens:
                continue
            error = self.flush_now()
            for then in thens:
                then(error)


class Checkpointer:
    """Copies the WAL back into the database file in the background.

    The writer turns SQLite's automatic checkpoint off, so a commit never pays for copying
    pages; this thread runs a PASSIVE checkpoint (which never blocks the writer) at most
    every ``interval`` seconds while commits keep coming. The WAL starts again from its first
    frame only once every frame in it has been copied back: a writer that never pauses commits
    more frames while each checkpoint runs, so once the WAL holds ``RESTART_WAL_FRAMES``,
    this thread copies those again until they are few (``_chase``), then ``caught_up`` asks
    the writer to copy that short tail itself (``sqlite_writer.ClientWriter._finish_checkpoint``);
    without it the WAL only grows. The writer's copy holds up its commits, and what it costs
    is mostly the flush of the pages it writes: the shorter the tail, the shorter the pause.
    """

    def __init__(self, path: Path, synchronous: str, interval: float = 0.5) -> None:
        self.path, self.synchronous, self.interval = path, synchronous, interval
        self.dirty = threading.Event()
        self.stopping = threading.Event()
        self.caught_up = threading.Event()  # the WAL has grown long: the writer finishes a checkpoint
        self.thread = threading.Thread(target=self._run, name=f"checkpoint-{path.stem}", daemon=True)
        self.thread.start()

    def poke(self) -> None:
        self.dirty.set()

    def stop(self) -> None:
        self.stopping.set()
        self.dirty.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self.stopping.is_set():
            self.dirty.wait()
            self.dirty.clear()
            try:
                conn = conn or connect(self.path, self.synchronous)
                frames = checkpoint(conn)
                if frames >= RESTART_WAL_FRAMES:
                    _chase(conn, frames)
                    self.caught_up.set()
            except sqlite3.Error:
                log.warning("checkpoint of %s failed; the next one will retry", self.path.name, exc_info=True)
            self.stopping.wait(self.interval)
        if conn is not None:
            conn.close()


def checkpoint(conn: sqlite3.Connection) -> int:
    """A PASSIVE checkpoint; the frames the WAL holds."""
    _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


def _chase(conn: sqlite3.Connection, frames: int) -> None:
    """Checkpoint again while the last checkpoint left more than a short tail behind it."""
    for _ in range(CHASES):
        before, frames = frames, checkpoint(conn)
        if frames - before <= SHORT_TAIL_FRAMES:  # fewer frames: the WAL started over meanwhile
            return
