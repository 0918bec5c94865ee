"""The exception tree every refusal travels through, and the contract's answer envelope.

    ImportApiError (status, message, reasons)
    ├── BadRequest            400
    ├── Unauthorized          401
    ├── NotFound              404
    ├── MethodNotAllowed      405
    ├── RequestTimeout        408
    ├── PayloadTooLarge       413
    ├── UnsupportedEncoding   415
    ├── TooManyRequests       429
    ├── ServerError           500
    ├── StorageUnavailable    503
    └── Overloaded            503  (too many requests in progress; with Retry-After)

Storage wraps driver errors in these (``raise ... from exc``) so no driver exception
reaches the HTTP layer; the HTTP layer turns them into ``{"code", "message", "reasons"}``.

The client (``importapi.client``) raises a branch of its own, never raised by the server:

    ImportApiError
    └── PushError             a request the client could not get through
        ├── PushRefused       a 4xx answer (not retried), with the input records it held
        └── PushFailed        no answer, or 5xx / 429, after every retry
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ImportApiError(Exception):
    status = 500
    message = "Server Error"
    retry_after: int | None = None
    """Seconds to wait before trying again, sent as ``Retry-After`` when set."""

    def __init__(self, *reasons: str, extra: Sequence[str] = ()) -> None:
        self.reasons: list[str] = [*reasons, *extra] or [self.message]
        super().__init__("; ".join(self.reasons))

    def envelope(self) -> dict[str, object]:
        return {"code": self.status, "message": self.message, "reasons": self.reasons}


class BadRequest(ImportApiError):
    status = 400
    message = "Bad Request"


class Unauthorized(ImportApiError):
    status = 401
    message = "Unauthorized"


class NotFound(ImportApiError):
    status = 404
    message = "Not Found"


class MethodNotAllowed(ImportApiError):
    status = 405
    message = "Method Not Allowed"

    def __init__(self, *reasons: str, allow: Sequence[str] = ()) -> None:
        super().__init__(*reasons)
        self.allow = tuple(allow)


class RequestTimeout(ImportApiError):
    status = 408
    message = "Request Timeout"


class PayloadTooLarge(ImportApiError):
    status = 413
    message = "Payload Too Large"


class UnsupportedEncoding(ImportApiError):
    status = 415
    message = "Unsupported Media Type"


class TooManyRequests(ImportApiError):
    status = 429
    message = "Too Many Requests"

    def __init__(self, *reasons: str, retry_after: int = 1) -> None:
        super().__init__(*reasons)
        self.retry_after = retry_after


class ServerError(ImportApiError):
    status = 500
    message = "Server Error"


class StorageUnavailable(ImportApiError):
    status = 503
    message = "Service Unavailable"


class Overloaded(ImportApiError):
    status = 503
    message = "Service Unavailable"

    def __init__(self, *reasons: str, retry_after: int = 1) -> None:
        super().__init__(*reasons)
        self.retry_after = retry_after


class PushError(ImportApiError):
    """A request the client could not get through; raised by ``importapi.client`` only.

    ``status`` is the last HTTP status answered (0 when there was no answer), ``first`` and
    ``count`` say which records of the input the request held (counted from 0 over the
    whole push), and ``summary`` is what the push had done when it stopped: its
    ``acknowledged`` count is where a resumed push starts.
    """

    def __init__(self, status: int, message: str, reasons: Sequence[str], *, first: int = 0,
                 count: int = 0) -> None:
        super().__init__(*reasons)
        self.status = status
        self.message = message
        self.first = first
        self.count = count
        self.summary: Any = None  # a PushSummary, set by the client
        self.args = (f"{f'{status} ' if status else ''}{message}: {'; '.join(self.reasons)}",)

    @property
    def records(self) -> range:
        """Indexes in the input of the records the failing request held."""
        return range(self.first, self.first + self.count)


class PushRefused(PushError):
    """A 4xx answer: retrying would not help. ``points`` maps an input record's index to
    the reasons the server gave for it; reasons about the whole request are in ``reasons``."""

    def __init__(self, status: int, message: str, reasons: Sequence[str], *, first: int = 0,
                 count: int = 0, points: dict[int, list[str]] | None = None) -> None:
        super().__init__(status, message, reasons, first=first, count=count)
        self.points = points or {}


class PushFailed(PushError):
    """No answer (a refused or dropped connection, a timeout), or a 5xx or 429 answer,
    after every retry: the request may be sent again later."""
