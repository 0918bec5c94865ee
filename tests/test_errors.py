"""Refusals as data (``importapi.errors``) against their documentation, ``docs/errors.md``.

Every ``Code`` is documented with its status and every documented code exists; a detail
has the shape the page shows (``code``, then ``point`` and ``field`` when there are, then
``message``) and its reason line is the message, prefixed ``data point N:`` when it names
one; each refusal class answers the status its code is documented with.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importapi import errors
from importapi.errors import BadRequest, Code, Detail, ImportApiError, PushError

DOCS = Path(__file__).parent.parent / "docs" / "errors.md"
ROW = re.compile(r"^\| `([a-z0-9_]+)` \| (\d{3}) \|", re.MULTILINE)


def documented() -> dict[str, int]:
    """Each code of the page's tables and the status it is documented with."""
    rows = ROW.findall(DOCS.read_text())
    codes = [code for code, _ in rows]
    assert len(codes) == len(set(codes)), "a code is documented twice"
    return {code: int(status) for code, status in rows}


def test_every_code_is_documented_and_every_documented_code_exists() -> None:
    docs = documented()
    missing = sorted(c.value for c in Code if c.value not in docs)
    assert not missing, f"codes missing from docs/errors.md: {missing}"
    unknown = sorted(set(docs) - {c.value for c in Code})
    assert not unknown, f"docs/errors.md lists codes that do not exist: {unknown}"


def refusal_classes() -> list[type[ImportApiError]]:
    """The classes the server raises: everything under ImportApiError but the client's branch."""
    found = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, ImportApiError) and not issubclass(cls, PushError)
    ]
    # BadRequest has no code of its own: every 400 names its problem's code when raised
    return [cls for cls in found if not cls.__name__.startswith("_") and cls is not BadRequest]


@pytest.mark.parametrize("cls", refusal_classes(), ids=lambda c: c.__name__)
def test_a_refusal_raised_with_a_message_only_answers_its_codes_documented_status(
    cls: type[ImportApiError],
) -> None:
    exc = cls("went wrong")
    (detail,) = exc.details
    docs = documented()
    assert detail.code in docs, f"{detail.code} is not in docs/errors.md"
    assert docs[detail.code] == exc.status


def test_the_error_envelope_holds_reasons_and_details_in_this_order() -> None:
    exc = BadRequest(details=[Detail(Code.KEY_MISSING, "key field 'id' is missing", 0, "id")])
    assert exc.envelope() == {
        "code": 400,
        "message": "Bad Request",
        "reasons": ["data point 0: key field 'id' is missing"],
        "details": [
            {"code": "key_missing", "point": 0, "field": "id", "message": "key field 'id' is missing"}
        ],
    }
    assert list(exc.envelope()) == ["code", "message", "reasons", "details"]
    assert list(exc.envelope()["details"][0]) == ["code", "point", "field", "message"]


@settings(deadline=None)
@given(
    code=st.sampled_from(list(Code)),
    message=st.text(min_size=1, max_size=20),
    point=st.none() | st.integers(0, 100),
    field=st.none() | st.text(max_size=8),
)
def test_a_detail_has_the_documented_shape(
    code: Code, message: str, point: int | None, field: str | None
) -> None:
    detail = Detail(code, message, point, field)
    shape: dict[str, Any] = detail.as_dict()
    expected = ["code", *(["point"] if point is not None else []), *(["field"] if field is not None else [])]
    assert list(shape) == [*expected, "message"]
    assert type(shape["code"]) is str and shape["code"] == code.value
    assert shape["message"] == message and shape.get("point") == point and shape.get("field") == field
    assert detail.reason == (message if point is None else f"data point {point}: {message}")
    # and an error holding it says the same in its envelope, one reason per detail
    envelope = BadRequest(details=[detail, Detail(Code.MORE_PROBLEMS, "and more")]).envelope()
    assert envelope["details"] == [shape, {"code": "more_problems", "message": "and more"}]
    assert envelope["reasons"] == [detail.reason, "and more"]


def test_the_example_on_the_page_is_what_a_refusal_answers() -> None:
    text = DOCS.read_text()
    example = re.search(r"```json\n(.*?)```", text, re.DOTALL)
    assert example is not None
    shown = json.loads(example.group(1))
    exc = BadRequest(details=[Detail(**shown["details"][0])])
    assert exc.envelope() == shown
