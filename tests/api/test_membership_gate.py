"""The per-example membership audit in the service: a reference kit is built once by a job,
every later job on that manifest and recipe audits its forget set with it, the sample-wise gate
relies on it, and the certificate carries its figures (or says the evidence is population-only).
Real PostgreSQL, the real engine, the worker's job code in this process."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi.testclient import TestClient

from app.certificates.policy import Thresholds, judge
from tests import digits
from tests.api.conftest import Lethe
from tests.api.test_policy_and_progress import forget_and_run
from tests.factories import TenantKeys
from worker.context import WorkerContext
from worker.jobs import claim
from worker.monitor import JobMonitor
from worker.tasks.reference_kit import run_build

METRICS = {"FA": 99.0, "RA": 99.0, "TA": 98.0}


def audit(share: float, alpha: float = 0.05, tolerance: float = 0.04) -> dict[str, Any]:
    return {
        "alphas": [{"alpha": alpha, "share_flagged": share}],
        "tolerance": {str(alpha): tolerance},
    }


def test_the_sample_wise_gate_fails_a_model_whose_samples_are_still_flagged() -> None:
    still = {"audits": {"unlearned": audit(0.25)}}
    verdict = judge("sample", METRICS, METRICS, Thresholds(), None, still)
    assert not verdict.passed and "per-example audit" in verdict.reasons[0]
    forgotten = {"audits": {"unlearned": audit(0.06)}}
    assert judge("sample", METRICS, METRICS, Thresholds(), None, forgotten).passed
    # Against a retrained reference the expectation is its own flagged share.
    both = {"audits": {"unlearned": audit(0.12), "retrained": audit(0.10)}}
    assert judge("sample", METRICS, METRICS, Thresholds(), None, both).passed
    # Class-wise: reported, not judged; no kit: the verdict says the evidence is population-only.
    cls = judge("class", {**METRICS, "TA": 98.0}, {**METRICS, "FA": 0.0}, Thresholds(), None, still)
    assert cls.passed and cls.checks["membership"]["checked"] is False
    none = judge("sample", METRICS, METRICS, Thresholds())
    assert none.passed and none.checks["membership"].startswith("population-only")


def test_a_kit_is_built_once_and_audits_later_requests(
    client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext, digits_model_id: str
) -> None:
    job = forget_and_run(
        client, acme, worker_ctx, digits_model_id, {"sample_ids": digits.sample_ids_of_class(1)[:5]}
    )
    cert = client.get(f"/v1/models/{job['result_model_id']}/certificate", headers=acme.headers())
    pred = json.loads(base64.b64decode(cert.json()["payload"]))["predicate"]
    assert pred["membership_audit"]["status"] == "population-only"

    url = f"/v1/models/{digits_model_id}/reference-kits"
    res = client.post(url, json={"k": 4}, headers=acme.headers())
    assert res.status_code == 202, res.text
    kit = res.json()
    assert kit["status"] == "building" and kit["k"] == 4
    again = client.post(url, json={"k": 4}, headers=acme.headers())
    assert again.status_code == 200 and again.json()["id"] == kit["id"]
    attempt = claim(worker_ctx, kit["job_id"])
    assert attempt is not None
    with JobMonitor(worker_ctx, kit["job_id"], attempt, heartbeat_every=3600) as monitor:
        run_build(worker_ctx, kit["job_id"], attempt, monitor)
    built = client.get(f"/v1/reference-kits/{kit['id']}", headers=acme.headers()).json()
    assert built["status"] == "ready" and built["digest"] and built["optimizer_steps"]
    kinds = client.get("/v1/jobs", params={"kind": "build_reference_kit"}, headers=acme.headers())
    assert [j["state"] for j in kinds.json()["items"]] == ["succeeded"]

    person = digits.sample_ids_of_class(6)[:30]
    job = forget_and_run(client, acme, worker_ctx, digits_model_id, {"sample_ids": person})
    cert = client.get(f"/v1/models/{job['result_model_id']}/certificate", headers=acme.headers())
    pred = json.loads(base64.b64decode(cert.json()["payload"]))["predicate"]
    audit_ = pred["membership_audit"]
    assert audit_["status"] == "ok" and audit_["kit"]["id"] == kit["id"]
    assert audit_["kit"]["k"] == 4 and "evidence, not a proof" in audit_["test"]
    for name in ("original", "unlearned"):
        figures = audit_["audits"][name]
        assert figures["n"] == 30 and figures["k"] == 4 and figures["epsilon_cap"] > 0
        assert [a["alpha"] for a in figures["alphas"]] == [0.01, 0.05]
    assert "by_alpha" in pred["policy"]["checks"]["membership"]
    # SFR-on aimed at the kit's per-sample OUT levels, and the certificate says so.
    assert pred["run"]["mode"] == "kit_targeted" and pred["run"]["targets"]["k"] == 4

    # A version that fails the gate falls back to retraining (the tenant's policy): the
    # certificate's per-example figures are then the retrained model's, the failed method's
    # kept beside them, never the failed one's under the certified model's name.
    strict = {"fallback_retrain": True, "policy": {"sample_fa_gap_max": 0.0}}
    res = client.put("/v1/tenant/settings", json=strict, headers=acme.headers("admin"))
    assert res.status_code == 200, res.text
    person = digits.sample_ids_of_class(7)[:30]
    job = forget_and_run(client, acme, worker_ctx, digits_model_id, {"sample_ids": person})
    assert job["state"] == "succeeded" and job["outcome"]["fallback"] is True, job["error"]
    cert = client.get(f"/v1/models/{job['result_model_id']}/certificate", headers=acme.headers())
    pred = json.loads(base64.b64decode(cert.json()["payload"]))["predicate"]
    audits = pred["membership_audit"]["audits"]
    assert pred["method"]["name"] == "retrain" and pred["method"]["requested"] == "sfr_on"
    assert set(audits) == {"original", "approximate", "retrained", "unlearned"}
    assert audits["unlearned"] == audits["retrained"] != audits["approximate"]

    deleted = client.delete(f"/v1/reference-kits/{kit['id']}", headers=acme.headers())
    assert deleted.status_code == 200 and deleted.json()["status"] == "retired"
    assert not worker_ctx.store.exists(built["digest"])


def test_the_cli_requests_and_lists_kits(
    lethe: Lethe, acme: TenantKeys, digits_model_id: str
) -> None:
    rc, out, err = lethe("kits", "build", digits_model_id, "--k", "2", key=acme.member)
    assert rc == 0 and "status: building" in out, err
    kits = lethe.json("kits", "list", "--json", key=acme.member)
    assert [(k["k"], k["status"]) for k in kits] == [(2, "building")]
    assert lethe("kits", "build", "no-such-model", key=acme.member)[0] == 1
