"""The settings long jobs depend on, read from a running worker (Celery's remote control), not
from the configuration file: late acks, requeue when a worker dies, one message at a time, and a
broker visibility timeout above the longest job. And a ``gpu`` worker without CUDA refuses."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from app.core.config import Settings
from app.core.tasks import make_celery, worker_command
from tests.worker.conftest import ROOT, WorkerProcess


def ask(settings: Settings, method: str, timeout: float = 90, **kwargs: Any) -> dict[str, Any]:
    """Replies of the running workers to one remote-control query, once they answer."""
    inspect = make_celery(settings).control.inspect(timeout=2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = getattr(inspect, method)(**kwargs)
        if replies:
            return dict(replies)
        time.sleep(0.5)
    raise AssertionError(f"no worker answered {method} within {timeout} s")


def test_a_running_worker_acks_late_requeues_and_prefetches_one(
    celery_worker: WorkerProcess, worker_settings: Settings
) -> None:
    confs = ask(worker_settings, "conf", with_defaults=True)
    stats = ask(worker_settings, "stats")
    queues = ask(worker_settings, "active_queues")
    assert confs.keys() == stats.keys() == queues.keys(), "one worker (this test's) answers"
    for name, conf in confs.items():
        assert conf["task_acks_late"] is True, name
        assert conf["task_reject_on_worker_lost"] is True, name
        assert conf["worker_prefetch_multiplier"] == 1, name
        # The broker redelivers an unacknowledged message after this long: it must not do so
        # while the job is still running.
        timeout = conf["broker_transport_options"]["visibility_timeout"]
        assert timeout > worker_settings.job_timeout_seconds, name
        # What the consumer actually applies: one unacknowledged message per process.
        assert stats[name]["prefetch_count"] == 1, stats[name]
        assert stats[name]["pool"]["max-concurrency"] == 1
        assert [q["name"] for q in queues[name]] == ["cpu"]
    assert celery_worker.proc is not None and celery_worker.proc.poll() is None


def test_a_gpu_worker_without_cuda_refuses_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    # No device visible, whatever the machine has: torch sees no CUDA.
    env.update(CUDA_VISIBLE_DEVICES="", LETHE_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run(
        worker_command("gpu", name="gpu-refusal@%h"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: this worker takes the gpu queue but torch sees no CUDA device"
        " (CUDA_VISIBLE_DEVICES=''); start it with --queue cpu, or on a machine with a GPU and"
        " the CUDA build of torch"
    ]
    assert "Traceback" not in done.stderr and "celery@" not in done.stdout
