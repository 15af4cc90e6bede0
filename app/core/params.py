"""Bounded path and query parameters shared by the routers.

Every string the API accepts has a length limit in its OpenAPI document, so a client (or a
fuzzer) knows the contract and an oversized value is refused with 422 before any query runs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

# IDs are UUIDs (36 characters) or, for API keys, 16 hex digits; 64 leaves room and still
# refuses a megabyte in the path before it reaches a query.
ResourceId = Annotated[str, Path(max_length=64, description="The resource's ID.")]

# A keyset cursor is ~100 characters (a signed timestamp and ID); 512 is generous.
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page")
]

# Filters by ID, and free-text filters (names, actions, actors).
IdFilter = Annotated[str | None, Query(max_length=64)]
TextFilter = Annotated[str | None, Query(max_length=200)]
