"""One error hierarchy, rendered once as RFC 9457 ``application/problem+json``.

Services raise :class:`LetheError` subclasses; the handlers in :func:`install_handlers` turn them
(and FastAPI's validation errors, a database that cannot be reached, and anything unexpected) into
problem documents.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.db import UNAVAILABLE_ERRORS, database_unavailable, unavailable_reason

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://lethe.dev/problems/"

log = logging.getLogger(__name__)


class LetheError(Exception):
    """Base error: carries its HTTP status, a problem type slug and a human detail."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class NotFound(LetheError):
    status, slug, title = 404, "not-found", "Resource not found"


class Unauthorized(LetheError):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(LetheError):
    status, slug, title = 403, "forbidden", "The API key's role does not allow this"


class Conflict(LetheError):
    status, slug, title = 409, "conflict", "Conflicts with the current state"


class Gone(LetheError):
    """The resource existed and was destroyed or withdrawn on purpose (erasure)."""

    status, slug, title = 410, "gone", "Deliberately removed"


class InvalidInput(LetheError):
    status, slug, title = 422, "invalid-input", "The request is not valid"


class InvalidArtifact(LetheError):
    """An uploaded file is not what it claims to be (not safetensors, lying header, ...)."""

    status, slug, title = 422, "invalid-artifact", "The uploaded file was refused"


class DigestMismatch(LetheError):
    status, slug, title = 422, "digest-mismatch", "The upload does not match its stated digest"


class PayloadTooLarge(LetheError):
    status, slug, title = 413, "payload-too-large", "The upload exceeds the size limit"


class UnsupportedMediaType(LetheError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class RangeNotSatisfiable(LetheError):
    status, slug, title = 416, "range-not-satisfiable", "The requested range cannot be served"


class ServiceUnavailable(LetheError):
    status, slug, title = 503, "unavailable", "A dependency is not available"


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# How long a client should wait before retrying while the database is away: the Retry-After of a
# 503 and (in milliseconds) the `retry:` of an event stream. Short, because a restart or a
# fail-over takes seconds, and a retry costs the server one refused connection.
RETRY_AFTER_SECONDS = 5


def database_unavailable_error() -> ServiceUnavailable:
    return ServiceUnavailable(
        f"The database is not available right now; retry in {RETRY_AFTER_SECONDS} seconds."
    )


def log_database_unavailable(method: str, path: str, exc: BaseException) -> None:
    """One warning line, no traceback: during an outage every request fails the same way, and a
    traceback each would bury the one line that says why."""
    log.warning(
        "database unavailable: %s %s answered 503 (%s)", method, path, unavailable_reason(exc)
    )


def database_unavailable_response(request: Request, exc: BaseException) -> JSONResponse:
    log_database_unavailable(request.method, request.url.path, exc)
    body = database_unavailable_error().to_problem(request.url.path)
    return problem_response(503, body, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(LetheError)
    async def _lethe(request: Request, exc: LetheError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return problem_response(exc.status, exc.to_problem(request.url.path), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ())),
                "message": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        fields = ", ".join(e["field"] for e in errors)
        err = InvalidInput(f"Invalid fields: {fields}", errors=errors)
        return problem_response(422, err.to_problem(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        try:
            phrase = HTTPStatus(exc.status_code).phrase
        except ValueError:
            phrase = "Error"
        body = {
            "type": PROBLEM_BASE + phrase.lower().replace(" ", "-"),
            "title": phrase,
            "status": exc.status_code,
            "detail": str(exc.detail),
            "instance": request.url.path,
        }
        return problem_response(exc.status_code, body, dict(exc.headers or {}))

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # The database's "data exception" class: a value from the request cannot be stored or
        # compared as given (a NUL character in a text, a number out of range). It is the
        # client's input, not a server fault, and the unit of work has already rolled back.
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
        err = InvalidInput(f"A value in the request cannot be used: {reason}")
        return problem_response(422, err.to_problem(request.url.path))

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # The connection was refused or lost, or the pool had none to give: 503 and Retry-After,
        # not 500. The session's unit of work has rolled back (or had nothing to roll back).
        if not database_unavailable(exc):
            raise exc  # an ordinary database error (a constraint, a bug): the 500 below
        return database_unavailable_response(request, exc)

    # DBAPIError too: SQLAlchemy may recognise a disconnect under another driver error class.
    for cls in (*UNAVAILABLE_ERRORS, DBAPIError):
        app.add_exception_handler(cls, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if database_unavailable(exc):  # raised outside the routes (a middleware)
            return database_unavailable_response(request, exc)
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        err = LetheError("An unexpected error occurred; it has been logged.")
        return problem_response(500, err.to_problem(request.url.path))
