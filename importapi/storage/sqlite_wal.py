"""The background checkpoints of a client file's WAL, so a commit never waits for them."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from importapi.storage.sqlite_sql import connect

log = logging.getLogger("importapi.storage")

# Once the WAL holds this many frames (32 MiB of 4 KiB pages), the writer finishes the next
# background checkpoint so that the WAL starts over (see _Checkpointer); below it, the WAL
# is left to grow and the writer spends nothing on checkpoints.
RESTART_WAL_FRAMES = 8192
# Before asking the writer to finish, the checkpointer copies again what was committed while
# its last copy ran, until that was at most SHORT_TAIL_FRAMES (a push or two) or it has tried
# CHASES times (a writer at full speed commits faster than a copy shrinks the tail).
SHORT_TAIL_FRAMES = 256
CHASES = 12


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
                frames = _checkpoint(conn)
                if frames >= RESTART_WAL_FRAMES:
                    _chase(conn, frames)
                    self.caught_up.set()
            except sqlite3.Error:
                log.warning("checkpoint of %s failed; the next one will retry", self.path.name, exc_info=True)
            self.stopping.wait(self.interval)
        if conn is not None:
            conn.close()


def _checkpoint(conn: sqlite3.Connection) -> int:
    """A PASSIVE checkpoint; the frames the WAL holds."""
    _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


def _chase(conn: sqlite3.Connection, frames: int) -> None:
    """Checkpoint again while the last checkpoint left more than a short tail behind it."""
    for _ in range(CHASES):
        before, frames = frames, _checkpoint(conn)
        if frames - before <= SHORT_TAIL_FRAMES:  # fewer frames: the WAL started over meanwhile
            return
