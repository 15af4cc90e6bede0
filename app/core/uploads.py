"""Streamed intake of ``multipart/form-data`` uploads.

Starlette's form parser spools files through its own temporary files, which would cost a second
copy and offers no size cap per file. Here file parts go straight into the artifact store's
staging area while their SHA-256 is computed, so memory stays bounded by the server's read chunk
plus a 256 KiB batch handed to the parser and the store's write buffer
(``LETHE_UPLOAD_BUFFER_BYTES``, 1 MiB by default): about 2 MiB, whatever the upload's size.
Oversized parts stop the read at once with 413, and every staged file is removed when the
request fails or the client goes away.

Clients may state the digest they expect, per RFC 9530: a ``Content-Digest: sha-256=:<base64>:``
header on the whole request or on a part, or a form field ``<part>_sha256`` with a hex digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.core.errors import (
    DigestMismatch,
    InvalidInput,
    LetheError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from app.core.storage import ArtifactStore, StagedBlob

MAX_FIELD_BYTES = 1024 * 1024
BATCH_BYTES = 256 * 1024


@dataclass
class UploadedFile:
    name: str
    filename: str
    staged: StagedBlob
    declared_digest: str | None = None


@dataclass
class ParsedForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)


def parse_content_digest(value: str, where: str) -> str:
    """Return the hex SHA-256 from an RFC 9530 ``Content-Digest`` value (other algorithms are
    ignored, as the RFC allows, but one of them must be sha-256)."""
    for item in value.split(","):
        algo, _, rest = item.strip().partition("=")
        if algo.strip().lower() != "sha-256":
            continue
        rest = rest.strip()
        if not (rest.startswith(":") and rest.endswith(":")):
            break
        try:
            raw = base64.b64decode(rest[1:-1], validate=True)
        except binascii.Error:
            break
        if len(raw) == 32:
            return raw.hex()
        break
    raise InvalidInput(
        f"{where} must carry a sha-256 digest as in RFC 9530, e.g. sha-256=:<base64>:",
        errors=[{"field": where, "message": "unparseable Content-Digest", "type": "digest"}],
    )


def content_digest_header(hex_digest: str) -> str:
    return "sha-256=:" + base64.b64encode(bytes.fromhex(hex_digest)).decode() + ":"


class _PartState:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self.name = ""
        self.filename: str | None = None
        self.blob: StagedBlob | None = None
        self.text = bytearray()


@asynccontextmanager
async def receive_multipart(
    request: Request,
    store: ArtifactStore,
    *,
    file_parts: set[str],
    text_parts: set[str],
    max_file_bytes: int,
) -> AsyncIterator[ParsedForm]:
    """Parse the request body; yield the text fields and the staged files. On exit, staged files
    that were not committed to the store are removed, whatever happened."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType(
            "Send multipart/form-data with parts: " + ", ".join(sorted(file_parts | text_parts)),
        )
    request_digest = request.headers.get("content-digest")
    expected_body = (
        parse_content_digest(request_digest, "header.Content-Digest") if (request_digest) else None
    )
    body_hash = hashlib.sha256()

    form = ParsedForm()
    staged: list[StagedBlob] = []
    part = _PartState()
    allowed = file_parts | text_parts
    digest_fields = {f"{name}_sha256" for name in file_parts}

    def _refuse(name: str, message: str) -> InvalidInput:
        return InvalidInput(
            f"part {name!r}: {message}",
            errors=[{"field": f"body.{name}", "message": message, "type": "multipart"}],
        )

    def on_part_begin() -> None:
        nonlocal part
        part = _PartState()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part._field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part._value += data[start:end]

    def on_header_end() -> None:
        part.headers[part._field.decode("latin-1").lower()] = part._value.decode("latin-1")
        part._field.clear()
        part._value.clear()

    def on_headers_finished() -> None:
        disposition, opts = parse_options_header(part.headers.get("content-disposition", ""))
        if disposition != b"form-data" or b"name" not in opts:
            raise _refuse("?", "every part needs Content-Disposition: form-data; name=...")
        part.name = opts[b"name"].decode("utf-8", "replace")
        if part.name not in allowed and part.name not in digest_fields:
            raise _refuse(part.name, f"unexpected part; expected {sorted(allowed)}")
        if part.name in form.fields or part.name in form.files:
            raise _refuse(part.name, "sent twice")
        if part.name in file_parts:
            part.filename = opts.get(b"filename", b"").decode("utf-8", "replace")
            part.blob = store.stage()
            staged.append(part.blob)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.blob is not None:
            if part.blob.size + (end - start) > max_file_bytes:
                raise PayloadTooLarge(
                    f"part {part.name!r} exceeds the {max_file_bytes}-byte upload limit",
                    limit_bytes=max_file_bytes,
                )
            # A view, not a slice: no copy of the upload's bytes on the way to the file.
            part.blob.write(memoryview(data)[start:end])
        else:
            if len(part.text) + (end - start) > MAX_FIELD_BYTES:
                raise _refuse(part.name, f"text fields are limited to {MAX_FIELD_BYTES} bytes")
            part.text += data[start:end]

    def on_part_end() -> None:
        if part.blob is not None:
            part.blob.finish()
            declared = part.headers.get("content-digest")
            form.files[part.name] = UploadedFile(
                name=part.name,
                filename=part.filename or "",
                staged=part.blob,
                declared_digest=(
                    parse_content_digest(declared, f"body.{part.name}.Content-Digest")
                    if declared
                    else None
                ),
            )
        else:
            try:
                form.fields[part.name] = part.text.decode("utf-8")
            except UnicodeDecodeError:
                raise _refuse(part.name, "is not UTF-8 text") from None

    callbacks: dict[str, Callable[..., None]] = {
        "on_part_begin": on_part_begin,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    pending: list[bytes] = []
    pending_size = 0
    try:
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                body_hash.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                # Parsing and file writes run in a thread so a large upload never stalls the
                # event loop; batching 256 KiB per hop keeps the hop cost small and memory low.
                if pending_size >= BATCH_BYTES:
                    await anyio.to_thread.run_sync(parser.write, b"".join(pending))
                    pending, pending_size = [], 0
            if pending:
                await anyio.to_thread.run_sync(parser.write, b"".join(pending))
            parser.finalize()
        except ClientDisconnect:
            raise InvalidInput(
                "The client closed the connection before the upload ended."
            ) from None
        except LetheError:
            raise
        except Exception as exc:
            raise InvalidInput(f"Malformed multipart body: {exc}") from None
        for name in sorted(digest_fields & form.fields.keys()):
            target = name.removesuffix("_sha256")
            value = form.fields.pop(name).strip().lower()
            if target in form.files:
                form.files[target].declared_digest = value
        if expected_body is not None and body_hash.hexdigest() != expected_body:
            raise DigestMismatch(
                "The request body does not match its Content-Digest header.",
                expected=expected_body,
                actual=body_hash.hexdigest(),
            )
        for upload in form.files.values():
            if upload.declared_digest and upload.declared_digest != upload.staged.digest:
                raise DigestMismatch(
                    f"part {upload.name!r} has SHA-256 {upload.staged.digest} but the client"
                    f" declared {upload.declared_digest}; the upload was corrupted or is the"
                    " wrong file",
                    part=upload.name,
                    expected=upload.declared_digest,
                    actual=upload.staged.digest,
                )
        yield form
    finally:
        for blob in staged:
            blob.discard()
