"""The OpenAPI 3.1 description of the HTTP surface, served at ``/openapi.json``.

It is built from the same limits the server enforces, and a test keeps it true: every
route the application answers is described here, every answer it gives has its status
listed, and every body matches its schema (the suite runs schemathesis against it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from importapi import __version__
from importapi.errors import Code
from importapi.settings import Limits

JSON = "application/json"
SECURITY: list[dict[str, list[str]]] = [{"apikeyQuery": []}, {"bearer": []}]
ERROR_STATUSES = {
    "400": "The request is malformed; nothing was changed.",
    "401": "No key, a key that is not a live key of this client, or more than one key.",
    "404": "No such resource.",
    "405": "The method is not allowed on this path.",
    "408": "The body was not received in time.",
    "413": "The body is larger than the limit (after decompression).",
    "415": "A Content-Encoding other than gzip.",
    "429": "This key is over its rate limit; see Retry-After.",
    "500": "Something went wrong on the server; the answer carries a request id.",
    "503": "The storage cannot take writes, or the server is at its limit of requests in progress.",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref(schema)}}}


def _errors(*statuses: str) -> dict[str, Any]:
    return {s: _answer(ERROR_STATUSES[s], "Error") for s in statuses}


def _schemas(limits: Limits) -> dict[str, Any]:
    scalar = {"type": ["string", "integer", "number", "boolean"]}
    return {
        "Envelope": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
        },
        "Error": {
            "allOf": [ref("Envelope")],
            "required": ["reasons"],
            "properties": {
                "code": {"type": "integer", "minimum": 400, "maximum": 599},
                "reasons": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "details": {
                    "type": "array",
                    "minItems": 1,
                    "items": ref("Detail"),
                    "description": "The reasons as data, one to one and in the same order.",
                },
                "request_id": {"type": "string"},
            },
        },
        "Detail": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "enum": [c.value for c in Code],
                    "description": "A stable identifier of the problem (docs/errors.md).",
                },
                "point": {"type": "integer", "minimum": 0, "description": "The data point's index."},
                "field": {"type": "string", "description": "The field the problem is about."},
                "message": {"type": "string"},
            },
        },
        "Status": {
            "allOf": [ref("Envelope")],
            "properties": {
                "service": {"type": "string"},
                "version": {"type": "string"},
                "sandbox": {"type": "boolean"},
            },
        },
        "Authenticated": {
            "allOf": [ref("Envelope")],
            "required": ["client_id"],
            "properties": {"client_id": {"type": "integer"}, "sandbox": {"type": "boolean"}},
        },
        "Created": {
            "allOf": [ref("Envelope")],
            "required": ["table", "inserted", "replaced"],
            "properties": {
                "code": {"const": 201},
                "table": {"type": "string"},
                "inserted": {"type": "integer", "minimum": 0},
                "replaced": {"type": "integer", "minimum": 0},
                "sandbox": {"type": "boolean"},
                "plan": {"type": "object"},
            },
        },
        "DataPoint": {
            "type": "object",
            "required": ["keys"],
            "description": "Fields become columns; `keys` names the fields that identify the data point.",
            "properties": {
                "keys": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": limits.max_key_fields,
                    "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1},
                }
            },
            "additionalProperties": True,
        },
        "DataPointV1": {
            "type": "object",
            "required": ["_id"],
            "description": "v1 data points are keyed by `_id`: an integer or a string of digits.",
            "properties": {
                "_id": {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": "^[0-9]+$"}]}
            },
            "additionalProperties": True,
        },
        "KeyValue": scalar,
    }


def _params(*names: str) -> list[dict[str, Any]]:
    known = {
        "cid": {
            "name": "cid",
            "in": "path",
            "required": True,
            "description": "The client id.",
            "schema": {"type": "integer", "minimum": 1},
        },
        "table": {
            "name": "table",
            "in": "path",
            "required": True,
            "description": "Matched ignoring case, stored lower-case.",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_]{1,63}$"},
        },
    }
    return [known[n] for n in names]


def _auth_path(tag: str) -> dict[str, Any]:
    return {
        "get": {
            "tags": [tag],
            "summary": "Is the key a live key of this client?",
            "security": SECURITY,
            "parameters": _params("cid"),
            "responses": {
                "200": _answer("The key is a live key of this client.", "Authenticated"),
                **_errors("401", "404", "429", "500", "503"),
            },
        }
    }


def _data_path(tag: str, point: str, limits: Limits) -> dict[str, Any]:
    body = {
        "oneOf": [
            ref(point),
            {"type": "array", "minItems": 1, "maxItems": limits.max_points, "items": ref(point)},
        ]
    }

    def operation(verb: str) -> dict[str, Any]:
        return {
            "tags": [tag],
            "summary": f"Upsert data points ({verb})",
            "security": SECURITY,
            "parameters": _params("cid", "table"),
            "requestBody": {"required": True, "content": {JSON: {"schema": body}}},
            "responses": {
                "201": _answer("Every data point is durably stored.", "Created"),
                **_errors("400", "401", "404", "408", "413", "415", "429", "500", "503"),
            },
        }

    return {"post": operation("POST"), "put": operation("PUT")}


def _service_paths() -> dict[str, Any]:
    return {
        "/": {
            "get": {
                "summary": "Status: 200 while the service can take writes",
                "responses": {"200": _answer("Up.", "Status"), **_errors("500", "503")},
            }
        },
        "/ready": {
            "get": {
                "summary": "Readiness: a write path of the storage works",
                "responses": {"200": _answer("Ready.", "Envelope"), **_errors("500", "503")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Counters in the Prometheus text format",
                "responses": {
                    "200": {
                        "description": "Prometheus exposition.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "responses": {
                    "200": {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": {"type": "object"}}}}
                },
            }
        },
    }


class Part(Protocol):
    """Another protocol's part of the document (``importapi.stitch.openapi``)."""

    def paths(self) -> dict[str, Any]: ...

    def schemas(self) -> dict[str, Any]: ...


def build(limits: Limits | None = None, parts: Sequence[Part] = ()) -> dict[str, Any]:
    """The document: the service routes, the RJMetrics routes, and each of ``parts``."""
    limits = limits or Limits()
    paths = _service_paths()
    for prefix, tag in (("", "production"), ("/sandbox", "sandbox")):
        for version, point in (("v2", "DataPoint"), ("v1", "DataPointV1")):
            base = f"{prefix}/{version}/client/{{cid}}"
            label = f"{tag} {version}" + (" (deprecated)" if version == "v1" else "")
            paths[f"{base}/authenticate"] = _auth_path(label)
            paths[f"{base}/table/{{table}}/data"] = _data_path(label, point, limits)
    for part in parts:
        paths.update(part.paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "importapi",
            "version": __version__,
            "description": "Push JSON records over HTTP; they land as upserts in typed SQL tables. "
            "The RJMetrics routes answer a JSON object starting with code and message, errors add "
            "reasons and details; the Stitch routes (/v2/import/...) answer as the Stitch Import API "
            "does, errors with details.",
        },
        "paths": paths,
        "components": {
            "schemas": {**_schemas(limits), **{k: v for part in parts for k, v in part.schemas().items()}},
            "securitySchemes": {
                "apikeyQuery": {"type": "apiKey", "in": "query", "name": "apikey"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
