"""Typed dependency aliases shared by every router."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import session_scope
from app.core.storage import ArtifactStore
from app.core.tasks import TaskSender


def get_session(request: Request) -> Iterator[Session]:
    """The request's unit of work: commits once after the endpoint returns, before the response
    is sent, then runs after-commit hooks (task sends)."""
    with session_scope(request.app.state.sessionmaker) as session:
        yield session


# Trivial dependencies are async so that FastAPI does not hop to a worker thread for them.
async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


async def get_tasks(request: Request) -> TaskSender:
    tasks: TaskSender = request.app.state.tasks
    return tasks


# scope="function": commit before the response is sent, so a 2xx always means "stored".
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
TasksDep = Annotated[TaskSender, Depends(get_tasks)]
