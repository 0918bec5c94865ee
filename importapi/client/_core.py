"""What the sync and async clients share: everything but the waiting.

A request's life (send, maybe wait and send again, give up) is a generator of steps,
``Send`` and ``Wait``, that a driver carries out: the sync client with blocking calls in a
thread pool, the async one with ``await``. ``Pushing`` holds one push's state: which
batches are in flight, which may start, what was acknowledged, the summary, the first
refusal. The drivers hold no decisions of their own.
"""

from __future__ import annotations

import gzip as gzip_module
import json
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlsplit

from importapi.client._batching import Batch
from importapi.client._retry import Retry, is_transient
from importapi.errors import Code, Detail, PushError, PushFailed, PushRefused
from importapi.settings import ClientSettings


@dataclass(slots=True)
class Send:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None = None


@dataclass(slots=True)
class Wait:
    seconds: float


@dataclass(slots=True)
class Reply:
    """A request's answer; ``status`` 0 means there was none and ``error`` says why."""

    status: int = 0
    content: bytes = b""
    retry_after: str | None = None
    error: str = ""


Step = Send | Wait
Steps = Generator[Step, Reply | None, tuple[Reply, int]]


def advance(steps: Steps, reply: Reply | None) -> Step | tuple[Reply, int]:
    """A request's next step, given the reply to the last one; its outcome once it is over."""
    try:
        return steps.send(reply)
    except StopIteration as stop:
        outcome: tuple[Reply, int] = stop.value
        return outcome


def exchange(send: Send, retry: Retry) -> Steps:
    """One request to its final reply: transient failures are retried after a wait.
    Returns the last reply and how many retries it took."""
    retries = 0
    while True:
        reply = yield send
        assert reply is not None, "a driver answers every Send with a Reply"
        if not is_transient(reply.status) or retries >= retry.attempts:
            return reply, retries
        yield Wait(retry.delay(retries, reply.retry_after))
        retries += 1


def bases(url: str) -> tuple[str, str]:
    """The API and sandbox bases of a server, from its root URL (a trailing ``/v2`` is fine)."""
    root = url.strip().rstrip("/").removesuffix("/v2").removesuffix("/sandbox")
    return f"{root}/v2", f"{root}/sandbox/v2"


def is_sandbox(base_url: str) -> bool:
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    return parts.path.startswith("/sandbox") or host.startswith(("sandbox-", "sandbox."))


class Answer:
    """One answered request, as the original client returned them (``status_code``,
    ``json()``, ``text``, ``ok``), so code that inspected those keeps working."""

    __slots__ = ("content", "seq", "status_code")

    def __init__(self, seq: int, status_code: int, content: bytes) -> None:
        self.seq = seq
        self.status_code = status_code
        self.content = content

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def __repr__(self) -> str:
        return f"<Answer [{self.status_code}]>"


@dataclass
class PushSummary:
    """What a push did. Iterating gives one ``Answer`` per request, as the original client did."""

    table: str
    sandbox: bool = False
    requests: int = 0
    """Requests answered 2xx."""
    records: int = 0
    """Records acknowledged."""
    acknowledged: int = 0
    """How many records from the start of the input were all acknowledged: where a resumed push starts."""
    inserted: int = 0
    """Records whose key was new."""
    replaced: int = 0
    """Records that replaced a stored row."""
    retries: int = 0
    """The extra tries the requests took."""
    elapsed: float = 0.0
    answers: list[Answer] = field(default_factory=list, repr=False)

    @property
    def rate(self) -> float:
        """Records acknowledged per second."""
        return self.records / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        counts = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "answers"}
        return {**counts, "elapsed": round(self.elapsed, 3), "rate": round(self.rate, 1)}

    def __iter__(self) -> Any:
        return iter(self.answers)

    def __len__(self) -> int:
        return len(self.answers)

    def __getitem__(self, i: int) -> Answer:
        return self.answers[i]

    def __bool__(self) -> bool:
        return self.requests > 0


Progress = Callable[[PushSummary], None]


class Pushing:
    """One push's state, driven by either client. ``may_start`` says whether a batch can
    go now (a free slot, and no batch in flight writes one of its keys), ``steps`` is
    its request, ``finish`` takes its outcome, ``result`` ends the push."""

    def __init__(
        self,
        summary: PushSummary,
        url: str,
        headers: dict[str, str],
        *,
        retry: Retry,
        concurrency: int,
        gzip: bool,
        progress: Progress | None,
        keep_answers: bool,
    ) -> None:
        self.summary = summary
        self.url = url
        self.headers = headers
        self.retry = retry
        self.concurrency = concurrency
        self.gzip = gzip
        self.progress = progress
        self.keep_answers = keep_answers
        self.failure: PushError | None = None
        self._inflight: dict[int, Batch] = {}
        self._acked: dict[int, int] = {}  # seq -> count, until every earlier batch is in
        self._next_seq = 0
        self._started = time.perf_counter()
        if progress:
            progress(summary)

    @property
    def stopped(self) -> bool:
        return self.failure is not None

    def may_start(self, batch: Batch, running: int) -> bool:
        if running >= self.concurrency:
            return False
        return not any(batch.identities & other.identities for other in self._inflight.values())

    def steps(self, batch: Batch) -> Steps:
        """The batch's request; from now on it counts as in flight."""
        self._inflight[batch.seq] = batch
        return self._request(batch)

    def _request(self, batch: Batch) -> Steps:
        # Compressed on the first step, so in the sync client's worker thread.
        headers, content = self.headers, batch.body
        if self.gzip:
            headers = {**headers, "Content-Encoding": "gzip"}
            content = gzip_module.compress(content, compresslevel=5)
        return (yield from exchange(Send("POST", self.url, headers, content), self.retry))

    def finish(self, batch: Batch, outcome: tuple[Reply, int]) -> None:
        reply, retries = outcome
        del self._inflight[batch.seq]
        s = self.summary
        s.retries += retries
        if 200 <= reply.status < 300:
            body = _decode(reply.content)
            s.requests += 1
            s.records += batch.count
            s.inserted += _count(body, "inserted")
            s.replaced += _count(body, "replaced")
            if self.keep_answers:
                s.answers.append(Answer(batch.seq, reply.status, reply.content))
            self._acknowledge(batch)
        elif self.failure is None or batch.first < self.failure.first:
            self.failure = failure(reply, batch.first, batch.count)
        s.elapsed = time.perf_counter() - self._started
        if self.progress:
            self.progress(s)

    def _acknowledge(self, batch: Batch) -> None:
        self._acked[batch.seq] = batch.count
        while self._next_seq in self._acked:
            self.summary.acknowledged += self._acked.pop(self._next_seq)
            self._next_seq += 1

    def result(self) -> PushSummary:
        self.summary.elapsed = time.perf_counter() - self._started
        self.summary.answers.sort(key=lambda a: a.seq)
        if self.failure is not None:
            self.failure.summary = self.summary
            raise self.failure
        return self.summary


def _decode(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _count(body: Any, name: str) -> int:
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, int) else 0


def failure(reply: Reply, first: int, count: int) -> PushError:
    """The error for a final reply that was not a success, mapped to the input's records."""
    if reply.status == 0:
        return PushFailed(
            0,
            "No answer",
            [Detail("", reply.error or "the server could not be reached")],
            first=first,
            count=count,
        )
    body = _decode(reply.content)
    phrase = _phrase(reply.status)
    message = body.get("message") if isinstance(body, dict) else None
    details = _details(body) or [
        Detail(
            Code.SERVER_ERROR if reply.status >= 500 else "",
            reply.content.decode("utf-8", "replace")[:500] or phrase,
        )
    ]
    message = str(message) if message else phrase
    if is_transient(reply.status):
        return PushFailed(reply.status, message, details, first=first, count=count)
    return PushRefused(reply.status, message, details, first=first, count=count)


def _details(body: Any) -> list[Detail]:
    """The problems an error answer names: its ``details``, or (from a server that gives
    none) its ``reasons`` as details without a code."""
    if not isinstance(body, dict):
        return []
    details = body.get("details")
    if isinstance(details, list) and details and all(isinstance(d, dict) for d in details):
        return [
            Detail(
                str(d.get("code", "")),
                str(d.get("message", "")),
                d["point"] if isinstance(d.get("point"), int) else None,
                d["field"] if isinstance(d.get("field"), str) else None,
            )
            for d in details
        ]
    reasons = body.get("reasons")
    return [Detail("", str(r)) for r in reasons] if isinstance(reasons, list) else []


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


class ClientBase:
    """Configuration and request building shared by ``Client`` and ``AsyncClient``."""

    # Where the original client pointed at the hosted service, these point at a local
    # server, or at IMPORTAPI_URL; ``Client(..., url=...)`` sets them per client.
    API_BASE, SANDBOX_BASE = bases(ClientSettings.from_env().url)

    def __init__(
        self,
        client_id: int,
        api_key: str,
        *,
        url: str | None = None,
        concurrency: int = 4,
        gzip: bool = False,
        retry: Retry | None = None,
        timeout: float = 60.0,
        max_points: int = 100,
        max_bytes: int = 5 * 1024 * 1024,
        transport: Any = None,
    ) -> None:
        """``transport``: an httpx transport for the driver's HTTP client (tests reach an
        application in process through one)."""
        if type(client_id) is not int:
            raise ValueError(f"Client ID '{client_id}' must be an integer.")
        if not isinstance(api_key, str):
            raise ValueError(f"Import API key '{api_key}' must be a string.")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client_id = client_id
        self.api_key = api_key
        if url is not None:
            self.API_BASE, self.SANDBOX_BASE = bases(url)
        self.concurrency = concurrency
        self.gzip = gzip
        self.retry = retry or Retry()
        self.max_points = max_points
        self.max_bytes = max_bytes
        self._open(transport, timeout)

    def _open(self, transport: Any, timeout: float) -> None:
        """The driver's HTTP client, with ``concurrency`` connections and this timeout."""
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        from importapi import __version__

        return {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "User-Agent": f"importapi-client/{__version__}",
        }

    def _auth_steps(self, base_url: str | None) -> Steps:
        url = f"{(base_url or self.API_BASE).rstrip('/')}/client/{self.client_id}/authenticate"
        return exchange(Send("GET", url, self._headers()), self.retry)

    def _pushing(
        self, table_name: str, base_url: str | None, progress: Progress | None, keep_answers: bool
    ) -> Pushing:
        if not isinstance(table_name, str):
            raise ValueError(f"Table name '{table_name}' must be a string.")
        base = (base_url or self.API_BASE).rstrip("/")
        url = f"{base}/client/{self.client_id}/table/{quote(table_name, safe='')}/data"
        summary = PushSummary(table=table_name, sandbox=is_sandbox(base))
        return Pushing(
            summary,
            url,
            self._headers(),
            retry=self.retry,
            concurrency=self.concurrency,
            gzip=self.gzip,
            progress=progress,
            keep_answers=keep_answers,
        )


def authenticated(reply: Reply) -> bool:
    """200 means a live key; 401 or 404 mean no; no good answer after every retry raises."""
    if reply.status == 200:
        return True
    if is_transient(reply.status):
        raise failure(reply, 0, 0)
    return False
