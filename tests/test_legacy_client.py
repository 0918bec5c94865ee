"""The official legacy Python client, rjmetrics 0.1.0, run unchanged against the real server.

It lives in a virtual environment of its own (it needs an old setuptools to install), whose
python is named by ``IMPORTAPI_LEGACY_PYTHON``; ``make test`` creates it and sets it. Each
test runs a small script with that python and reads back what the client saw, as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import EXAMPLE_2, Server, cli_json, query_rows, run_cli

pytestmark = pytest.mark.legacy

LEGACY_VERSION = "0.1.0"

# Run by the legacy python: argv = client id, key, API base; data on stdin; a snippet
# appended below prints the result as JSON.
PRELUDE = """
import json, sys
from rjmetrics.client import Client

client = Client(int(sys.argv[1]), sys.argv[2])
client.API_BASE = sys.argv[3]
data = json.load(sys.stdin)

def answers(responses):
    return [{"status": r.status_code, "body": r.json()} for r in responses]
"""


@pytest.fixture(scope="module")
def legacy_python() -> str:
    path = os.environ.get("IMPORTAPI_LEGACY_PYTHON")
    if not path:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but IMPORTAPI_LEGACY_PYTHON is not set; run the suite with `make test`")
        pytest.skip(
            "IMPORTAPI_LEGACY_PYTHON is not set: run `make test`, or point it at a python "
            "with rjmetrics==0.1.0 installed"
        )
    done = subprocess.run(
        [path, "-c", "import importlib.metadata as m, rjmetrics.client; print(m.version('rjmetrics'))"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Set but broken is a failure, not a skip: the variable says the client is there.
    assert done.returncode == 0, f"{path} cannot import rjmetrics: {done.stderr}"
    assert done.stdout.strip() == LEGACY_VERSION
    return path


def legacy(
    python: str, server: Server, snippet: str, *, key: str | None = None, data: Any = None, client_id: int = 1
) -> Any:
    done = subprocess.run(
        [python, "-c", PRELUDE + snippet, str(client_id), key or server.key, f"{server.base}/v2"],
        input=json.dumps(data),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"the legacy client failed:\n{done.stderr}"
    return json.loads(done.stdout)


def test_authenticate_is_true_for_a_live_key(legacy_python: str, server: Server) -> None:
    assert legacy(legacy_python, server, "print(json.dumps(client.authenticate()))") is True


def test_push_of_example_2_answers_201_and_the_last_data_point_wins(
    legacy_python: str, server: Server
) -> None:
    out = legacy(
        legacy_python, server, 'print(json.dumps(answers(client.push_data("orders", data))))', data=EXAMPLE_2
    )
    assert [a["status"] for a in out] == [201]
    assert out[0]["body"]["code"] == 201
    assert query_rows(1, "SELECT id, status, created_at FROM orders ORDER BY id", server.data_dir) == [
        {"id": 1, "status": "complete", "created_at": "2012-08-05 04:51:02"},
        {"id": 2, "status": "pending", "created_at": "2012-08-03 23:12:30"},
    ]


def test_250_records_go_in_three_requests_and_all_arrive(legacy_python: str, server: Server) -> None:
    records = [{"keys": ["id"], "id": i, "value": i * 2, "label": f"row {i}"} for i in range(250)]
    out = legacy(
        legacy_python, server, 'print(json.dumps(answers(client.push_data("items", data))))', data=records
    )
    assert [a["status"] for a in out] == [201, 201, 201]
    assert [a["body"]["inserted"] for a in out] == [100, 100, 50]
    assert query_rows(
        1, "SELECT count(*) AS n, sum(value) AS s, count(DISTINCT id) AS d FROM items", server.data_dir
    ) == [{"n": 250, "s": 2 * sum(range(250)), "d": 250}]


def test_a_push_to_the_sandbox_base_answers_201_and_stores_nothing(
    legacy_python: str, server: Server
) -> None:
    snippet = f'print(json.dumps(answers(client.push_data("orders", data, "{server.base}/sandbox/v2"))))'
    out = legacy(legacy_python, server, snippet, data=EXAMPLE_2)
    assert [a["status"] for a in out] == [201]
    assert out[0]["body"]["sandbox"] is True
    assert cli_json("tables", "1", "--json", database=server.data_dir) == []


def test_a_refused_key_fails_authenticate_and_its_push_is_a_401(
    legacy_python: str, server: Server, tmp_path: Path
) -> None:
    revoked = cli_json("keys", "create", "1", "--json", database=server.data_dir)
    assert run_cli("keys", "revoke", revoked["key_id"], database=server.data_dir).returncode == 0
    snippet = (
        'print(json.dumps({"authenticated": client.authenticate(),'
        ' "pushes": answers(client.push_data("orders", data))}))'
    )
    for key in (revoked["api_key"], "not-a-key-at-all"):
        out = legacy(legacy_python, server, snippet, key=key, data=EXAMPLE_2)
        assert out["authenticated"] is False
        assert [a["status"] for a in out["pushes"]] == [401]
        body = out["pushes"][0]["body"]
        assert body["code"] == 401 and body["message"] and body["reasons"]
    # A live key of client 1 on client 2's URL is refused the same way.
    out = legacy(legacy_python, server, snippet, data=EXAMPLE_2, client_id=2)
    assert out["authenticated"] is False and [a["status"] for a in out["pushes"]] == [401]
    assert cli_json("tables", "1", "--json", database=server.data_dir) == []
