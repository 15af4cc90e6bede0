"""Helpers to describe hand-parsed request bodies in the OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.core.body_limit import MULTIPART
from app.core.errors import RETRY_AFTER_SECONDS
from app.core.uploads import MAX_FIELD_BYTES


def multipart_body(
    files: dict[str, str], fields: dict[str, tuple[str, Any]], required: list[str]
) -> dict[str, Any]:
    """``openapi_extra`` for a streamed multipart endpoint: files are binary parts, fields are
    text parts given as (description, example)."""
    properties: dict[str, Any] = {
        name: {"type": "string", "format": "binary", "description": desc}
        for name, desc in files.items()
    }
    for name, (desc, example) in fields.items():
        properties[name] = {
            "type": "string",
            "maxLength": MAX_FIELD_BYTES,
            "description": desc,
            "example": example,
        }
    for name in files:
        properties[f"{name}_sha256"] = {
            "type": "string",
            "maxLength": 64,
            "pattern": "^[0-9a-f]{64}$",
            "description": f"Optional expected SHA-256 (hex) of `{name}`; checked on receipt.",
        }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": properties, "required": required}
                }
            },
        }
    }


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": desc,
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
            }
        },
    }
    for status, desc in {
        401: "Missing, unknown or revoked API key",
        403: "The key's role does not allow this",
        404: "No such resource in this tenant",
        422: "Invalid input (the problem lists the fields)",
    }.items()
}


def document_body_limit(schema: dict[str, Any], limit_bytes: int) -> None:
    """Add the ``413`` of :class:`app.core.body_limit.BodyLimitMiddleware` to every operation
    whose request body is not a multipart upload."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            if content and "multipart/form-data" not in content:
                operation.setdefault("responses", {})["413"] = {
                    "description": f"The request body exceeds {limit_bytes} bytes",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"},
                        }
                    },
                }


# Operations that never touch the database, so never answer its 503. /readyz documents its own.
DATABASE_FREE_PATHS = frozenset({"/healthz"})


def document_unavailable(schema: dict[str, Any]) -> None:
    """Add the ``503`` that :mod:`app.core.errors` answers while the database is unreachable to
    every operation that reads it (all but :data:`DATABASE_FREE_PATHS`), with its ``Retry-After``
    header. An operation that documents a 503 of its own keeps it."""
    for path, operations in schema.get("paths", {}).items():
        if path in DATABASE_FREE_PATHS:
            continue
        for operation in operations.values():
            operation.setdefault("responses", {}).setdefault(
                "503",
                {
                    "description": "The database is not available right now; retry later",
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds to wait before retrying",
                            "schema": {"type": "integer", "example": RETRY_AFTER_SECONDS},
                        }
                    },
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"},
                        }
                    },
                },
            )


_PROBLEM_CONTENT: dict[str, Any] = {
    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
}

# What each error status means wherever the API can answer it; an operation's own description
# of a status (a route's `responses=`) is kept, only its content is made the problem document.
_ERROR_MEANING: dict[int, str] = {
    400: "The body is not parseable (malformed JSON)",
    401: "Missing, unknown or revoked API key",
    403: "The key's role does not allow this",
    404: "No such resource in this tenant (another tenant's IDs answer the same)",
    409: "The request conflicts with the resource's current state",
    413: "The body or an uploaded part is larger than the configured limit",
    415: "The body's media type is not the one this operation takes",
    416: "The Range header asks for bytes outside the artifact",
    422: "Invalid input (the problem lists the fields)",
}

_WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})


def _errors_of(operation: dict[str, Any], method: str) -> set[int]:
    """The error statuses an operation can answer, from its shape: authentication, parameters,
    body, streamed uploads and ranged downloads each bring theirs."""
    codes: set[int] = set()
    responses = operation.get("responses", {})
    body = operation.get("requestBody", {}).get("content", {})
    if operation.get("security"):
        codes |= {401, 403, 404}
    if operation.get("parameters") or body:
        codes.add(422)
    if body and MULTIPART not in body:
        codes.add(400)  # malformed JSON
    if MULTIPART in body:
        codes |= {413, 415}
    if method in _WRITE_METHODS and operation.get("security"):
        codes.add(409)
    if "206" in responses:
        codes.add(416)
    return codes


def document_problems(schema: dict[str, Any]) -> None:
    """Make the document tell the truth about errors: every status an operation can answer is
    listed, and every error response (4xx and 5xx, FastAPI's own 422 included) is described as
    the ``application/problem+json`` :class:`Problem` the API actually sends. Success responses
    left without content (a replay's 200, a range's 206) get the content of their siblings."""
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for code in _errors_of(operation, method):
                responses.setdefault(str(code), {"description": _ERROR_MEANING[code]})
            success_content = next(
                (
                    r["content"]
                    for c, r in responses.items()
                    if c.startswith("2") and r.get("content")
                ),
                None,
            )
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = dict(_PROBLEM_CONTENT)
                elif code.startswith("2") and not response.get("content") and success_content:
                    response["content"] = success_content
    # FastAPI's validation-error schemas, now referenced by no response, would only mislead.
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{name}"' not in json.dumps(schema.get("paths", {})):
            components.pop(name, None)


_EXAMPLES = Path(__file__).with_name("openapi_examples.json")


def document_examples(schema: dict[str, Any]) -> None:
    """Attach the recorded examples (``.ci/openapi_examples.py``: real answers of a throw-away
    instance, shortened) to every JSON request body and success response that has one, and the
    problem document's example to every error. A missing file leaves the document as it is."""
    try:
        recorded = json.loads(_EXAMPLES.read_text())
    except (OSError, ValueError):
        return
    responses, requests = recorded.get("responses", {}), recorded.get("requests", {})
    problem = {
        "type": "https://lethe.dev/problems/not-found",
        "title": "Resource not found",
        "status": 404,
        "detail": "No model 0b4f2c9e-8a1d-4f3b-9c2e-7d5a6b1e0f42.",
        "instance": "/v1/models/0b4f2c9e-8a1d-4f3b-9c2e-7d5a6b1e0f42",
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            key = f"{method} {path}"
            if body is not None and key in requests and "example" not in body:
                body["example"] = requests[key]
            for code, response in operation.get("responses", {}).items():
                for ctype, media in response.get("content", {}).items():
                    if ctype == "application/problem+json":
                        media.setdefault("example", {**problem, "status": int(code)})
                    elif ctype == "application/json":
                        ref = media.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
                        example = responses.get(ref) or responses.get(key)
                        if example is not None:
                            media.setdefault("example", example)
