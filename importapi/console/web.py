"""What every console page shares: templates, the owner's session, CSRF checks, refusals.

Handlers are plain functions run in a worker thread (storage calls block), wrapped by
``page`` (needs a signed-in owner) or ``form`` (needs a signed-in owner and the form's
CSRF token). The session is a signed cookie holding the CSRF token and a fingerprint of
the owner's password hash; nothing else about the owner lives in the browser.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from importapi.console.owner import owner_fingerprint
from importapi.errors import ImportApiError
from importapi.storage import Storage

HERE = Path(__file__).parent
PREFIX = "/console"
# Pages load only the console's own stylesheet and script, and no other site may frame them.
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
}
Endpoint = Callable[[Request], Awaitable[Response]]


def when(stamp: str | None, short: bool = False) -> str:
    """An ISO time as the pages show it: ``2026-05-01 14:22:05 UTC`` (short: to the minute)."""
    if not stamp:
        return "never"
    try:
        moment = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    return moment.strftime("%Y-%m-%d %H:%M UTC" if short else "%Y-%m-%d %H:%M:%S UTC")


def _context(request: Request) -> dict[str, Any]:
    return {
        "csrf_token": csrf_token(request),
        "flash": request.session.pop("flash", None),
        "signed_in": request.scope.get("importapi.owner", False),
        "prefix": PREFIX,
    }


TEMPLATES = Jinja2Templates(directory=HERE / "templates", context_processors=[_context])
TEMPLATES.env.filters["when"] = when


class Sessions:
    """Signed session cookies (HttpOnly, SameSite=Lax, path /console), marked Secure when
    the console is reached over HTTPS."""

    def __init__(self, app: ASGIApp, secret: str, max_age: int) -> None:
        options: dict[str, Any] = {
            "secret_key": secret,
            "session_cookie": "importapi_console",
            "max_age": max_age,
            "path": PREFIX,
            "same_site": "lax",
        }
        self.plain = SessionMiddleware(app, **options)
        self.secure = SessionMiddleware(app, https_only=True, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chosen = self.secure if scope.get("scheme") in ("https", "wss") else self.plain
        await chosen(scope, receive, send)


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return refuse(request, 404, "Not found", "There is no such page in the console.")
    return refuse(
        request, status, "Not allowed", str(getattr(exc, "detail", "")) or "This request was refused."
    )


def storage_of(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def refuse(request: Request, status: int, title: str, message: str) -> Response:
    return render(request, "refused.html", status, title=title, message=message)


def see_other(path: str, flash: str | None = None, request: Request | None = None) -> Response:
    if flash and request is not None:
        request.session["flash"] = flash
    return RedirectResponse(PREFIX + path, status_code=303)


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return token


def csrf_ok(request: Request, form: Mapping[str, Any]) -> bool:
    given, expected = form.get("csrf"), request.session.get("csrf")
    return (
        isinstance(given, str)
        and isinstance(expected, str)
        and hmac.compare_digest(given.encode(), expected.encode())
    )


def signed_in(request: Request) -> bool:
    """Is this session the owner's, opened with the password that is current now?"""
    remembered = request.session.get("owner")
    ok = (
        isinstance(remembered, str)
        and bool(remembered)
        and hmac.compare_digest(
            remembered.encode(), owner_fingerprint(storage_of(request), request.app.state.secret).encode()
        )
    )
    request.scope["importapi.owner"] = ok
    return ok


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303)


def refuse_csrf(request: Request) -> Response:
    return refuse(
        request,
        403,
        "This form has expired",
        "The form was not sent by this console page, or your session changed since it "
        "was shown. Go back, reload the page and try again. Nothing was changed.",
    )


def _answer(fn: Callable[..., Response], request: Request, *args: Any) -> Response:
    try:
        return fn(request, *args)
    except ImportApiError as exc:  # storage's refusals: unknown client, table or key
        return refuse(request, exc.status, exc.message, "; ".join(exc.reasons))


def page(fn: Callable[[Request], Response]) -> Endpoint:
    """A page for the signed-in owner; anyone else is sent to the login page."""

    def guarded(request: Request) -> Response:
        return _answer(fn, request) if signed_in(request) else to_login(request)

    @functools.wraps(fn)
    async def endpoint(request: Request) -> Response:
        return await run_in_threadpool(guarded, request)

    return endpoint


def form(fn: Callable[[Request, FormData], Response]) -> Endpoint:
    """A form handler for the signed-in owner, refused without the session's CSRF token."""

    def guarded(request: Request, data: FormData) -> Response:
        if not signed_in(request):
            return to_login(request)
        if not csrf_ok(request, data):
            return refuse_csrf(request)
        return _answer(fn, request, data)

    @functools.wraps(fn)
    async def endpoint(request: Request) -> Response:
        async with request.form(max_files=0, max_fields=50, max_part_size=64 * 1024) as data:
            return await run_in_threadpool(guarded, request, data)

    return endpoint


def int_param(raw: str | None, default: int, lowest: int = 1) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return max(lowest, value)
