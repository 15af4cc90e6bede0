"""Structured JSON logs with a request ID that follows a request into its job, and Prometheus
metrics (``/metrics``)."""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lethe_request_id", default=None
)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lethe_job_id", default=None
)
REQUEST_ID_HEADER = "X-Request-ID"
access = logging.getLogger("lethe.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request and job IDs, extras."""

    _skip = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,  # which API process or worker, when there are several
        }
        if rid := request_id_var.get():
            out["request_id"] = rid
        if jid := job_id_var.get():
            out["job_id"] = jid
        for key, value in vars(record).items():
            if key not in self._skip and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """JSON lines on stderr for every logger, as a ``dictConfig``: uvicorn applies it in each of
    its worker processes, which do not inherit the parent's handlers."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # uvicorn's own loggers carry no handler of their own: they reach the JSON one.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))


class Metrics:
    """Per-process HTTP metrics plus job gauges read from the database at scrape time."""

    def __init__(self, factory: Callable[[], sessionmaker[Session]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lethe_http_requests_total",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lethe_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self._jobs = _JobCollector(factory)
        self.registry.register(self._jobs)

    def exposition(self) -> bytes:
        """The Prometheus text. With several API processes (``PROMETHEUS_MULTIPROC_DIR`` set, as
        ``lethe api --workers N`` does) the HTTP series are summed over all of them, whichever
        process answers the scrape; the job series come from the database either way."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(self._jobs)
        return generate_latest(registry)


class _JobCollector(Collector):
    def __init__(self, factory: Callable[[], sessionmaker[Session]]) -> None:
        self.factory = factory

    def collect(self) -> Iterator[Any]:
        from app.core.tasks import QUEUES
        from app.models import Job
        from app.models.job import JobState

        by_state = GaugeMetricFamily(
            "lethe_jobs", "Jobs by kind and state.", labels=["kind", "state"]
        )
        depth = GaugeMetricFamily(
            "lethe_queue_depth",
            "Jobs committed and waiting for a worker, by queue.",
            labels=["queue"],
        )
        durations = HistogramMetricFamily(
            "lethe_job_duration_seconds",
            "Run time of finished jobs, from their last start, by kind and final state.",
            labels=["kind", "state"],
        )
        edges = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600)
        with self.factory()() as s:
            for kind, state, n in s.execute(
                select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
            ):
                by_state.add_metric([kind, state], n)
            waiting = dict.fromkeys(QUEUES, 0)  # an empty queue reads 0, not nothing
            for queue, n in s.execute(
                select(Job.queue, func.count())
                .where(Job.state == JobState.queued)
                .group_by(Job.queue)
            ):
                waiting[str(queue)] = int(n)
            for queue, n in waiting.items():
                depth.add_metric([queue], n)
            # One aggregate over every finished job: cumulative counts, as Prometheus expects
            # (jobs are never deleted, so the buckets only grow).
            finished = Job.run_seconds.is_not(None)
            per_edge = [func.sum(case((Job.run_seconds <= e, 1), else_=0)) for e in edges]
            for kind, state, count, total, *cumulative in s.execute(
                select(Job.kind, Job.state, func.count(), func.sum(Job.run_seconds), *per_edge)
                .where(finished)
                .group_by(Job.kind, Job.state)
            ):
                buckets = [(str(e), int(c or 0)) for e, c in zip(edges, cumulative, strict=True)]
                durations.add_metric(
                    [kind, state], buckets=[*buckets, ("+Inf", count)], sum_value=total or 0.0
                )
        yield by_state
        yield depth
        yield durations


class RequestContextMiddleware:
    """Pure ASGI middleware (cheaper than ``BaseHTTPMiddleware``): gives every request an ID (the
    client's ``X-Request-ID`` when it is sane), logs one line per request, and counts it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        rid = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            app = scope.get("app")
            metrics: Metrics | None = getattr(getattr(app, "state", None), "metrics", None)
            if metrics is not None and route != "/metrics":
                metrics.requests.labels(scope["method"], route, str(status)).inc()
                metrics.latency.labels(scope["method"], route).observe(elapsed)
            access.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={"status": status, "duration_ms": round(elapsed * 1000, 2), "route": route},
            )
            request_id_var.reset(token)
