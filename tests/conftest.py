"""Fixtures and pytest hooks: real SQLite warehouses in temporary folders or fresh PostgreSQL
databases, the ASGI app in process, and the real server process on a free port. The helpers
they are made of are in ``tests/helpers.py``; import those from there, nothing from here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from importapi.storage import Storage, open_storage
from tests.backends import BACKENDS, warehouse
from tests.helpers import Api, Server, make_api, start_server, stop_server


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "warehouse"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses a warehouse (``database``, ``storage``, ``api``) runs on each
    backend; ``@pytest.mark.backends("sqlite")`` narrows that for a backend-specific test,
    or for one whose outcome is decided before the warehouse is asked anything."""
    if "database" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("database", marker.args if marker else BACKENDS, indirect=True)


@pytest.fixture
def database(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[str]:
    """The URL of an empty warehouse: a SQLite folder, or a PostgreSQL database of its own."""
    with warehouse(request.param, data_dir) as url:
        yield url


@pytest.fixture
def storage(database: str) -> Iterator[Storage]:
    with open_storage(database) as s:
        yield s


@pytest.fixture
def api(database: str) -> Iterator[Api]:
    yield from make_api(database)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = start_server(tmp_path / "warehouse", tmp_path / "server.log")
    yield s
    stop_server(s)
