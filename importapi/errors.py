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

"""

from __future__ import annotations

from collections.abc import Sequence


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

