"""Record real request and response examples for the OpenAPI document.

Runs the service's main flow in this process on a throw-away embedded instance (SQLite, local
files, the worker's job code called directly): registers scikit-learn's digits, trains the
small CNN, validates it, forgets a person's samples, builds a reference kit, and calls every
read operation. The first answer of each documented response schema, shortened (lists to two
items, long strings cut), goes to app/core/openapi_examples.json, which app.core.openapi
attaches to the document. tests/api/test_schema_bounds.py checks each example against its
schema, so a stale file fails the tests instead of misleading a reader.

    .venv/bin/python .ci/openapi_examples.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "app" / "core" / "openapi_examples.json"


def shorten(value: Any, depth: int = 0) -> Any:
    if isinstance(value, list):
        return [shorten(v, depth + 1) for v in value[:2]]
    if isinstance(value, dict):
        if isinstance(value.get("key"), str) and value["key"].startswith("lethe_"):
            # A created key's secret: the shape, not a working key of the throw-away tenant.
            value = {**value, "key": value["key"][:23] + "…(shown once)"}
        items = list(value.items())
        if len(items) > 4 and all(k.isdigit() for k, _ in items):  # per-class tables
            items = items[:4]
        return {k: shorten(v, depth + 1) for k, v in items}
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "…"
    return value


def main() -> int:
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.core.storage import open_store
    from app.main import create_app
    from app.tenants import service as tenants
    from tests import digits
    from worker.context import WorkerContext
    from worker.jobs import claim
    from worker.monitor import JobMonitor
    from worker.tasks.purge import run_purge
    from worker.tasks.reference_kit import run_build
    from worker.tasks.unlearn import run_job
    from worker.tasks.validate_model import run_validation

    data = Path(tempfile.mkdtemp(prefix="lethe-examples-"))
    settings = Settings(data_dir=data)
    app = create_app(settings)
    examples: dict[str, Any] = {"responses": {}, "requests": {}}
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
        with app.state.sessionmaker() as session:
            _, _, key = tenants.create_tenant(session, "acme")
            session.commit()
        h = {"Authorization": f"Bearer {key}"}
        ctx = WorkerContext(
            settings=settings,
            engine=app.state.engine,
            sessionmaker=app.state.sessionmaker,
            store=open_store(settings.resolved_artifact_uri, settings),
            name="examples",
        )

        def record(method: str, template: str, res: Any, body: Any = None) -> Any:
            assert res.status_code < 300, (method, template, res.status_code, res.text)
            op = spec["paths"][template][method]
            if body is not None:
                examples["requests"].setdefault(f"{method} {template}", body)
            for code, response in op["responses"].items():
                if code == str(res.status_code):
                    ref = response.get("content", {}).get("application/json", {}).get("schema", {})
                    name = ref.get("$ref", "").rsplit("/", 1)[-1] or f"{method} {template}"
                    examples["responses"].setdefault(name, shorten(res.json()))
            return res.json()

        def call(method: str, template: str, path: str | None = None, **kw: Any) -> Any:
            res = client.request(method, path or template, headers=h, **kw)
            return record(method, template, res, kw.get("json"))

        def run(job_id: str) -> None:
            attempt = claim(ctx, job_id)
            assert attempt is not None
            run_job(ctx, job_id, attempt)

        call("get", "/healthz")
        call("get", "/readyz")
        call("get", "/v1/whoami")
        ds = call(
            "post", "/v1/datasets",
            files={"train": ("digits.safetensors", digits.dataset_bytes())},
            data={"name": "digits"},
        )  # fmt: skip
        weights, _ = digits.trained()
        mv = call(
            "post", "/v1/models",
            files={"weights": ("model.safetensors", weights)}, data={"spec": digits.spec(ds["id"])},
        )  # fmt: skip
        job = mv["validation_job_id"]
        attempt = claim(ctx, job)
        assert attempt is not None
        run_validation(ctx, job, attempt)
        model = mv["id"]
        kit = call(
            "post", "/v1/models/{model_id}/reference-kits", f"/v1/models/{model}/reference-kits",
            json={"k": 4, "seed": 0},
        )  # fmt: skip
        attempt = claim(ctx, kit["job_id"])
        assert attempt is not None
        with JobMonitor(ctx, kit["job_id"], attempt, heartbeat_every=3600) as monitor:
            run_build(ctx, kit["job_id"], attempt, monitor)
        person = digits.sample_ids_of_class(6)[:20]
        body = {
            "sample_ids": person,
            "reason": "GDPR art. 17 request",
            "subject_ref": "ticket-8841",
        }
        fr = call(
            "post", "/v1/models/{model_id}/forget-requests", f"/v1/models/{model}/forget-requests",
            json=body,
        )  # fmt: skip
        run(fr["job_id"])
        purge = client.get(f"/v1/jobs/{fr['job_id']}", headers=h).json()["outcome"]["purge_job_id"]
        attempt = claim(ctx, purge)
        assert attempt is not None
        run_purge(ctx, purge, attempt)
        group = call(
            "post", "/v1/datasets/{dataset_id}/forget-requests",
            f"/v1/datasets/{ds['id']}/forget-requests",
            json={"class_ids": [2], "reason": "licence for class 2 withdrawn"},
        )  # fmt: skip
        pending = group["requests"][0]
        new = client.get(f"/v1/forget-requests/{fr['id']}", headers=h).json()["result_model_id"]
        ids = {
            "model_id": new, "dataset_id": ds["id"], "job_id": fr["job_id"],
            "request_id": fr["id"], "group_id": group["id"], "kit_id": kit["id"],
            "sample_id": person[0], "split": "train",
        }  # fmt: skip
        for template in (
            "/v1/tenant/settings", "/v1/tenant/settings/effective", "/v1/api-keys",
            "/v1/datasets", "/v1/datasets/{dataset_id}", "/v1/datasets/{dataset_id}/samples",
            "/v1/models", "/v1/models/{model_id}", "/v1/jobs", "/v1/jobs/{job_id}",
            "/v1/forget-request-groups/{group_id}", "/v1/forget-requests",
            "/v1/forget-requests/{request_id}", "/v1/models/{model_id}/lineage",
            "/v1/datasets/{dataset_id}/samples/{sample_id}/exposure",
            "/v1/models/{model_id}/certificate", "/v1/signing-keys", "/v1/erasure-receipts",
            "/v1/reference-kits", "/v1/reference-kits/{kit_id}", "/v1/audit-events",
            "/v1/audit-events/verify",
        ):  # fmt: skip
            call("get", template, template.format(**ids), params={"limit": 2} if template in (
                "/v1/datasets/{dataset_id}/samples", "/v1/audit-events") else None)  # fmt: skip
        receipts = client.get("/v1/erasure-receipts", headers=h).json()["items"]
        if receipts:
            call(
                "get",
                "/v1/erasure-receipts/{receipt_id}",
                f"/v1/erasure-receipts/{receipts[0]['id']}",
            )
        event = client.get("/v1/audit-events", headers=h).json()["items"][0]["id"]
        call("get", "/v1/audit-events/{event_id}", f"/v1/audit-events/{event}")
        call(
            "put", "/v1/tenant/settings",
            json={"fallback_retrain": True, "policy": {"sample_fa_gap_max": 5.0}},
        )  # fmt: skip
        call("patch", "/v1/tenant/settings", json={"retention_days": 7})
        created = call("post", "/v1/api-keys", json={"role": "auditor"})
        call("delete", "/v1/api-keys/{key_id}", f"/v1/api-keys/{created['id']}")
        call("post", "/v1/jobs/{job_id}/cancel", f"/v1/jobs/{pending['job_id']}/cancel")
        call(
            "post", "/v1/forget-requests/{request_id}/withdraw",
            f"/v1/forget-requests/{pending['id']}/withdraw",
            json={"reason": "the data subject withdrew the request"},
        )  # fmt: skip
        from app.audit import checkpoints as audit_checkpoints
        from app.certificates.service import signer_for

        with app.state.sessionmaker() as session:
            tenant_id = client.get("/v1/whoami", headers=h).json()["tenant_id"]
            audit_checkpoints.issue(session, signer_for(settings), tenant_id)
            session.commit()
        call("get", "/v1/audit-checkpoints/latest")
        checkpoints = client.get("/v1/audit-checkpoints", headers=h)
        if checkpoints.status_code == 200 and checkpoints.json()["items"]:
            record("get", "/v1/audit-checkpoints", checkpoints)
    OUT.write_text(json.dumps(examples, indent=1, sort_keys=True) + "\n")
    print(f"{len(examples['responses'])} response and {len(examples['requests'])} request examples"
          f" -> {OUT.relative_to(ROOT)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
