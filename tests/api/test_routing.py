"""Jobs go to the gpu or cpu queue by one documented rule (app/jobs/routing.py): the request's
device, else the tenant's, else the service's; `auto` by the model's size."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app import cli
from app.core.config import Settings
from app.jobs.routing import choose_queue
from tests import digits
from tests.factories import TenantKeys

MB = 1_000_000


@pytest.mark.parametrize(
    ("request_device", "tenant_device", "service", "size", "queue", "why"),
    [
        (None, None, "cpu", 400 * MB, "cpu", "the service's"),
        (None, None, "gpu", 4, "gpu", "the service's"),
        (None, "gpu", "cpu", 4, "gpu", "the tenant's"),
        ("cpu", "gpu", "gpu", 400 * MB, "cpu", "the request's"),
        (None, "auto", "cpu", 8 * MB, "gpu", "2,000,000 parameters is at least"),
        (None, "auto", "gpu", 8 * MB - 4, "cpu", "1,999,999 parameters is below"),
        ("auto", None, "gpu", 44 * MB, "gpu", "the request's device is auto"),
    ],
)
def test_the_rule(
    request_device: str | None, tenant_device: str | None, service: str, size: int, queue: str,
    why: str,
) -> None:  # fmt: skip
    """A pure unit test of the rule (no service)."""
    route = choose_queue(
        request_device=request_device,
        tenant_device=tenant_device,
        service_queue=service,
        weights_size=size,
        gpu_min_parameters=2 * MB,
    )
    assert route.queue == queue and why in route.reason


@pytest.fixture()
def settings(settings: Settings) -> Settings:
    # `auto` for the service, with a threshold the digits CNN (~0.1 M parameters) passes.
    return settings.model_copy(update={"job_queue": "auto", "gpu_min_parameters": 1000})


def _queue_of(client: TestClient, acme: TenantKeys, model_id: str, **body: object) -> str:
    ids = digits.sample_ids_of_class(1)[:3]
    res = client.post(
        f"/v1/models/{model_id}/forget-requests",
        json={"sample_ids": ids, **body},
        headers=acme.headers(),
    )
    assert res.status_code == 202, res.text
    job = client.get(f"/v1/jobs/{res.json()['job_id']}", headers=acme.headers()).json()
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=acme.headers())  # the next gets its own
    return str(job["queue"])


def test_jobs_follow_the_request_then_the_tenant_then_the_service(
    client: TestClient, acme: TenantKeys, digits_model_id: str
) -> None:
    assert _queue_of(client, acme, digits_model_id) == "gpu"  # auto: above the threshold
    res = client.patch("/v1/tenant/settings", json={"device": "cpu"}, headers=acme.headers("admin"))
    assert res.status_code == 200 and res.json()["device"] == "cpu"
    effective = client.get("/v1/tenant/settings/effective", headers=acme.headers()).json()
    assert effective["device"] == {"value": "cpu", "source": "tenant"}
    assert _queue_of(client, acme, digits_model_id) == "cpu"
    assert _queue_of(client, acme, digits_model_id, device="gpu") == "gpu"
    bad = client.post(
        f"/v1/models/{digits_model_id}/forget-requests",
        json={"class_ids": [1], "device": "tpu"},
        headers=acme.headers(),
    )
    assert bad.status_code == 422
    kit = client.post(
        f"/v1/models/{digits_model_id}/reference-kits", json={"k": 2}, headers=acme.headers()
    ).json()
    job = client.get(f"/v1/jobs/{kit['job_id']}", headers=acme.headers()).json()
    assert job["queue"] == "cpu"  # the tenant's device


def test_a_gpu_worker_runs_one_job_at_a_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["worker", "--queue", "gpu", "--concurrency", "2"]) == 2
    assert "one job at a time" in capsys.readouterr().err
    assert cli.main(["worker", "--queue", "cpu", "--gpu", "0"]) == 2
    assert "--gpu needs --queue gpu" in capsys.readouterr().err
