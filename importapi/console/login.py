"""Signing in and out of the console.

A login form carries its CSRF token like every other form (so no other site can sign a
browser in). Password checks run one at a time (each costs a scrypt), and an address with
repeated failures must wait before its next attempt is even looked at.
"""

from __future__ import annotations

import math
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from importapi.console.owner import (
    PASSWORD_SETTING,
    LoginThrottle,
    check_password,
    end_sessions,
    owner_fingerprint,
)
from importapi.console.web import (
    PREFIX,
    csrf_ok,
    form,
    refuse_csrf,
    render,
    see_other,
    signed_in,
    storage_of,
)

HOME = "/data"


def _safe_next(raw: object) -> str:
    """Where to go after signing in: only a console page, never another site."""
    if (
        isinstance(raw, str)
        and raw.startswith(PREFIX + "/")
        and "\\" not in raw
        and not raw.startswith(PREFIX + "/login")
    ):
        return raw
    return PREFIX + HOME


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _form(request: Request, status: int, error: str | None = None, next_url: str = "") -> Response:
    return render(request, "login.html", status, error=error, next_url=next_url)


async def login_page(request: Request) -> Response:
    def show() -> Response:
        if signed_in(request):
            return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
        return _form(request, 200, next_url=request.query_params.get("next", ""))

    return await run_in_threadpool(show)


async def login_submit(request: Request) -> Response:
    async with request.form(max_files=0, max_fields=10, max_part_size=4096) as data:
        return await run_in_threadpool(_login, request, data)


def _login(request: Request, data: FormData) -> Response:
    if not csrf_ok(request, data):
        return refuse_csrf(request)
    next_url = str(data.get("next") or "")
    throttle: LoginThrottle = request.app.state.throttle
    who = _address(request)
    wait = throttle.wait_for(who)
    if wait > 0:
        seconds = math.ceil(wait)
        response = _form(request, 429, f"Too many failed attempts. Try again in {seconds} seconds.", next_url)
        response.headers["retry-after"] = str(seconds)
        return response
    password = data.get("password")
    stored = storage_of(request).catalog.get_setting(PASSWORD_SETTING)
    if stored is None:
        return _form(
            request,
            401,
            "No owner password is set yet. On the server, run: importapi admin set-password",
            next_url,
        )
    with request.app.state.login_lock:  # one scrypt at a time
        ok = isinstance(password, str) and check_password(password, stored)
    if not ok:
        throttle.failed(who)
        return _form(request, 401, "That password is not right.", next_url)
    throttle.succeeded(who)
    request.session.clear()  # a fresh session: new CSRF token, nothing carried over
    request.session["owner"] = owner_fingerprint(storage_of(request), request.app.state.secret)
    request.session["csrf"] = secrets.token_urlsafe(24)
    return RedirectResponse(_safe_next(next_url), status_code=303)


@form
def logout(request: Request, _data: FormData) -> Response:
    end_sessions(storage_of(request))  # a copy of this cookie stops working too
    request.session.clear()
    return see_other("/login", "You are signed out.", request)
