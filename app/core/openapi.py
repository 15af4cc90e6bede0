"""Helpers to describe hand-parsed request bodies in the OpenAPI document."""

from __future__ import annotations

from typing import Any

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
