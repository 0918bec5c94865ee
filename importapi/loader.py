"""The bulk loader behind ``importapi push``: records from files or stdin, to the server.

Reads CSV, JSON (one object, or an array streamed element by element) and JSON Lines,
streamed, and hands the records to ``importapi.client.Client``. For the records in flight
it remembers where each came from, so a refusal names input lines, and the last
acknowledged record gives the ``--skip`` that resumes the load after it.
"""

from __future__ import annotations

import csv
import math
import re
import shlex
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import ijson  # type: ignore[import-untyped]
import msgspec

from importapi.client import Client, PushError, PushRefused, PushSummary, Retry
from importapi.progress import Display

FORMATS = ("csv", "json", "jsonl")
EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonlines": "jsonl"}
_decode = msgspec.json.Decoder().decode
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_BOOLEANS = {"true": True, "false": False}


class InputError(ValueError):
    """Input that cannot be read as records; the message says where."""


def format_of(path: str, given: str | None) -> str:
    if given:
        return given
    if path == "-":
        raise InputError("say which format stdin has: --format csv, json or jsonl")
    fmt = EXTENSIONS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(
            f"{path}: cannot tell the format from the extension; use --format csv, json or jsonl"
        )
    return fmt


def infer(value: str) -> Any:
    """A CSV cell as the JSON value it spells: integer, number, boolean, null (empty) or text.
    Integers with leading zeros stay text ("007" is an identifier, not seven)."""
    if value == "":
        return None
    if _INTEGER.fullmatch(value):
        return int(value)
    if _NUMBER.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else value
    return _BOOLEANS.get(value.lower(), value)


# A reader yields (record, first line or element, last line or element, bytes read so far).
Read = Iterator[tuple[Any, int, int, int]]


@dataclass
class Skipping:
    left: int


def read_jsonl(f: IO[bytes], skip: Skipping) -> Read:
    offset = 0
    for number, line in enumerate(f, 1):
        offset += len(line)
        if not line.strip():
            continue
        if skip.left:  # resuming: counted, not decoded
            skip.left -= 1
            continue
        try:
            record = _decode(line)
        except msgspec.DecodeError as exc:
            raise InputError(f"line {number}: not valid JSON ({exc})") from None
        yield record, number, number, offset


def read_json(f: IO[bytes], skip: Skipping) -> Read:
    first = _first_byte(f)
    if first == b"[":
        tell = f.tell if f.seekable() else (lambda: 0)
        items = ijson.items(f, "item", use_float=True)
        try:
            for index, record in enumerate(items):
                if skip.left:
                    skip.left -= 1
                    continue
                yield record, index, index, tell()
        except ijson.JSONError as exc:
            raise InputError(f"is not valid JSON ({exc})") from None
        return
    try:
        document = _decode(f.read())
    except msgspec.DecodeError as exc:
        raise InputError(f"is not valid JSON ({exc})") from None
    if document is None and not first:
        return
    if not isinstance(document, dict):
        raise InputError("holds neither an object nor an array of objects")
    if skip.left:
        skip.left -= 1
        return
    yield document, 0, 0, f.tell() if f.seekable() else 0


def _first_byte(f: IO[bytes]) -> bytes:
    peek = getattr(f, "peek", None)
    while peek is not None:
        chunk = peek(1)
        if not chunk:
            return b""
        stripped: bytes = chunk.lstrip()
        if stripped:
            return stripped[:1]
        f.read(len(chunk))
    return b""


def read_csv(f: IO[bytes], skip: Skipping, infer_types: bool) -> Read:
    offset = 0

    def lines() -> Iterator[str]:
        nonlocal offset
        for number, raw in enumerate(f, 1):
            offset += len(raw)
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"line {number}: not UTF-8 ({exc.reason})") from None

    reader = csv.reader(lines())
    header = _header(next(reader, None))
    if header is None:
        return
    end = reader.line_num
    for row in reader:
        start, end = end + 1, reader.line_num
        if not row:
            continue
        if len(row) != len(header):
            raise InputError(f"line {start}: {len(row)} cells where the header has {len(header)}")
        if skip.left:
            skip.left -= 1
            continue
        values = [infer(v) for v in row] if infer_types else row
        yield dict(zip(header, values)), start, end, offset


def _header(row: list[str] | None) -> list[str] | None:
    if not row:
        return None
    if any(not name for name in row):
        raise InputError("line 1: the header has an empty column name")
    if len(set(row)) != len(row):
        raise InputError("line 1: the header names a column twice")
    return row


@dataclass
class Source:
    """The records of the inputs in order, after ``skip``, remembering where the latest
    ``remember`` of them came from (enough for every record the client has in flight)."""

    paths: list[str]
    fmt: str | None
    keys: list[str] | None = None
    infer_types: bool = False
    skip: int = 0
    remember: int = 1000
    error: InputError | None = None
    read: int = 0
    _where: deque[tuple[int, int, int, int, int]] = field(default_factory=deque)
    _sizes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._where = deque(maxlen=self.remember)
        self.formats = [format_of(p, self.fmt) for p in self.paths]
        self._sizes = [0 if p == "-" else Path(p).stat().st_size for p in self.paths]

    @property
    def total_bytes(self) -> int | None:
        return None if "-" in self.paths else sum(self._sizes)

    def records(self) -> Iterator[Any]:
        """The records; stops (without raising) at input it cannot read, kept in ``error``."""
        skipping = Skipping(self.skip)
        before = 0
        for number, (path, fmt) in enumerate(zip(self.paths, self.formats)):
            try:
                with _open(path) as f:
                    for record, first, last, offset in self._read(f, fmt, skipping):
                        if self.keys is not None and isinstance(record, dict):
                            record["keys"] = self.keys
                        self._where.append((self.read, number, first, last, before + offset))
                        self.read += 1
                        yield record
            except InputError as exc:
                self.error = InputError(f"{_name(path)} {exc}")
                return
            before += self._sizes[number]

    def _read(self, f: IO[bytes], fmt: str, skipping: Skipping) -> Read:
        if fmt == "jsonl":
            return read_jsonl(f, skipping)
        if fmt == "json":
            return read_json(f, skipping)
        return read_csv(f, skipping, self.infer_types)

    def where(self, index: int) -> str:
        """Where the record the client counts as ``index`` came from, for people."""
        found = self._find(index)
        if found is None:
            return f"record {self.skip + index + 1:,}"
        _, number, first, last, _ = found
        name = _name(self.paths[number])
        if self.formats[number] == "json":
            return f"{name} element {first:,}" if self._sizes[number] or first else f"{name} object"
        lines = f"line {first:,}" if first == last else f"lines {first:,}-{last:,}"
        return f"{name} {lines}"

    def span(self, first: int, last: int) -> str:
        """Where records ``first`` to ``last`` came from: one file's lines when they share it."""
        start, end = self._find(first), self._find(last)
        if first == last:
            return self.where(first)
        if start and end and start[1] == end[1] and self.formats[start[1]] != "json":
            return f"{_name(self.paths[start[1]])} lines {start[2]:,}-{end[3]:,}"
        return f"{self.where(first)} to {self.where(last)}"

    def position(self, acknowledged: int) -> int:
        """Bytes into the inputs that the first ``acknowledged`` records reach."""
        found = self._find(acknowledged - 1) if acknowledged else None
        return found[4] if found else 0

    def _find(self, index: int) -> tuple[int, int, int, int, int] | None:
        if not self._where or index < self._where[0][0] or index > self._where[-1][0]:
            return None
        return self._where[index - self._where[0][0]]


def _name(path: str) -> str:
    return "stdin" if path == "-" else path


def _open(path: str) -> AbstractContextManager[IO[bytes]]:
    if path == "-":
        return nullcontext(sys.stdin.buffer)  # read, never closed
    return open(path, "rb")


def resume_command(table: str, paths: list[str], options: dict[str, Any], skip: int) -> str:
    """The command that picks up after the last acknowledged record (never with the key)."""
    argv = ["importapi", "push", table, *paths]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    argv += ["--skip", str(skip)]
    return shlex.join(argv)


@dataclass
class Load:
    """What ``importapi push`` was asked to do."""

    table: str
    files: list[str]
    api_key: str
    keys: list[str] | None = None
    url: str = "http://127.0.0.1:8080"
    client_id: int = 1
    sandbox: bool = False
    concurrency: int = 4
    fmt: str | None = None
    infer_types: bool = False
    skip: int = 0
    gzip: bool = False
    as_json: bool = False
    progress_interval: float = 10.0

    def resume(self, skip: int) -> str:
        default = Load("", [], "")
        options = {
            "keys": ",".join(self.keys) if self.keys else None,
            "format": self.fmt,
            "infer_types": self.infer_types,
            "sandbox": self.sandbox,
            "gzip": self.gzip,
        }
        for name in ("url", "client_id", "concurrency"):
            if getattr(self, name) != getattr(default, name):
                options[name] = getattr(self, name)
        return resume_command(self.table, self.files, options, skip)


def parse_keys(text: str | None) -> list[str] | None:
    if text is None:
        return None
    keys = [k.strip() for k in text.split(",")]
    if not all(keys):
        raise InputError(f"--keys {text!r}: name the key fields, separated by commas")
    return keys


def run(load: Load, out: IO[str], err: IO[str], transport: httpx.BaseTransport | None = None) -> int:
    """Push the inputs; print progress on ``err`` and a summary on ``out``; the exit code.
    ``transport`` reaches a server other than over the network (the app in process)."""
    source = Source(
        load.files, load.fmt, load.keys, load.infer_types, load.skip, remember=(load.concurrency + 3) * 100
    )
    if load.keys is None and "csv" in source.formats:
        raise InputError("CSV rows name no key fields: give them with --keys, e.g. --keys id")
    client = Client(
        load.client_id,
        load.api_key,
        url=load.url,
        concurrency=load.concurrency,
        gzip=load.gzip,
        transport=transport,
    )
    with client:
        _check_key(client, load)
        base = client.SANDBOX_BASE if load.sandbox else client.API_BASE
        seen: list[PushSummary] = []
        display = Display(load.table, source.total_bytes, err, interval=load.progress_interval)

        def progress(summary: PushSummary) -> None:
            if not seen:
                seen.append(summary)
            display.update(summary, source.position(summary.acknowledged))

        status, failure = "ok", None
        with display:
            try:
                client.push_data(load.table, source.records(), base, progress=progress, keep_answers=False)
            except PushError as exc:
                status, failure = "refused" if isinstance(exc, PushRefused) else "failed", exc
            except KeyboardInterrupt:
                status = "interrupted"
    summary = seen[0]
    if status == "ok" and source.error is not None:
        status = "bad input"
    _print_summary(summary, load, status, out)
    if failure is not None:
        err.write(_failure_text(failure, source))
    elif source.error is not None:
        err.write(f"Error: {source.error}\n")
    if status != "ok":
        err.write(_resume_text(load, load.skip + summary.acknowledged, summary.acknowledged))
    return {"ok": 0, "interrupted": 130}.get(status, 1)


def _check_key(client: Client, load: Load) -> None:
    """Fail fast, before reading anything, on a wrong key or an unreachable server."""
    patient, client.retry = client.retry, Retry(attempts=2)
    try:
        if not client.authenticate():
            raise InputError(f"the API key is not a live key of client {load.client_id} at {client.API_BASE}")
    except PushError as exc:
        raise InputError(f"cannot reach the server at {load.url}: {'; '.join(exc.reasons)}") from None
    finally:
        client.retry = patient


def _print_summary(s: PushSummary, load: Load, status: str, out: IO[str]) -> None:
    if load.as_json:
        resume = None if status == "ok" else load.skip + s.acknowledged
        out.write(
            msgspec.json.encode(
                {**s.as_dict(), "skipped": load.skip, "status": status, "resume_skip": resume}
            ).decode()
            + "\n"
        )
        return
    where = " in the sandbox (nothing stored)" if load.sandbox else ""
    skipped = f", after skipping {load.skip:,}" if load.skip else ""
    out.write(
        f"{_records(s.records)} pushed to {load.table}{where} in {s.requests:,} requests{skipped}: "
        f"{s.inserted:,} inserted, {s.replaced:,} replaced, {s.retries:,} retries, "
        f"{s.elapsed:,.1f} s, {s.rate:,.0f} records/s\n"
    )


def _failure_text(exc: PushError, source: Source) -> str:
    first, last = exc.first, exc.first + exc.count - 1
    numbers = f"records {source.skip + first + 1:,}-{source.skip + last + 1:,}"
    held = source.span(first, last)
    status = f"{exc.status} {exc.message}" if exc.status else exc.message
    if isinstance(exc, PushRefused):
        lines = [f"Error: the server refused the request holding {numbers} ({held}): {status}"]
    else:
        lines = [
            (f"Error: the request holding {numbers} ({held}) did not go through after every retry: {status}")
        ]
    for index, messages in sorted(getattr(exc, "points", {}).items()):
        lines += [f"  {source.where(index)}: {message}" for message in messages]
    lines += [f"  {d.message}" for d in exc.details if d.point is None]
    return "\n".join(lines) + "\n"


def _resume_text(load: Load, skip: int, acknowledged: int) -> str:
    again = ", feeding it the same input" if "-" in load.files else ""
    return (
        f"The first {_records(acknowledged)} of this run are acknowledged. To resume after "
        f"the last of them (the API key given as before{again}):\n  {load.resume(skip)}\n"
    )


def _records(n: int) -> str:
    return f"{n:,} record{'' if n == 1 else 's'}"
