from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.tenants import keycache
from app.tenants import service as tenants
from app.tenants.keycache import KeyCache
from tests.factories import make_tenant


def assert_problem(res, status: int) -> None:  # type: ignore[no-untyped-def]
    assert res.status_code == status, res.text
    assert res.headers["content-type"] == "application/problem+json"
    body = res.json()
    assert body["status"] == status and body["type"].startswith("https://")
    assert body["title"] and body["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Bearer lethe_0000000000000000_wrongsecret"},
        {"X-API-Key": "lethe_"},
    ],
    ids=["no-key", "garbage", "unknown-key", "empty-parts"],
)
def test_missing_or_wrong_key_is_401(client: TestClient, headers: dict[str, str]) -> None:
    for path in ("/v1/datasets", "/v1/models", "/v1/whoami"):
        res = client.get(path, headers=headers)
        assert_problem(res, 401)
        assert res.headers["www-authenticate"] == "Bearer"


def test_wrong_secret_of_a_real_key_is_401(client: TestClient, db: Session) -> None:
    keys = make_tenant(db, "acme")
    key_id = keys.member.split("_")[1]
    assert_problem(
        client.get("/v1/whoami", headers={"Authorization": f"Bearer lethe_{key_id}_x"}), 401
    )


def test_roles_and_key_management(client: TestClient, db: Session) -> None:
    keys = make_tenant(db, "acme")
    me = client.get("/v1/whoami", headers=keys.headers("auditor")).json()
    assert me["role"] == "auditor" and me["tenant_name"] == "acme"
    # X-API-Key works as well as the bearer header.
    assert client.get("/v1/whoami", headers={"X-API-Key": keys.member}).status_code == 200

    for role in ("member", "auditor"):
        assert_problem(client.get("/v1/api-keys", headers=keys.headers(role)), 403)
        assert_problem(
            client.post("/v1/api-keys", json={"role": "admin"}, headers=keys.headers(role)), 403
        )

    created = client.post(
        "/v1/api-keys", json={"role": "member", "name": "ci"}, headers=keys.headers("admin")
    )
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert (
        client.get("/v1/whoami", headers={"Authorization": f"Bearer {new_key}"}).json()["role"]
        == "member"
    )
    listed = client.get("/v1/api-keys", headers=keys.headers("admin")).json()["items"]
    assert created.json()["id"] in {k["id"] for k in listed}
    assert all("key" not in k and "secret_hash" not in k for k in listed)

    revoked = client.delete(f"/v1/api-keys/{created.json()['id']}", headers=keys.headers("admin"))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    res = client.get("/v1/whoami", headers={"Authorization": f"Bearer {new_key}"})
    assert_problem(res, 401)
    assert "revoked" in res.json()["detail"]


def test_bad_role_is_a_validation_problem(client: TestClient, db: Session) -> None:
    keys = make_tenant(db, "acme")
    res = client.post("/v1/api-keys", json={"role": "root"}, headers=keys.headers("admin"))
    assert_problem(res, 422)
    assert res.json()["errors"][0]["field"] == "body.role"


def test_unknown_route_and_method_are_problems(client: TestClient, db: Session) -> None:
    keys = make_tenant(db, "acme")
    assert_problem(client.get("/v1/nothing-here", headers=keys.headers()), 404)
    assert_problem(client.put("/v1/datasets", headers=keys.headers()), 405)


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "schema": "ok", "broker": "ok"}


def test_a_key_revoked_elsewhere_stops_working_within_the_cache_time(
    client: TestClient, db: Session
) -> None:
    """`lethe admin revoke-key` (or another API process) writes the database directly: this
    process learns it when its cached check expires, `LETHE_AUTH_CACHE_SECONDS` at most."""
    app = client.app
    app.state.key_cache = KeyCache(ttl=0.3)  # type: ignore[attr-defined]
    keys = make_tenant(db, "acme")
    assert client.get("/v1/whoami", headers=keys.headers()).status_code == 200
    tenants.revoke_key(db, keys.tenant_id, keys.member.split("_")[1])
    db.commit()
    time.sleep(0.35)
    assert_problem(client.get("/v1/whoami", headers=keys.headers()), 401)


def test_wrong_secrets_are_never_cached(client: TestClient, db: Session) -> None:
    keys = make_tenant(db, "acme")
    key_id = keys.member.split("_")[1]
    wrong = {"Authorization": f"Bearer lethe_{key_id}_x"}
    assert client.get("/v1/whoami", headers=keys.headers()).status_code == 200  # cached now
    for _ in range(3):
        assert_problem(client.get("/v1/whoami", headers=wrong), 401)


def test_key_cache_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pure unit test of the in-memory cache itself (no database involved)."""
    now = [100.0]
    monkeypatch.setattr(keycache.time, "monotonic", lambda: now[0])
    cache: KeyCache[str] = KeyCache(ttl=2, max_entries=2)
    cache.put("lethe_a_1", "a", "A")
    assert cache.get("lethe_a_1") == "A" and cache.get("lethe_a_2") is None
    now[0] += 2.5
    assert cache.get("lethe_a_1") is None  # expired
    cache.put("lethe_a_1", "a", "A")
    cache.put("lethe_b_1", "b", "B")
    cache.put("lethe_c_1", "c", "C")  # over max_entries: the oldest goes
    assert cache.get("lethe_a_1") is None and cache.get("lethe_c_1") == "C"
    cache.forget("b")
    assert cache.get("lethe_b_1") is None
    off: KeyCache[str] = KeyCache(ttl=0)
    off.put("lethe_a_1", "a", "A")
    assert off.get("lethe_a_1") is None


def test_nul_characters_are_refused_cleanly_everywhere(client: TestClient, db: Session) -> None:
    """PostgreSQL cannot store or compare text holding NUL: found by the fuzzer as a 500 on any
    `/v1/<things>/{id}` path. Every such input is now a 4xx problem, and nothing is stored."""
    keys = make_tenant(db, "nul")
    admin = keys.headers("admin")
    paths = ["/v1/jobs/a%00b", "/v1/models/a%00b", "/v1/datasets/a%00b"]
    paths += ["/v1/forget-requests/a%00b", "/v1/jobs/a%00b/events"]
    paths += ["/v1/audit-events?action=a%00b", "/v1/forget-requests?lineage_id=a%00b"]
    for path in paths:
        res = client.get(path, headers=admin)
        assert 400 <= res.status_code < 500, (path, res.text)
        assert res.headers["content-type"] == "application/problem+json"
    assert_problem(client.delete("/v1/api-keys/a%00b", headers=admin), 422)
    before = client.get("/v1/api-keys", headers=admin).json()["items"]
    res = client.post("/v1/api-keys", json={"role": "member", "name": "a\u0000b"}, headers=admin)
    assert_problem(res, 422)
    assert client.get("/v1/api-keys", headers=admin).json()["items"] == before
