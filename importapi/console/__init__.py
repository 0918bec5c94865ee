"""The owner's web console, served by the API server under ``/console``.

Server-rendered pages (Starlette and Jinja2 templates, one stylesheet, a few lines of
JavaScript for copy buttons): sign in, Data -> Connections (clients and their keys, "Add a
Data Source"), Tables (schemas, rows, downloads) and Activity (latest pushes and
refusals). ``importapi.app.create_app`` mounts it beside the API, with the activity
recorder that feeds the Activity page.
"""

from __future__ import annotations

import threading

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from importapi.console import exports, login, pages
from importapi.console.owner import LoginThrottle, session_secret
from importapi.console.web import HERE, PREFIX, Sessions, http_error
from importapi.storage import Storage

SESSION_HOURS = 12


def create_console(storage: Storage) -> Starlette:
    """The console's ASGI application, reading and writing ``storage``."""
    routes = [
        Route("/", pages.home),
        Route("/login", login.login_page, methods=["GET"]),
        Route("/login", login.login_submit, methods=["POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        Route("/data", pages.data),
        Route("/data/connections", pages.connections),
        Route("/data/clients", pages.create_client, methods=["POST"]),
        Route("/data/connections/{cid:int}/add", pages.choose_source, methods=["GET"]),
        Route("/data/connections/{cid:int}/add", pages.add_source, methods=["POST"]),
        Route("/data/connections/{cid:int}/keys/{key_id}/revoke", pages.revoke_key, methods=["POST"]),
        Route("/data/tables", pages.tables),
        Route("/data/tables/{cid:int}/{table}.{fmt}", exports.export),
        Route("/data/tables/{cid:int}/{table}", pages.table),
        Route("/activity", pages.activity),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    secret = session_secret(storage)
    app = Starlette(
        routes=[Mount(PREFIX, routes=routes)],
        middleware=[Middleware(Sessions, secret=secret, max_age=SESSION_HOURS * 3600)],
        exception_handlers={HTTPException: http_error},
    )
    app.state.storage = storage
    app.state.secret = secret
    app.state.throttle = LoginThrottle()
    app.state.login_lock = threading.Lock()
    return app
