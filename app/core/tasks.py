"""Send worker tasks by name. The API never imports the worker (or torch): it only needs the
broker connection and the task's registered name.

Celery is configured here once for both sides: the worker's ``celery_app`` builds on
:func:`make_celery`, so both agree on the broker, serialisation and reliability settings.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from app.core.config import Settings

log = logging.getLogger(__name__)

VALIDATE_MODEL = "lethe.validate_model"
UNLEARN = "lethe.unlearn"
PURGE = "lethe.purge"
BUILD_REFERENCE_KIT = "lethe.build_reference_kit"
QUEUES = ("cpu", "gpu")


def make_celery(settings: Settings) -> Celery:
    app = Celery("lethe", broker=settings.broker_url, set_as_current=False)
    transport_options: dict[str, Any] = {
        # Longer than any job: a message is redelivered only when its worker is really gone.
        "visibility_timeout": settings_visibility_timeout(settings),
    }
    if settings.broker_url.startswith("filesystem://"):
        spool = settings.broker_spool_dir
        for sub in ("queue", "processed", "control"):
            (spool / sub).mkdir(parents=True, exist_ok=True)
        transport_options.update(
            data_folder_in=str(spool / "queue"),
            data_folder_out=str(spool / "queue"),
            processed_folder=str(spool / "processed"),
            # Without this kombu writes its broadcast "control" folder into the working directory.
            control_folder=str(spool / "control"),
            store_processed=False,
        )
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        # The job row is the state; the message only says "look at job X". Ack after the task
        # ran, one message per worker process at a time.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="cpu",
        worker_hijack_root_logger=False,
    )
    return app


def settings_visibility_timeout(settings: Settings) -> int:
    return int(settings.job_timeout_seconds * 2)


class TaskSender:
    """Sends ``name(job_id)`` to a queue. Created once per API process; connects lazily."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._celery: Celery | None = None

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = make_celery(self._settings)
        return self._celery

    def send(self, name: str, job_id: str, queue: str) -> None:
        self.celery.send_task(name, args=[job_id], queue=queue)
        log.info("sent %s for job %s to queue %s", name, job_id, queue)

    def ping(self) -> None:
        """Raise if the broker cannot be reached (for /readyz)."""
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)


def worker_command(
    queue: str = "cpu",
    *,
    pool: str = "solo",
    concurrency: int = 1,
    loglevel: str = "info",
    name: str | None = None,
) -> list[str]:
    """The argv that starts a Celery worker on ``queue`` (a separate program: the API package
    never imports the worker)."""
    import sys

    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        queue,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "-n",
        name or f"lethe-{queue}@%h",
    ]
