"""Sample-ID lists sent as a file: for lists too long for a JSON body
(``LETHE_MAX_JSON_BODY_BYTES``), or when a file is the export a data team already has.

The file is plain text: integers separated by newlines, commas, spaces or tabs. It is read in
bounded chunks from the staged upload, so memory grows with the number of IDs (which is capped),
never with the file's size or its line lengths.
"""

from __future__ import annotations

import re
from pathlib import Path

from app.core.errors import InvalidInput

_SEPARATORS = re.compile(rb"[\s,]+")
_INT64 = (-(2**63), 2**63 - 1)
# The widest int64 is 20 characters with its sign; a longer token cannot be an ID.
_MAX_TOKEN = 20
CHUNK_BYTES = 1024 * 1024


def max_file_bytes(max_ids: int) -> int:
    """The largest file that can hold ``max_ids`` IDs: each at int64's widest plus a separator
    (CRLF), and a little room for a header-free file's trailing whitespace."""
    return max_ids * (_MAX_TOKEN + 2) + 4096


def read_sample_ids(path: Path, max_ids: int, field: str = "body.sample_ids") -> list[int]:
    """Parse the file's IDs; refuse a token that is not an int64, and more than ``max_ids``."""

    def refuse(message: str) -> InvalidInput:
        return InvalidInput(message, errors=[{"field": field, "message": message}])

    ids: list[int] = []
    carry = b""
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(CHUNK_BYTES)
            data = carry + chunk
            tokens = _SEPARATORS.split(data)
            # The last token may continue in the next chunk, unless the file has ended.
            carry = tokens.pop() if chunk else b""
            if len(carry) > _MAX_TOKEN:
                raise refuse(f"{carry[:24]!r}… is not a sample ID (an int64)")
            for token in tokens:
                if not token:
                    continue
                if len(token) > _MAX_TOKEN or not re.fullmatch(rb"[+-]?[0-9]+", token):
                    raise refuse(f"{token[:24]!r} is not a sample ID (an int64)")
                value = int(token)
                if not _INT64[0] <= value <= _INT64[1]:
                    raise refuse(f"{value} is outside the int64 range of sample IDs")
                ids.append(value)
                if len(ids) > max_ids:
                    raise refuse(f"the file holds more than the limit of {max_ids} sample IDs")
            if not chunk:
                break
    if not ids:
        raise refuse("the file holds no sample IDs")
    return ids
