"""Which queue a job goes to: ``gpu`` or ``cpu``, by a documented rule.

The first of these that is set decides: the request's ``device``, the tenant's ``device``
setting, the service's ``LETHE_JOB_QUEUE``. ``cpu`` and ``gpu`` mean that queue. ``auto`` sends a
model with at least ``LETHE_GPU_MIN_PARAMETERS`` parameters to ``gpu`` and a smaller one to
``cpu``, where it runs about as fast without holding a GPU (the small CNN of the demo has 0.1 M
parameters, ResNet-18 11 M). Parameters are counted from the weights file, 4 bytes each: uploads
are float32 (``app.core.safetensors_check`` refuses other float dtypes). ``auto`` needs workers
on both queues; a deployment with one kind of worker names that queue instead.

Jobs that need no model on a device (a purge) follow the service's queue, or ``cpu`` under
``auto``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from app.models import ModelVersion, Tenant

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.core.config import Settings

Device = Literal["auto", "cpu", "gpu"]
BYTES_PER_PARAMETER = 4


@dataclass(frozen=True)
class Route:
    queue: Literal["cpu", "gpu"]
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"queue": self.queue, "reason": self.reason}


def choose_queue(
    *,
    request_device: str | None,
    tenant_device: str | None,
    service_queue: str,
    weights_size: int,
    gpu_min_parameters: int,
) -> Route:
    """The queue of a job on a model whose weights file has ``weights_size`` bytes.

    >>> choose_queue(request_device=None, tenant_device="auto", service_queue="cpu",
    ...              weights_size=44_000_000, gpu_min_parameters=2_000_000).queue
    'gpu'
    >>> choose_queue(request_device="cpu", tenant_device="gpu", service_queue="gpu",
    ...              weights_size=44_000_000, gpu_min_parameters=2_000_000).reason
    "the request's device is cpu"
    """
    for source, device in (
        ("the request's", request_device),
        ("the tenant's", tenant_device),
        ("the service's (LETHE_JOB_QUEUE)", service_queue),
    ):
        if device is None:
            continue
        if device == "cpu":
            return Route("cpu", f"{source} device is cpu")
        if device == "gpu":
            return Route("gpu", f"{source} device is gpu")
        parameters = weights_size // BYTES_PER_PARAMETER
        big = parameters >= gpu_min_parameters
        return Route(
            "gpu" if big else "cpu",
            f"{source} device is auto: {parameters:,} parameters is"
            f" {'at least' if big else 'below'} LETHE_GPU_MIN_PARAMETERS ({gpu_min_parameters:,})",
        )
    raise ValueError("the service's queue must be set")


def service_only(service_queue: str) -> Literal["cpu", "gpu"]:
    """The queue of a job that runs no model (a purge)."""
    return "gpu" if service_queue == "gpu" else "cpu"


def route(
    session: Session,
    settings: Settings,
    *,
    tenant_id: str,
    model: ModelVersion,
    request_device: str | None = None,
) -> Route:
    """:func:`choose_queue` with the tenant's setting and the service's read here."""
    tenant = session.get(Tenant, tenant_id)
    tenant_device = (tenant.settings or {}).get("device") if tenant is not None else None
    return choose_queue(
        request_device=request_device,
        tenant_device=tenant_device,
        service_queue=settings.job_queue,
        weights_size=model.weights_size,
        gpu_min_parameters=settings.gpu_min_parameters,
    )
