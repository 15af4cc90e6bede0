"""Per-process worker resources, created lazily after the worker process has started."""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings, get_settings
from app.core.db import make_engine, make_sessionmaker
from app.core.storage import ArtifactStore, open_store
from app.core.tasks import TaskSender


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    store: ArtifactStore
    name: str
    tasks: TaskSender | None = None


@functools.cache
def get_context() -> WorkerContext:
    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    return WorkerContext(
        settings=settings,
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        store=open_store(settings.resolved_artifact_uri, settings),
        name=f"{socket.gethostname()}:{os.getpid()}",
        tasks=TaskSender(settings),
    )


def reset_context() -> None:
    """Forget resources inherited through a fork (connections must not be shared)."""
    get_context.cache_clear()


def apply_torch_threads(settings: Settings) -> None:
    """Cap torch's CPU threads when configured (e.g. a CPU worker sharing its host)."""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
