"""Progress reporting, cancellation and cost accounting shared by training and every method."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

ProgressFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]


class Cancelled(Exception):
    """Raised inside a run when ``should_stop()`` returned true; no result is produced."""


@dataclass
class Counters:
    """Cost of a run in batch passes: forward passes, backward passes, optimizer steps, samples
    seen by a forward pass."""

    forward: int = 0
    backward: int = 0
    optimizer_steps: int = 0
    samples: int = 0

    def add(self, other: Counters) -> None:
        self.forward += other.forward
        self.backward += other.backward
        self.optimizer_steps += other.optimizer_steps
        self.samples += other.samples

    def as_dict(self) -> dict[str, int]:
        return {
            "forward_passes": self.forward,
            "backward_passes": self.backward,
            "optimizer_steps": self.optimizer_steps,
            "samples_forwarded": self.samples,
        }


@dataclass
class Reporter:
    """Checks ``should_stop`` at every step and forwards progress.

    Loss values are device tensors; turning them into Python floats forces a device sync, so that
    happens only every ``sync_every`` steps (and at a phase's last step). In between, ``progress``
    receives the latest synced values.
    """

    progress: ProgressFn | None = None
    should_stop: StopFn | None = None
    sync_every: int = 25
    counters: Counters = field(default_factory=Counters)
    _losses: dict[str, float] = field(default_factory=dict)
    _last_sync: float = field(default_factory=time.monotonic)

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("stopped on request")

    def step(
        self,
        phase: str,
        step: int,
        total: int,
        losses: Mapping[str, torch.Tensor | float] | None = None,
    ) -> None:
        """Call once per step *before* its work: raises :class:`Cancelled` when asked to stop."""
        self.check()
        if losses and (step % self.sync_every == 0 or step >= total):
            self._losses = {
                k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                for k, v in losses.items()
            }
        if self.progress is not None:
            self.progress(
                {"phase": phase, "step": step, "total": total, "losses": dict(self._losses)}
            )
