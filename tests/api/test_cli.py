"""The `lethe` command against a real uvicorn server: every user flow a script would drive, with
the exit codes it relies on (0 done, 1 refused or failed, 2 usage, 3 service unreachable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import cli
from tests.api.conftest import Lethe
from tests.api.test_models import real_weights, run_validation_claimed
from tests.factories import TenantKeys, dataset_arrays, model_spec, safetensors_bytes
from worker.context import WorkerContext


def test_upload_list_and_show_datasets_models_and_jobs(
    lethe: Lethe, acme: TenantKeys, tmp_path: Path, worker_ctx: WorkerContext
) -> None:
    member = acme.member
    assert lethe.json("whoami", key=member)["role"] == "member"

    train = tmp_path / "train.safetensors"
    train.write_bytes(safetensors_bytes(dataset_arrays()))
    rc, out, err = lethe("datasets", "upload", str(train), "--name", "toy", key=member)
    assert rc == 0, err
    assert "upload [" in err  # the progress bar
    dataset_id = out.split("dataset_id:")[1].split()[0]
    assert [d["id"] for d in lethe.json("datasets", "list", "--json", key=member)] == [dataset_id]

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(real_weights())
    spec = tmp_path / "spec.json"
    spec.write_text(model_spec(dataset_id))
    rc, out, err = lethe("models", "upload", str(weights), "--spec", f"@{spec}", key=member)
    assert rc == 0, err
    model_id = out.split("model_id:")[1].split()[0]
    model = lethe.json("models", "show", model_id, key=member)
    assert model["status"] == "validating"
    run_validation_claimed(worker_ctx, model["validation_job_id"])
    listed = lethe.json("models", "list", "--json", key=member)
    assert [(m["id"], m["status"]) for m in listed] == [(model_id, "ready")]
    job = lethe.json("jobs", "show", model["validation_job_id"], key=member)
    assert [h["to_state"] for h in job["history"]] == ["queued", "running", "succeeded"]

    # People get aligned columns; a spec that is not JSON is a clean refusal.
    rc, out, _ = lethe("models", "list", key=member)
    assert rc == 0 and out.splitlines()[0].split()[:3] == ["id", "name", "version"]
    rc, _, err = lethe("models", "upload", str(weights), "--spec", "{not json", key=member)
    assert rc == 2 and "--spec is not valid JSON" in err
    rc, _, err = lethe("datasets", "upload", str(tmp_path / "nope"), "--name", "x", key=member)
    assert rc == 2 and "nope" in err
    rc, _, err = lethe("forget", model_id, "--samples", "1,two", key=member)
    assert rc == 2 and "--samples" in err
    assert lethe.json("requests", "list", "--json", key=member) == []


def test_keys_settings_and_audit_through_the_api(lethe: Lethe, acme: TenantKeys) -> None:
    rc, out, err = lethe("api-keys", "create", "--role", "auditor", "--name", "ops", key=acme.admin)
    assert rc == 0, err
    new_key = out.split("api_key:")[1].split()[0]
    new_id = out.split("key_id:")[1].split()[0]
    assert lethe.json("whoami", key=new_key)["role"] == "auditor"
    keys = lethe.json("api-keys", "list", "--json", key=acme.admin)
    assert {"id": new_id, "role": "auditor", "name": "ops"}.items() <= next(
        k for k in keys if k["id"] == new_id
    ).items()

    # A member may not manage keys: refused with the service's reason, exit 1.
    rc, _, err = lethe("api-keys", "create", "--role", "admin", key=acme.member)
    assert rc == 1 and "HTTP 403" in err

    assert lethe("api-keys", "revoke", new_id, key=acme.admin)[0] == 0
    rc, _, err = lethe("whoami", key=new_key)
    assert rc == 1 and "revoked" in err

    rc, out, err = lethe(
        "settings", "set", "fallback_retrain=true", "policy.class_fa_max=0.5", key=acme.admin
    )
    assert rc == 0 and "policy.class_fa_max" in out, err
    shown = lethe.json("settings", "show", "--json", key=acme.member)
    assert shown["fallback_retrain"] == {"value": True, "source": "tenant"}
    assert shown["policy.class_fa_max"] == {"value": 0.5, "source": "tenant"}
    assert shown["policy.class_ta_drop_max"] == {
        "value": 3.0,
        "source": "service (LETHE_POLICY_CLASS_TA_DROP_MAX)",
    }
    # A set merges: the earlier override survives; null returns a field to the service.
    assert lethe("settings", "set", "retention_days=2", key=acme.admin)[0] == 0
    assert lethe("settings", "set", "policy.class_fa_max=null", key=acme.admin)[0] == 0
    shown = lethe.json("settings", "show", "--json", key=acme.member)
    assert shown["fallback_retrain"]["value"] is True and shown["retention_days"]["value"] == 2
    assert shown["policy.class_fa_max"]["source"].startswith("service")
    rc, _, err = lethe("settings", "set", "policy.nope=1", key=acme.admin)
    assert rc == 1 and "policy.nope" in err  # the service names the field it refused
    assert lethe("settings", "set", "no-equals-sign", key=acme.admin)[0] == 2

    events = lethe.json("audit", "list", "--json", key=acme.auditor)
    actions = [e["action"] for e in events]
    assert actions.count("api_key.created") >= 3 and "tenant.settings_changed" in actions
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    revoked = lethe.json("audit", "list", "--json", "--action", "api_key.revoked", key=acme.admin)
    assert [(e["subject_id"], e["actor"]) for e in revoked] == [(new_id, acme.admin.split("_")[1])]
    rc, out, _ = lethe("audit", "verify", key=acme.auditor)
    assert rc == 0 and "chain intact" in out
    rc, _, err = lethe("audit", "list", key=acme.member)
    assert rc == 1 and "HTTP 403" in err


def test_exit_codes_for_usage_and_an_unreachable_service(
    lethe: Lethe, acme: TenantKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LETHE_API_KEY", raising=False)
    with pytest.raises(SystemExit) as exc:
        lethe("whoami")
    assert exc.value.code == 2
    rc, _, err = lethe("jobs", "show", "no-such-job", key=acme.member)
    assert rc == 1 and "HTTP 404" in err
    rc = cli.main(["whoami", "--url", "http://127.0.0.1:9", "--api-key", acme.member])
    assert rc == 3
