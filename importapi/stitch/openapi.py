"""The Stitch Import API's part of ``/openapi.json``: its paths and the shapes of its bodies."""

from __future__ import annotations

from typing import Any

from importapi.openapi import JSON, ref
from importapi.stitch.records import MAX_RECORDS

TRANSIT = "application/transit+json"
_STATUS = {
    "400": "The body is malformed, or a record does not fit its schema; nothing was changed.",
    "401": "No key, or not a live key.",
    "403": "A record names another client than the key's.",
    "404": "No such resource.",
    "405": "The method is not allowed on this path.",
    "408": "The body was not received in time.",
    "413": "The body is larger than 20 MB (after decompression).",
    "415": "A Content-Type or Content-Encoding the route does not take.",
    "422": "Records that disagree or lack what a record needs; nothing was changed.",
    "500": "Something went wrong on the server; the answer carries a request id.",
    "503": "The warehouse cannot take writes now, or the key or the server is over a limit (Retry-After).",
}


def _errors(*statuses: str) -> dict[str, Any]:
    return {
        s: {"description": _STATUS[s], "content": {JSON: {"schema": ref("StitchError")}}} for s in statuses
    }


def schemas() -> dict[str, Any]:
    return {
        "StitchAccepted": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {
                "status": {"const": "OK"},
                "message": {"type": "string"},
                "records": {"type": "integer", "minimum": 0},
                "inserted": {"type": "integer", "minimum": 0},
                "replaced": {"type": "integer", "minimum": 0},
                "stale": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Records older than the stored rows (by sequence or table version).",
                },
                "request_id": {"type": "string"},
                "sandbox": {"type": "boolean"},
                "tables": {"type": "array", "items": {"type": "object"}},
            },
        },
        "StitchError": {
            "type": "object",
            "required": ["details"],
            "description": "As the Stitch Import API shapes it (`error`, or `status` and `message`, or "
            "`errors`), with `details`: the problems as data (docs/errors.md).",
            "properties": {
                "error": {"type": "string"},
                "status": {"const": "ERROR"},
                "message": {"type": "string"},
                "errors": {},
                "details": {"type": "array", "minItems": 1, "items": ref("Detail")},
                "request_id": {"type": "string"},
            },
        },
        "StitchBatch": {
            "type": "object",
            "required": ["table_name", "schema", "messages"],
            "additionalProperties": False,
            "properties": {
                "table_name": {"type": "string", "minLength": 1},
                "schema": {"type": "object", "description": "The JSON Schema of the records' data."},
                "key_names": {"type": ["array", "null"], "items": {"type": "string"}},
                "table_version": {"type": ["integer", "null"]},
                "bookmark_names": {"type": ["array", "null"]},
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_RECORDS,
                    "items": {
                        "type": "object",
                        "required": ["action", "sequence"],
                        "properties": {
                            "action": {"enum": ["upsert", "activate_version"]},
                            "sequence": {"type": "integer", "minimum": 0},
                            "data": {"type": "object"},
                            "time_extracted": {"type": "string"},
                        },
                    },
                },
            },
        },
        "StitchRecord": {
            "type": "object",
            "required": ["client_id", "table_name", "sequence", "action"],
            "properties": {
                "client_id": {"type": "integer"},
                "table_name": {"type": "string"},
                "sequence": {"type": "integer", "minimum": 0},
                "action": {"enum": ["upsert", "switch_view"]},
                "key_names": {"type": ["array", "null"], "items": {"type": "string"}},
                "table_version": {"type": ["integer", "null"]},
                "data": {"type": "object"},
            },
        },
    }


def _post(summary: str, body: dict[str, Any], answer: str, media: tuple[str, ...]) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["stitch"],
            "summary": summary,
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {m: {"schema": body} for m in media}},
            "responses": {
                answer: {
                    "description": "Committed." if answer == "201" else "Valid: nothing was stored.",
                    "content": {JSON: {"schema": ref("StitchAccepted")}},
                },
                **_errors("400", "401", "403", "404", "405", "408", "413", "415", "422", "500", "503"),
            },
        }
    }


def paths() -> dict[str, Any]:
    records = {"type": "array", "minItems": 1, "maxItems": MAX_RECORDS, "items": ref("StitchRecord")}
    out: dict[str, Any] = {}
    for prefix in ("", "/sandbox"):
        base = f"{prefix}/v2/import"
        out[f"{base}/status"] = {
            "get": {
                "tags": ["stitch"],
                "summary": "200 while the warehouse can take writes",
                "responses": {
                    "200": {"description": "Up.", "content": {JSON: {"schema": {"type": "object"}}}},
                    **_errors("500", "503"),
                },
            }
        }
        out[f"{base}/batch"] = _post(
            "One table's records, with their JSON Schema", ref("StitchBatch"), "201", (JSON,)
        )
        out[f"{base}/push"] = _post("Records of one or more tables", records, "201", (JSON, TRANSIT))
        out[f"{base}/validate"] = _post(
            "Check records as push would, store nothing", records, "200", (JSON, TRANSIT)
        )
    return out
