"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app import __version__
from app.audit.endpoints import router as audit_router
from app.certificates.endpoints import router as certificates_router
from app.console.endpoints import install_console
from app.core.body_limit import BodyLimitMiddleware
from app.core.config import Mode, Settings, get_settings
from app.core.db import make_engine, make_sessionmaker
from app.core.docs import install_docs
from app.core.errors import install_handlers
from app.core.observability import Metrics, RequestContextMiddleware
from app.core.openapi import (
    document_body_limit,
    document_examples,
    document_problems,
    document_unavailable,
)
from app.core.storage import open_store
from app.core.tasks import TaskSender
from app.datasets.endpoints import router as datasets_router
from app.erasure.endpoints import router as erasure_router
from app.forget_requests.endpoints import router as forget_router
from app.health.endpoints import router as health_router
from app.jobs.endpoints import router as jobs_router
from app.model_registry.endpoints import router as models_router
from app.reference_kits.endpoints import router as kits_router
from app.tenants.endpoints import router as tenants_router
from app.tenants.keycache import KeyCache

log = logging.getLogger(__name__)

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "required": ["type", "title", "status"],
    "example": {
        "type": "https://lethe.dev/problems/not-found",
        "title": "Resource not found",
        "status": 404,
        "detail": "No model 0b4f...",
    },
}


def _publish_signing_key(settings: Settings, factory: sessionmaker[Session]) -> None:
    """Embedded mode: create the signing key on first start and publish its public half."""
    from app.certificates.service import register_key, signer_for
    from app.core.db import session_scope

    signer = signer_for(settings)
    try:
        with session_scope(factory) as session:
            register_key(session, signer)
    except IntegrityError:
        pass  # another API process of this service registered it at the same moment


def prepare_database(
    settings: Settings,
    factory: sessionmaker[Session] | None = None,
    engine: Engine | None = None,
) -> None:
    """What a starting API does to its database: bring the schema to head or refuse to start
    (:func:`app.core.migrate.ensure_schema`, the rule the CLI and the worker follow too), and in
    embedded mode publish the signing key. The lifespan does it with the app's engine and
    sessions; `lethe api` does it first, so that a refusal is one line and N processes do not
    race."""
    from app.core.migrate import ensure_schema

    ensure_schema(settings, engine)
    if settings.mode is not Mode.embedded:
        return
    if factory is not None:
        _publish_signing_key(settings, factory)
        return
    engine = make_engine(settings.resolved_database_url)
    try:
        _publish_signing_key(settings, make_sessionmaker(engine))
    finally:
        engine.dispose()


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    tasks: TaskSender | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    owns_engine = engine is None
    engine = engine or make_engine(settings.resolved_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        prepare_database(settings, app.state.sessionmaker, engine)
        yield
        if owns_engine:
            engine.dispose()

    app = FastAPI(
        title="Lethe",
        version=__version__,
        summary="Machine unlearning as a service.",
        description="Upload a model and the data it was trained on; ask it to forget samples or"
        " classes; get back a new version with measured evidence. Authenticate with"
        " `Authorization: Bearer <key>`. Errors are RFC 9457 `application/problem+json`.",
        lifespan=lifespan,
        # /docs is served from installed files (app.core.docs); ReDoc would load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.key_cache = KeyCache(settings.auth_cache_seconds)
    app.state.store = open_store(settings.resolved_artifact_uri, settings)
    app.state.tasks = tasks or TaskSender(settings)
    install_handlers(app)
    # A getter, not the sessionmaker itself: tests swap the sessionmaker after the app is built.
    app.state.metrics = Metrics(lambda: app.state.sessionmaker)
    # Added first, so it runs inside the request context (its 413 is logged and counted) but
    # before routing: an over-limit body is refused before authentication or parsing reads it.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_json_body_bytes)
    app.add_middleware(RequestContextMiddleware)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    for router in (
        health_router,
        tenants_router,
        datasets_router,
        models_router,
        jobs_router,
        forget_router,
        certificates_router,
        erasure_router,
        kits_router,
        audit_router,
    ):
        app.include_router(router)
    install_console(app)

    def _openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        document_body_limit(schema, settings.max_json_body_bytes)
        document_unavailable(schema)
        document_problems(schema)
        document_examples(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = _openapi  # type: ignore[method-assign]
    return app
