"""Pushing records to an Import API server from Python.

    from importapi.client import Client

    client = Client(1, "imp_...")              # the original client's names and arguments
    if client.authenticate():
        summary = client.push_data("orders", records)          # a list, or any iterable
        client.push_data("orders", records, Client.SANDBOX_BASE)

``Client.API_BASE`` and ``Client.SANDBOX_BASE`` point at ``http://127.0.0.1:8080`` or at
the ``IMPORTAPI_URL`` environment variable; ``Client(..., url=...)`` overrides them.
Records are split into requests of at most 100 data points and 5 MiB, sent over pooled
keep-alive connections, ``concurrency`` at a time, optionally gzip-compressed; failures
that may pass are retried (see ``Retry``). ``AsyncClient`` does the same for asyncio.
Errors: ``PushRefused`` (a 4xx, with the input records it concerns) and ``PushFailed``
(retries ran out), both ``PushError``.
"""

from importapi.client._async import AsyncClient
from importapi.client._core import Answer, PushSummary
from importapi.client._retry import NO_RETRY, Retry
from importapi.client._sync import Client
from importapi.errors import PushError, PushFailed, PushRefused

__all__ = [
    "NO_RETRY",
    "Answer",
    "AsyncClient",
    "Client",
    "PushError",
    "PushFailed",
    "PushRefused",
    "PushSummary",
    "Retry",
]
