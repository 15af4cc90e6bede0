"""Property-based fuzzing of every operation in the OpenAPI description (schemathesis), against
the real app and a real PostgreSQL: no answer may be a 5xx, and every error is problem+json."""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from sqlalchemy.orm import Session

from tests.factories import make_tenant

EXAMPLES_PER_OPERATION = 20


def test_no_server_errors_and_problem_json(app: FastAPI, db: Session) -> None:
    # An admin key, so that generated requests get past authentication to the real handlers.
    headers = make_tenant(db, "fuzz").headers("admin")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            response = case.call(headers=headers)
            where = (case.method, case.formatted_path, response.status_code)
            assert response.status_code < 500, (*where, response.text[:300])
            if response.status_code >= 400:
                ctype = {k.lower(): v for k, v in response.headers.items()}.get("content-type")
                ctype = ctype[0] if isinstance(ctype, list) else ctype
                assert str(ctype).startswith("application/problem+json"), where

        check()
