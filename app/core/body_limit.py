"""A cap on the request bodies the API reads into memory (``LETHE_MAX_JSON_BODY_BYTES``).

FastAPI reads a JSON body whole and parses it before it resolves any dependency, the API key's
check included: a 75 MiB ``sample_ids`` list once took the API from 188 to 588 MB before the 422,
whoever sent it. :class:`BodyLimitMiddleware` sits in front of routing, so it refuses such a
body with ``413`` before authentication or parsing sees a byte of it:

- a ``Content-Length`` over the limit is answered at once, without reading the body;
- a chunked body (or any other) is counted as ``receive()`` delivers it; the message that crosses
  the limit is never handed on: the app's read raises instead, so it can never take a partial
  body for a whole one, whatever it answers is dropped, and the 413 goes out in its place.

Streamed multipart uploads are not limited here: :mod:`app.core.uploads` writes their parts to
disk and caps each at ``LETHE_MAX_UPLOAD_BYTES``. A ``multipart/form-data`` body is let through
only to an operation that the API's own OpenAPI document says takes one; sent to a JSON
operation, which would buffer it like any other body, it is limited like any other body.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import PayloadTooLarge, problem_response

MULTIPART = "multipart/form-data"


class _BodyTooLarge(Exception):
    """Raised by the app's ``receive`` once the body has passed the limit."""


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _media_type(value: str) -> str:
    return value.partition(";")[0].strip().lower()


def _content_length(scope: Scope) -> int | None:
    # The server has already refused a malformed one; this only keeps a surprise from crashing.
    try:
        return int(Headers(scope=scope)["content-length"])
    except (KeyError, ValueError):
        return None


def multipart_operations(openapi: dict[str, Any]) -> list[tuple[str, re.Pattern[str]]]:
    """(method, path pattern) of every operation whose documented request body is multipart."""
    found: list[tuple[str, re.Pattern[str]]] = []
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if MULTIPART in content:
                pattern, _, _ = compile_path(path)
                found.append((method.upper(), pattern))
    return found


class BodyLimitMiddleware:
    """Pure ASGI middleware (it never buffers): refuse with ``413`` any request body over
    ``max_bytes`` that is not a streamed multipart upload. Register it outside the router."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._multipart: list[tuple[str, re.Pattern[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_streamed_upload(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return

        received = 0
        over = started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            if over:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to a body it could not finish; the 413 replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            # FastAPI turns a failed body read into a 400 (dropped above); code that lets the
            # error escape ends here. Either way the cause is the cut, and the answer the 413.
            if not over or started:
                raise
        if over and not started:
            await self._refuse(scope, send)
        # An app that answered before it read the body (none of ours do) keeps its answer;
        # its read still failed at the limit.

    def _is_streamed_upload(self, scope: Scope) -> bool:
        if _media_type(Headers(scope=scope).get("content-type", "")) != MULTIPART:
            return False
        if self._multipart is None:
            app = scope.get("app")
            openapi = getattr(app, "openapi", None)
            # Without the app's description nothing is exempt: the safe side of the rule.
            self._multipart = multipart_operations(openapi()) if callable(openapi) else []
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        method = scope["method"]
        return any(m == method and p.fullmatch(path) for m, p in self._multipart)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = PayloadTooLarge(
            f"The request body exceeds the {self.max_bytes}-byte limit for bodies that are not"
            " multipart uploads.",
            limit_bytes=self.max_bytes,
        )
        # The rest of the body is never read, so the connection cannot carry another request.
        response = problem_response(413, error.to_problem(scope["path"]), {"Connection": "close"})
        await response(scope, _no_body, send)
