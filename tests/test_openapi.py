"""The OpenAPI description is served, describes exactly the routes the app answers, and holds
under fuzzing: schemathesis generates requests from it (valid and invalid), and no answer is
a 500, leaves the description, or breaks the contract's envelope."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from importapi.app import openapi_document
from importapi.settings import Limits
from tests.helpers import Api, make_api

SPEC = openapi_document(Limits())
schema = schemathesis.openapi.from_dict(SPEC)
# Not negative_data_rejection: ``send`` gives generated cases a live key and client id, which
# can turn a case generated as invalid into a valid one; and unknown query parameters are
# ignored by design.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
NOT_ENVELOPED = {"/openapi.json", "/metrics"}  # documents of their own formats
_turn = itertools.count()


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from make_api(tmp_path_factory.mktemp("fuzz") / "warehouse")


def assert_envelope(response: httpx.Response) -> None:
    """The contract's envelope: a JSON object starting with code and message; errors add reasons."""
    body = response.json()
    assert isinstance(body, dict) and list(body)[:2] == ["code", "message"], body
    assert body["code"] == response.status_code and isinstance(body["message"], str) and body["message"]
    if response.status_code >= 400:
        assert body["reasons"] and all(isinstance(r, str) and r for r in body["reasons"]), body
    if response.status_code == 500:
        assert body["request_id"] == response.headers["x-request-id"]


def send(api: Api, case: Any) -> httpx.Response:
    """Send a generated case through the in-process client; two in three carry a live key."""
    turn = next(_turn)
    if "cid" in case.path_parameters and turn % 3:
        case.path_parameters["cid"] = api.client_id
        case.query = {**(case.query or {}), "apikey": api.key}
    elif "/import/" in case.path and turn % 3:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {api.key}"}
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    kwargs.pop("cookies", None)
    if isinstance(kwargs.get("data"), (bytes, str)):  # a raw body, in httpx's spelling
        kwargs["content"] = kwargs.pop("data")
    return api.http.request(kwargs.pop("method"), kwargs.pop("url"), **kwargs)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzzed_requests_get_documented_enveloped_answers(case: Any, fuzz_api: Api) -> None:
    response = send(fuzz_api, case)
    case.validate_response(response, checks=CHECKS)
    if "/import/" in case.path:
        assert_stitch_answer(response)
    elif case.path not in NOT_ENVELOPED:
        assert_envelope(response)


def assert_stitch_answer(response: httpx.Response) -> None:
    """The Stitch routes' answers: JSON always (target-stitch retries any other body);
    errors carry details, and a 429 never leaves (the clients would give up on it)."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body, dict) and response.status_code != 429, body
    if response.status_code >= 400:
        assert body["details"] and set(body) & {"error", "message"}, body


def test_the_served_description_is_the_built_one_with_the_configured_limits(tmp_path: Path) -> None:
    limits = Limits(max_points=7)
    for api in make_api(tmp_path / "warehouse", limits):
        served = api.http.get("/openapi.json")
        assert served.status_code == 200 and served.headers["content-type"] == "application/json"
        assert served.json() == openapi_document(limits)
        body = served.json()["paths"]["/v2/client/{cid}/table/{table}/data"]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"]["oneOf"][1]["maxItems"] == 7


# Which routes and methods are answered is decided before the warehouse is asked anything, so
# the route tests run on one backend (SQLite).


def _concrete(template: str, api: Api) -> str:
    return template.replace("{cid}", str(api.client_id)).replace("{table}", "orders")


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("template", sorted(SPEC["paths"]))
def test_every_described_route_exists_with_exactly_its_methods(template: str, api: Api) -> None:
    path = _concrete(template, api)
    described = {m.upper() for m in SPEC["paths"][template]}
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        answer = api.http.request(method, path, params={"apikey": api.key}, json={"keys": ["id"], "id": 1})
        if method in described:
            assert answer.status_code not in (404, 405), (method, path, answer.text)
        else:
            assert answer.status_code == 405, (method, path, answer.text)
            assert set(answer.headers["allow"].split(", ")) >= described


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "path",
    [
        "/v3/client/1/authenticate",
        "/v2/client/1",
        "/v2/client/1/table/orders",
        "/v2/client/1/tables",
        "/v2/client/1/table/orders/data/x",
        "/sandbox/ready",
        "/sandbox/metrics",
        "/metrics/",
        "/docs",
        "/v2/clients/1/authenticate",
        "/sandbox/sandbox/v2/client/1/authenticate",
    ],
)
def test_a_route_not_described_is_not_answered(path: str, api: Api) -> None:
    answer = api.http.get(path, params={"apikey": api.key})
    assert answer.status_code == 404, answer.text
    assert_envelope(answer)
    assert not any(re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", t), path) for t in SPEC["paths"])


def test_every_error_status_the_app_can_answer_is_described() -> None:
    from importapi import errors

    statuses = {
        cls.status
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.ImportApiError)
        and cls.__module__ == errors.__name__
        and cls.status >= 400
    }
    data = SPEC["paths"]["/v2/client/{cid}/table/{table}/data"]["post"]["responses"]
    batch = SPEC["paths"]["/v2/import/batch"]["post"]["responses"]
    assert statuses - {405, 403, 422} <= {int(s) for s in data}  # 403, 422: Stitch's records only
    assert statuses - {429} <= {int(s) for s in batch}  # a 429 is a 503 there: the clients retry 5xx only
