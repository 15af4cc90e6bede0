"""The Celery application the workers run: ``celery -A worker.celery_app worker -Q cpu``.

Configuration is shared with the API's task sender (:func:`app.core.tasks.make_celery`): explicit
task names, JSON only, ``acks_late``, prefetch 1, no result backend (the database holds results).
Nothing here touches torch or the database at import: those are created in the worker process on
first use (see :mod:`worker.context`), never before a fork.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from app.core.config import Settings, SettingsError, get_settings
from app.core.tasks import make_celery


def _settings_or_exit() -> Settings:
    # A bad LETHE_* value: one line and exit 2 (as the `lethe` command does), not a traceback
    # from inside Celery's app loader.
    try:
        return get_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


celery_app = make_celery(_settings_or_exit())
celery_app.conf.update(
    include=[
        "worker.tasks.validate_model",
        "worker.tasks.unlearn",
        "worker.tasks.purge",
        "worker.tasks.reference_kit",
    ]
)

_sweeper: Any = None


def _fresh_resources_after_fork(**_: Any) -> None:
    # A forked pool process must not share its parent's database connections.
    from worker.context import get_context, reset_context

    if get_context.cache_info().currsize:
        get_context().engine.dispose(close=False)
    reset_context()


def _refuse_gpu_queue_without_cuda(sender: Any = None, **_: Any) -> None:
    """A worker taking the ``gpu`` queue on a machine where torch sees no CUDA device would
    run every GPU job on the CPU, hours slower: refuse with one line (exit 1) instead."""
    selected = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    names = set(getattr(selected, "consume_from", None) or {})
    if "gpu" not in names:
        return
    import torch

    # The NVML-based check counts devices without initialising CUDA in this (pre-fork) process.
    previous = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    try:
        available = torch.cuda.is_available()
    finally:
        if previous is None:
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = previous
    if not available:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        print(
            f"error: this worker takes the gpu queue but torch sees no CUDA device{hint};"
            " start it with --queue cpu, or on a machine with a GPU and the CUDA build of torch",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1)


def _check_schema(**_: Any) -> None:
    """Before the pool starts: the rule every process follows (:func:`ensure_schema`). Embedded
    mode migrates; production mode refuses a database not at head with one line naming
    `lethe db upgrade` and exit 1 (3 when the database does not answer), instead of taking
    jobs it would fail on. SystemExit, because Celery logs and ignores a handler's Exception."""
    from app.core.migrate import DatabaseUnreachable, SchemaError, ensure_schema

    try:
        ensure_schema(get_settings())
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(3 if isinstance(exc, DatabaseUnreachable) else 1) from None


def _start_sweeper(**_: Any) -> None:
    global _sweeper
    if get_settings().sweep_interval_seconds <= 0:
        return
    from worker.context import get_context
    from worker.sweeper import SweeperThread

    _sweeper = SweeperThread(get_context())
    _sweeper.start()


def _stop_sweeper(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop()


def _json_logs(loglevel: str | int | None = None, **_: Any) -> None:
    # Connecting to setup_logging stops Celery from installing its own handlers.
    from app.core.observability import configure_logging

    level = loglevel if isinstance(loglevel, str) else logging.getLevelName(loglevel or 20)
    configure_logging(str(level))


setup_logging.connect(_json_logs, weak=False)
worker_init.connect(_refuse_gpu_queue_without_cuda, weak=False)
worker_init.connect(_check_schema, weak=False)
worker_process_init.connect(_fresh_resources_after_fork, weak=False)
worker_ready.connect(_start_sweeper, weak=False)
worker_shutdown.connect(_stop_sweeper, weak=False)
