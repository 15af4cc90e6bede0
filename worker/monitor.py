"""A running job's link to its row: throttled progress writes, cancellation checks and a
heartbeat thread. Every write is fenced by the attempt number, so a worker that lost its claim
(the sweeper re-queued the job) can no longer touch the row.

A database that goes away (a restart, a fail-over) does not end the attempt. The training thread
never waits on it: its first write that fails puts the monitor "away", and until the database
answers again progress is only held in memory (the latest update wins) and ``should_stop`` gives
its last answer. The heartbeat thread retries with bounded exponential backoff (at most
``heartbeat_every`` apart); its first write that succeeds carries the held progress and ends the
outage. ``lost`` is set only by an answer from the database (the row is gone, finished, or
another attempt's), never by a failure to get one.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from app.core.db import database_unavailable, session_scope, unavailable_reason
from app.jobs import repository
from app.models.job import JobState
from worker.context import WorkerContext
from worker.jobs import Backoff

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
        # Shared by the training and heartbeat threads, under the lock: progress not written yet
        # because the database was away, and since when it has been away (monotonic; None while
        # it answers).
        self._lock = threading.Lock()
        self._held: dict[str, Any] | None = None
        self._away_since: float | None = None
        self._backoff = Backoff(first=min(0.25, heartbeat_every), cap=heartbeat_every)
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
        delay = self.heartbeat_every
        while not self._done.wait(delay):
            delay = self._beat_once()

    def _beat_once(self) -> float:
        """One heartbeat, carrying any progress held while the database was away. Returns the
        seconds until the next one: the backoff's next delay while the database is away."""
        try:
            self._flush(None)
        except Exception as exc:
            if database_unavailable(exc):
                return self._backoff.next()
            log.warning("heartbeat of job %s failed; retrying", self.job_id, exc_info=True)
            return self.heartbeat_every
        self._came_back()
        return self.heartbeat_every

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
        self._write(
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
            self._write({})
        return self._stop_requested or self._lost

    @property
    def lost(self) -> bool:
        return self._lost

    @property
    def database_away(self) -> bool:
        """Whether the last write found the database unreachable (and none has succeeded since)."""
        return self._away_since is not None

    # -- writing -------------------------------------------------------------------------------
    def _write(self, progress: dict[str, Any]) -> None:
        """From the training thread: write now, or, while the database is away, only hold the
        progress for the heartbeat thread. A database loss never raises into training; any other
        error does (as a bug should)."""
        if self._away_since is not None:
            if progress:
                with self._lock:
                    self._held = progress
            return
        try:
            self._flush(progress)
        except Exception as exc:
            if not database_unavailable(exc):
                raise

    def _flush(self, progress: dict[str, Any] | None) -> None:
        """Heartbeat plus ``progress`` (or, without one, the progress held back). On any error the
        progress is held again unless something newer was; a database loss starts an outage."""
        with self._lock:
            held, self._held = self._held, None
        latest = progress or held
        try:
            self._touch(latest or {})
        except Exception as exc:
            with self._lock:
                if latest and self._held is None:
                    self._held = latest
            if database_unavailable(exc):
                self._went_away(exc)
            raise

    def _went_away(self, exc: BaseException) -> None:
        with self._lock:
            if self._away_since is not None:
                return
            self._away_since = time.monotonic()
        log.warning(
            "job %s: the database is unreachable (%s); training goes on, progress is held and"
            " the heartbeat retried",
            self.job_id,
            unavailable_reason(exc),
        )

    def _came_back(self) -> None:
        with self._lock:
            since, self._away_since = self._away_since, None
        if since is None:
            return
        self._backoff.reset()
        log.warning(
            "job %s: the database answers again after %.1f s; heartbeat and progress resumed",
            self.job_id,
            time.monotonic() - since,
        )

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
