"""A running job's link to its row: throttled progress writes, cancellation checks and a
heartbeat thread. Every write is fenced by the attempt number, so a worker that lost its claim
(the sweeper re-queued the job) can no longer touch the row."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from app.core.db import session_scope
from app.jobs import repository
from app.models.job import JobState
from worker.context import WorkerContext

log = logging.getLogger(__name__)


class JobMonitor:
    def __init__(
        self,
        ctx: WorkerContext,
        job_id: str,
        attempt: int,
        *,
        interval: float = 0.5,
        heartbeat_every: float = 5.0,
    ) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.attempt = attempt
        self.interval = interval
        self.heartbeat_every = heartbeat_every
        self._last_write = 0.0
        self._last_check = 0.0
        self._phase: str | None = None
        self._phase_started = datetime.now(UTC)
        self._stop_requested = False
        self._lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> JobMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._done.wait(self.heartbeat_every):
            try:
                self._touch({})
            except Exception:  # a missed heartbeat is retried; the job goes on
                log.warning("heartbeat of job %s failed; retrying", self.job_id, exc_info=True)

    # -- what the engine calls -----------------------------------------------------------------
    def prefixed(self, prefix: str) -> _Prefixed:
        """Progress of a sub-run (e.g. the retrained reference) under ``prefix:phase``."""
        return _Prefixed(self, prefix)

    def progress(self, update: dict[str, Any]) -> None:
        phase = str(update.get("phase"))
        now = time.monotonic()
        if phase != self._phase:
            self._phase = phase
            self._phase_started = datetime.now(UTC)
        elif now - self._last_write < self.interval and update.get("step") != update.get("total"):
            return
        self._last_write = now
        self._touch(
            {
                "phase": phase,
                "step": update.get("step"),
                "total": update.get("total"),
                "losses": update.get("losses") or {},
                "phase_started_at": self._phase_started.isoformat(),
                "updated_at": datetime.now(UTC).isoformat(),
            }
        )

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_check >= self.interval:
            self._last_check = now
            self._touch({})
        return self._stop_requested or self._lost

    @property
    def lost(self) -> bool:
        return self._lost

    def _touch(self, progress: dict[str, Any]) -> None:
        """One short transaction: heartbeat, optional progress, read the cancel flag."""
        with session_scope(self.ctx.sessionmaker) as session:
            job = repository.get_for_update(session, self.job_id)
            if job is None or job.state != JobState.running or job.attempts != self.attempt:
                self._lost = True
                return
            job.heartbeat_at = datetime.now(UTC)
            if progress:
                job.progress = progress
            self._stop_requested = bool(job.cancel_requested)


class _Prefixed:
    def __init__(self, parent: JobMonitor, prefix: str) -> None:
        self._parent = parent
        self._prefix = prefix

    def progress(self, update: dict[str, Any]) -> None:
        self._parent.progress({**update, "phase": f"{self._prefix}:{update.get('phase')}"})

    def should_stop(self) -> bool:
        return self._parent.should_stop()
