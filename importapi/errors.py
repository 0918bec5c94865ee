"""The exception tree every refusal travels through, and the answer envelope it becomes.

    ImportApiError (status, message, details)
    ├── BadRequest            400
    │   └── ClientExists      400  (a client id that is taken)
    ├── Unauthorized          401
    ├── Forbidden             403
    ├── NotFound              404
    ├── MethodNotAllowed      405
    ├── RequestTimeout        408
    ├── PayloadTooLarge       413
    ├── UnsupportedEncoding   415
    ├── Unprocessable         422
    ├── TooManyRequests       429
    ├── ServerError           500
    ├── StorageUnavailable    503
    └── Overloaded            503  (too many requests in progress; with Retry-After)

A refusal is data: a list of ``Detail``, each with a stable ``Code`` (what metrics, the
client, the loader and the console look at), the data point and field it is about when it
is about one, and a message for people. The contract's ``reasons`` are the messages, each
prefixed ``data point N:`` when it names one. Storage wraps driver errors in these
(``raise ... from exc``) so no driver exception reaches the HTTP layer.

The client (``importapi.client``) raises a branch of its own, never raised by the server:

    ImportApiError
    └── PushError             a request the client could not get through
        ├── PushRefused       a 4xx answer (not retried), with the input records it held
        └── PushFailed        no answer, or 5xx / 429, after every retry
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class Code(enum.StrEnum):
    """Every refusal's stable identifier (``docs/errors.md`` describes each)."""

    # the body as a whole
    BODY_EMPTY = "body_empty"
    BODY_NOT_JSON = "body_not_json"
    BODY_NOT_UTF8 = "body_not_utf8"
    BODY_NOT_GZIP = "body_not_gzip"
    BODY_TOO_DEEP = "body_too_deep"
    BODY_INCOMPLETE = "body_incomplete"
    CONTENT_LENGTH_INVALID = "content_length_invalid"
    NAME_REPEATED = "name_repeated"
    BODY_TOO_LARGE = "body_too_large"
    ENCODING_UNSUPPORTED = "encoding_unsupported"
    CONTENT_TYPE_UNSUPPORTED = "content_type_unsupported"
    BODY_TIMEOUT = "body_timeout"
    HEAD_TIMEOUT = "head_timeout"
    # how many data points, and their shape
    POINTS_EMPTY = "points_empty"
    POINTS_TOO_MANY = "points_too_many"
    POINT_NOT_OBJECT = "point_not_object"
    NESTED_TOO_DEEP = "nested_too_deep"
    TEXT_HAS_NUL = "text_has_nul"
    # the Stitch routes' bodies
    BATCH_INVALID = "batch_invalid"
    SCHEMA_UNREADABLE = "schema_unreadable"
    RECORD_NOT_CONFORMING = "record_not_conforming"
    RECORDS_EXPECTED = "records_expected"
    RECORD_INVALID = "record_invalid"
    TOO_MANY_FIELDS = "too_many_fields"
    CLIENT_MISMATCH = "client_mismatch"
    CLIENT_IDS_DIFFER = "client_ids_differ"
    KEY_NAMES_DIFFER = "key_names_differ"
    # key fields
    KEYS_MISSING = "keys_missing"
    KEYS_INVALID = "keys_invalid"
    KEYS_TOO_MANY = "keys_too_many"
    KEYS_DIFFER = "keys_differ"
    KEY_MISSING = "key_missing"
    KEY_INVALID = "key_invalid"
    KEY_FIELDS_FIXED = "key_fields_fixed"
    ID_MISSING = "id_missing"
    ID_INVALID = "id_invalid"
    # names
    TABLE_NAME_INVALID = "table_name_invalid"
    TABLE_NAME_RESERVED = "table_name_reserved"
    FIELD_NAME_INVALID = "field_name_invalid"
    FIELD_NAME_RESERVED = "field_name_reserved"
    FIELD_NAME_CASE = "field_name_case"
    FIELD_NAME_COLLISION = "field_name_collision"
    MORE_PROBLEMS = "more_problems"
    # the table's schema
    TOO_MANY_COLUMNS = "too_many_columns"
    KEY_WIDENING_COLLISION = "key_widening_collision"
    # keys and clients
    API_KEY_MISSING = "api_key_missing"
    API_KEY_AMBIGUOUS = "api_key_ambiguous"
    API_KEY_INVALID = "api_key_invalid"
    API_KEY_REVOKED = "api_key_revoked"
    API_KEY_MISMATCH = "api_key_mismatch"
    CLIENT_EXISTS = "client_exists"
    WAREHOUSE_NOT_EMPTY = "warehouse_not_empty"
    # routes and limits
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    # the owner's reads
    QUERY_READ_ONLY = "query_read_only"
    QUERY_FAILED = "query_failed"
    # faults
    SERVER_ERROR = "server_error"
    STORAGE_UNAVAILABLE = "storage_unavailable"


@dataclass(frozen=True, slots=True)
class Detail:
    """One problem: what it is (``code``), where (``point``, ``field``), and in words."""

    code: str
    """A ``Code`` (a client reading an answer may meet codes it does not know)."""
    message: str
    point: int | None = None
    field: str | None = None

    @property
    def reason(self) -> str:
        """The contract's reason line: the message, naming the data point when there is one."""
        return self.message if self.point is None else f"data point {self.point}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": str(self.code)}
        if self.point is not None:
            out["point"] = self.point
        if self.field is not None:
            out["field"] = self.field
        out["message"] = self.message
        return out


class ImportApiError(Exception):
    status = 500
    message = "Server Error"
    code = Code.SERVER_ERROR
    """The code of a refusal raised with a message only."""
    retry_after: int | None = None
    """Seconds to wait before trying again, sent as ``Retry-After`` when set."""

    def __init_subclass__(
        cls, status: int = 0, message: str = "", code: Code | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status:
            cls.status = status
        if message:
            cls.message = message
        if code is not None:
            cls.code = code

    def __init__(
        self,
        text: str | None = None,
        *,
        code: Code | None = None,
        point: int | None = None,
        field: str | None = None,
        details: Sequence[Detail] = (),
    ) -> None:
        self.details: list[Detail] = list(details) or [
            Detail(code or self.code, text or self.message, point, field)
        ]
        super().__init__("; ".join(self.reasons))

    @property
    def reasons(self) -> list[str]:
        return [d.reason for d in self.details]

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.details]

    def envelope(self) -> dict[str, object]:
        return {
            "code": self.status,
            "message": self.message,
            "reasons": self.reasons,
            "details": [d.as_dict() for d in self.details],
        }


class BadRequest(ImportApiError, status=400, message="Bad Request"):
    pass


class ClientExists(BadRequest, code=Code.CLIENT_EXISTS):
    """``create_client`` with an id that another client has."""


class Unauthorized(ImportApiError, status=401, message="Unauthorized", code=Code.API_KEY_INVALID):
    pass


class Forbidden(ImportApiError, status=403, message="Forbidden", code=Code.CLIENT_MISMATCH):
    pass


class NotFound(ImportApiError, status=404, message="Not Found", code=Code.NOT_FOUND):
    pass


class MethodNotAllowed(
    ImportApiError, status=405, message="Method Not Allowed", code=Code.METHOD_NOT_ALLOWED
):
    def __init__(self, text: str, *, allow: Sequence[str] = ()) -> None:
        super().__init__(text)
        self.allow = tuple(allow)


class RequestTimeout(ImportApiError, status=408, message="Request Timeout", code=Code.BODY_TIMEOUT):
    pass


class PayloadTooLarge(ImportApiError, status=413, message="Payload Too Large", code=Code.BODY_TOO_LARGE):
    pass


class UnsupportedEncoding(
    ImportApiError, status=415, message="Unsupported Media Type", code=Code.ENCODING_UNSUPPORTED
):
    pass


class Unprocessable(ImportApiError, status=422, message="Unprocessable Content", code=Code.RECORD_INVALID):
    pass


class _Later(ImportApiError):
    """A refusal that says when to try again (``Retry-After``)."""

    def __init__(self, text: str, *, retry_after: int = 1) -> None:
        super().__init__(text)
        self.retry_after = retry_after


class TooManyRequests(_Later, status=429, message="Too Many Requests", code=Code.RATE_LIMITED):
    pass


class ServerError(ImportApiError, status=500, message="Server Error", code=Code.SERVER_ERROR):
    pass


class StorageUnavailable(
    ImportApiError, status=503, message="Service Unavailable", code=Code.STORAGE_UNAVAILABLE
):
    pass


class Overloaded(_Later, status=503, message="Service Unavailable", code=Code.OVERLOADED):
    pass


class PushError(ImportApiError):
    """A request the client could not get through; raised by ``importapi.client`` only.

    ``status`` is the last HTTP status answered (0 when there was no answer), ``first`` and
    ``count`` say which records of the input the request held (counted from 0 over the
    whole push), and ``summary`` is what the push had done when it stopped: its
    ``acknowledged`` count is where a resumed push starts.
    """

    def __init__(
        self, status: int, message: str, details: Sequence[Detail], *, first: int = 0, count: int = 0
    ) -> None:
        super().__init__(details=details)
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
    the messages the server gave about it; problems of the whole request are the details
    without a point."""

    def __init__(
        self, status: int, message: str, details: Sequence[Detail], *, first: int = 0, count: int = 0
    ) -> None:
        super().__init__(status, message, details, first=first, count=count)
        self.points: dict[int, list[str]] = {}
        for d in self.details:
            if d.point is not None and d.point < count:
                self.points.setdefault(first + d.point, []).append(d.message)


class PushFailed(PushError):
    """No answer (a refused or dropped connection, a timeout), or a 5xx or 429 answer,
    after every retry: the request may be sent again later."""
