"""The anchored audit log: TRUNCATE is refused, signed checkpoints pin each tenant's chain head,
and `lethe audit verify --checkpoint` catches what the hash chain alone cannot (newest events
cut off, a row rewritten with every later hash recomputed). Events carry their payload."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, create_engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app import cli
from app.audit import checkpoints, service
from app.audit.db_roles import app_role_grants
from app.certificates.signing import Signer, load_signer, public_pem
from app.core.config import Settings
from app.core.migrate import upgrade
from app.models import AuditEvent
from tests.api.conftest import Lethe
from tests.conftest import fresh_database
from tests.factories import TenantKeys, make_tenant


def _new_signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture()
def signer(signing_key_path: Path) -> Signer:
    return load_signer(signing_key_path)


def _more_events(client: TestClient, acme: TenantKeys, n: int) -> None:
    for i in range(n):
        res = client.post(
            "/v1/api-keys", json={"role": "auditor", "name": f"a{i}"}, headers=acme.headers("admin")
        )
        assert res.status_code == 201, res.text


def _save_checkpoint(
    db: Session, signer: Signer, acme: TenantKeys, tmp_path: Path
) -> tuple[Path, dict[str, object]]:
    cp = checkpoints.issue(db, signer, acme.tenant_id)
    db.commit()
    path = tmp_path / "checkpoint.json"
    path.write_text(json.dumps(cp))
    return path, cp


def _without_triggers(connection: Connection, *statements: tuple[str, dict[str, object]]) -> None:
    """What the tables' owner can do: switch the append-only triggers off, change rows, and
    switch them on again (all rolled back with the test)."""
    connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
    for sql, params in statements:
        connection.execute(text(sql), params)
    connection.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


# -- the checkpoint format ------------------------------------------------------------------


def test_a_checkpoint_is_a_signed_note_that_verifies_offline(
    db: Session, acme: TenantKeys, signer: Signer
) -> None:
    cp = checkpoints.issue(db, signer, acme.tenant_id)
    head = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.tenant_id == acme.tenant_id)
        .order_by(AuditEvent.seq.desc())
    ).first()
    assert head is not None
    origin = f"lethe.audit/{acme.tenant_id}"
    assert (cp["origin"], cp["size"], cp["head_hash"]) == (origin, head.seq, head.hash)
    assert cp["key_id"] == signer.key_id

    # Reference computation of the C2SP signed note, independent of the module's helpers.
    note = str(cp["note"])
    body, _, sig_part = note.partition("\n\n")
    body += "\n"
    lines = body.splitlines()
    assert lines[:3] == [origin, str(head.seq), base64.b64encode(bytes.fromhex(head.hash)).decode()]
    assert lines[3] == f"time {cp['issued_at']}"
    dash, name, blob = sig_part.rstrip("\n").split(" ")
    assert (dash, name) == ("\u2014", origin) and sig_part.endswith("\n")
    raw = base64.b64decode(blob)
    pub = signer.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw[:4] == hashlib.sha256(origin.encode() + b"\n\x01" + pub).digest()[:4]
    signer.public.verify(raw[4:], body.encode())  # raises if wrong

    good = checkpoints.verify_note(note, {signer.key_id: signer.public})
    assert good.ok and good.key_id == signer.key_id and good.size == head.seq
    assert good.head_hash == head.hash and good.tenant_id == acme.tenant_id

    # One changed line of the body, and the signature no longer matches.
    tampered = note.replace(f"\n{head.seq}\n", f"\n{head.seq + 5}\n", 1)
    bad = checkpoints.verify_note(tampered, {signer.key_id: signer.public})
    assert not bad.ok and "does not match" in bad.problems[0]
    other = _new_signer()
    stranger = checkpoints.verify_note(note, {other.key_id: other.public})
    assert not stranger.ok and "no signature" in stranger.problems[0]
    assert not checkpoints.verify_note("just text\n", {signer.key_id: signer.public}).ok


def test_the_cli_checks_the_checkpoint_signature(
    lethe: Lethe,
    db: Session,
    acme: TenantKeys,
    signer: Signer,
    tmp_path: Path,
) -> None:
    path, cp = _save_checkpoint(db, signer, acme, tmp_path)
    key = tmp_path / "key.pem"
    key.write_text(public_pem(signer.public))
    rc, out, err = lethe(
        "audit", "verify", "--checkpoint", str(path), "--key", str(key), key=acme.auditor
    )
    assert rc == 0, err
    assert f"signed by key {signer.key_id}" in out and "chain intact" in out

    # The bare note works as well as the JSON around it; the keys come from the service.
    note = tmp_path / "checkpoint.note"
    note.write_text(str(cp["note"]))
    assert lethe("audit", "verify", "--checkpoint", str(note), key=acme.auditor)[0] == 0
    # So does a certificate that embeds one somewhere in its statement.
    cert = tmp_path / "cert.json"
    cert.write_text(json.dumps(signer.sign({"predicate": {"audit": {"checkpoint": cp}}})))
    assert lethe("audit", "verify", "--checkpoint", str(cert), key=acme.auditor)[0] == 0

    note.write_text(str(cp["note"]).replace(f"\n{cp['size']}\n", "\n1\n", 1))
    rc, _, err = lethe("audit", "verify", "--checkpoint", str(note), key=acme.auditor)
    assert rc == 1 and "signature does not verify" in err

    # The JSON's unsigned fields must agree with the signed note.
    path.write_text(json.dumps({**cp, "size": 1}))
    rc, _, err = lethe("audit", "verify", "--checkpoint", str(path), key=acme.auditor)
    assert rc == 1 and "file's size do not match its signed note" in err


# -- what the checkpoint catches and the chain alone does not -------------------------------


def test_removing_the_newest_events_is_caught_by_a_checkpoint(
    lethe: Lethe,
    client: TestClient,
    connection: Connection,
    db: Session,
    acme: TenantKeys,
    signer: Signer,
    tmp_path: Path,
) -> None:
    _more_events(client, acme, 3)
    path, cp = _save_checkpoint(db, signer, acme, tmp_path)
    _more_events(client, acme, 1)  # the chain grows past the checkpoint: still consistent
    rc, out, err = lethe("audit", "verify", "--checkpoint", str(path), key=acme.auditor)
    assert rc == 0, err
    assert f"first {cp['size']} events are the ones the checkpoint signed" in out

    size = int(str(cp["size"]))
    cut = "DELETE FROM audit_events WHERE tenant_id = :t AND seq > :s"
    _without_triggers(connection, (cut, {"t": acme.tenant_id, "s": size - 2}))
    rc, out, _ = lethe("audit", "verify", key=acme.auditor)
    assert rc == 0 and f"OK: {size - 2} events, chain intact" in out  # the chain alone: fooled
    rc, _, err = lethe("audit", "verify", "--checkpoint", str(path), key=acme.auditor)
    assert rc == 1
    assert f"only {size - 2} events but the checkpoint signed {size}" in err
    assert "removed from its end" in err


def test_a_rewritten_chain_is_caught_by_a_checkpoint(
    lethe: Lethe,
    client: TestClient,
    connection: Connection,
    db: Session,
    acme: TenantKeys,
    signer: Signer,
    tmp_path: Path,
) -> None:
    _more_events(client, acme, 2)
    path, cp = _save_checkpoint(db, signer, acme, tmp_path)

    # Edit event 2 and recompute its hash and every later one, as a careful forger would.
    events = list(
        db.scalars(
            select(AuditEvent)
            .where(AuditEvent.tenant_id == acme.tenant_id)
            .order_by(AuditEvent.seq)
        )
    )
    db.expunge_all()
    updates = []
    prev = events[0].hash
    for ev in events[1:]:
        if ev.seq == 2:
            ev.actor = "mallory"
        ev.prev_hash = prev
        ev.hash = prev = service.event_hash(ev)
        updates.append(
            (
                "UPDATE audit_events SET actor = :a, prev_hash = :p, hash = :h WHERE id = :i",
                {"a": ev.actor, "p": ev.prev_hash, "h": ev.hash, "i": ev.id},
            )
        )
    _without_triggers(connection, *updates)

    rc, out, _ = lethe("audit", "verify", key=acme.auditor)
    assert rc == 0 and "chain intact" in out  # the chain alone: fooled
    rc, _, err = lethe("audit", "verify", "--checkpoint", str(path), key=acme.auditor)
    assert rc == 1
    assert f"seq {cp['size']} now hashes to {prev}" in err and str(cp["head_hash"]) in err
    assert "rewritten" in err


def test_a_checkpoint_of_another_tenant_is_refused(
    lethe: Lethe, db: Session, acme: TenantKeys, signer: Signer, tmp_path: Path
) -> None:
    other = make_tenant(db, "globex")
    path, _ = _save_checkpoint(db, signer, other, tmp_path)
    rc, _, err = lethe("audit", "verify", "--checkpoint", str(path), key=acme.auditor)
    assert rc == 1 and f"lethe.audit/{other.tenant_id}" in err


# -- the database refuses TRUNCATE, and the application role cannot change history ----------


@pytest.fixture(scope="module")
def own_db() -> Iterator[Engine]:
    """A committed database of this module's own: TRUNCATE and roles need real commits."""
    with fresh_database("lethe_anchor") as url:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        factory = sessionmaker(bind=engine)
        with factory() as session:
            session.execute(
                text(
                    "INSERT INTO tenants (id, name, settings, created_at)"
                    " VALUES ('t1', 't1', '{}', now())"
                )
            )
            service.record(
                session, tenant_id="t1", actor="a", action="x", subject_type="s", subject_id="s"
            )
            checkpoints.issue(session, _new_signer(), "t1")
        yield engine
        engine.dispose()


@pytest.mark.parametrize(
    "sql",
    [
        "TRUNCATE audit_events",
        "TRUNCATE tenants CASCADE",
        "TRUNCATE audit_checkpoints",
        "UPDATE audit_checkpoints SET size = 0",
        "DELETE FROM audit_checkpoints",
    ],
)
def test_truncate_and_checkpoint_changes_are_refused(own_db: Engine, sql: str) -> None:
    with own_db.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text(sql))


def test_sqlite_refuses_checkpoint_changes(tmp_path: Path) -> None:
    # SQLite has no TRUNCATE; its row triggers cover UPDATE and DELETE.
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            assert {"audit_checkpoints_no_update", "audit_checkpoints_no_delete"} <= set(
                names.scalars()
            )
            conn.execute(
                text(
                    "INSERT INTO tenants (id, name, settings, created_at)"
                    " VALUES ('t', 't', '{}', '2026-12-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO signing_keys (key_id, algorithm, public_key_pem, created_at)"
                    " VALUES ('k', 'ed25519', 'pem', '2026-12-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO audit_checkpoints (tenant_id, size, head_hash, issued_at,"
                    " key_id, note) VALUES ('t', 0, 'h', '2026-12-01', 'k', 'n')"
                )
            )
        for sql in ("UPDATE audit_checkpoints SET size = 1", "DELETE FROM audit_checkpoints"):
            with engine.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
                conn.execute(text(sql))
    finally:
        engine.dispose()


def test_the_application_role_may_only_insert_and_select_audit_rows(
    own_db: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    role = f"lethe_app_{secrets.token_hex(3)}"
    with own_db.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}"'))
    try:
        # `lethe audit grant-app-role`, run by the owner against this database.
        url = own_db.url.render_as_string(hide_password=False)
        monkeypatch.setattr("app.cli.common._settings", lambda: Settings(database_url=url))
        assert cli.main(["audit", "grant-app-role", role]) == 0
        assert cli.main(["audit", "grant-app-role", role]) == 0  # idempotent
        assert cli.main(["audit", "grant-app-role", "Robert'); DROP"]) == 2
        assert cli.main(["audit", "grant-app-role", "no_such_role_here"]) == 1
        assert "does not exist" in capsys.readouterr().err
        assert cli.main(["audit", "grant-app-role", role, "--print-sql"]) == 0
        assert "REVOKE UPDATE, DELETE, TRUNCATE" in capsys.readouterr().out

        with own_db.connect() as conn:
            conn.execute(text(f'SET ROLE "{role}"'))
            try:
                conn.execute(
                    text(
                        "INSERT INTO audit_events (tenant_id, seq, at, actor, action,"
                        " subject_type, subject_id, payload_digest, prev_hash, hash) VALUES"
                        " ('t1', 2, now(), 'a', 'x', 's', 's', 'd', 'p', 'h')"
                    )
                )
                assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 2
                conn.execute(text("UPDATE tenants SET name = 't1' WHERE id = 't1'"))
                for sql in (
                    "ALTER TABLE audit_events DISABLE TRIGGER USER",
                    "DELETE FROM audit_events",
                    "UPDATE audit_events SET actor = 'm'",
                    "TRUNCATE audit_checkpoints",
                ):
                    with pytest.raises(DBAPIError, match=r"must be owner|permission denied"):
                        conn.execute(text(sql))
            finally:
                conn.execute(text("RESET ROLE"))
    finally:
        with own_db.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
    assert app_role_grants("lethe_app")[0] == 'GRANT USAGE ON SCHEMA "public" TO "lethe_app"'


def test_the_compose_migrate_step_creates_the_application_role(
    own_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker-compose.yml's migrate service runs `grant-app-role ROLE --password-env VAR`: the
    role is created on first start with that password, and a rerun keeps it (idempotent)."""
    role = f"lethe_app_{secrets.token_hex(3)}"
    url = own_db.url.render_as_string(hide_password=False)
    monkeypatch.setattr("app.cli.common._settings", lambda: Settings(database_url=url))
    monkeypatch.setenv("APP_PW", "it's a \\ secret")
    try:
        for _ in range(2):
            assert cli.main(["audit", "grant-app-role", role, "--password-env", "APP_PW"]) == 0
        with own_db.connect() as conn:
            login = conn.execute(
                text(
                    "SELECT rolcanlogin, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = :r"
                ),
                {"r": role},
            ).one()
            assert tuple(login) == (True, True)
            conn.execute(text(f'SET ROLE "{role}"'))
            try:
                with pytest.raises(DBAPIError, match="permission denied"):
                    conn.execute(text("DELETE FROM audit_events"))
            finally:
                conn.execute(text("RESET ROLE"))
        monkeypatch.delenv("APP_PW")
        assert cli.main(["audit", "grant-app-role", role, "--password-env", "APP_PW"]) == 2
    finally:
        with own_db.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


# -- the API ---------------------------------------------------------------------------------


def test_checkpoints_are_listed_newest_first_for_auditors(
    client: TestClient, db: Session, acme: TenantKeys, signer: Signer
) -> None:
    res = client.get("/v1/audit-checkpoints/latest", headers=acme.headers("auditor"))
    assert res.status_code == 404 and res.headers["content-type"] == "application/problem+json"
    first = checkpoints.issue(db, signer, acme.tenant_id)
    _more_events(client, acme, 1)
    second = checkpoints.issue(db, signer, acme.tenant_id)
    db.commit()
    assert int(str(second["size"])) == int(str(first["size"])) + 1

    latest = client.get("/v1/audit-checkpoints/latest", headers=acme.headers("auditor")).json()
    assert latest == second
    page = client.get(
        "/v1/audit-checkpoints", params={"limit": 1}, headers=acme.headers("admin")
    ).json()
    assert page["items"] == [second] and page["next_cursor"]
    rest = client.get(
        "/v1/audit-checkpoints",
        params={"limit": 1, "cursor": page["next_cursor"]},
        headers=acme.headers("admin"),
    ).json()
    assert rest == {"items": [first], "next_cursor": None}
    assert client.get("/v1/audit-checkpoints", headers=acme.headers("member")).status_code == 403
    bad = client.get("/v1/audit-checkpoints?cursor=nope", headers=acme.headers("admin"))
    assert bad.status_code == 422

    other = make_tenant(db, "globex")
    assert client.get("/v1/audit-checkpoints", headers=other.headers("auditor")).json() == {
        "items": [],
        "next_cursor": None,
    }
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/v1/audit-checkpoints/latest"]["get"]["responses"]
    assert responses["404"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }


def test_verify_through_returns_the_recomputed_hash_at_a_seq(
    client: TestClient, db: Session, acme: TenantKeys
) -> None:
    _more_events(client, acme, 2)
    events = client.get("/v1/audit-events", headers=acme.headers("auditor")).json()["items"]
    h = acme.headers("auditor")
    for n in (1, len(events)):
        report = client.get("/v1/audit-events/verify", params={"through": n}, headers=h).json()
        assert report["ok"] and report["checked"] == n
        assert report["head_hash"] == events[n - 1]["hash"]
    zero = client.get("/v1/audit-events/verify", params={"through": 0}, headers=h).json()
    assert zero["ok"] and zero["head_hash"] == service.GENESIS
    short = client.get(
        "/v1/audit-events/verify", params={"through": len(events) + 3}, headers=h
    ).json()
    assert not short["ok"] and short["checked"] == len(events) and short["head_hash"] is None
    assert short["first_broken_seq"] == len(events) + 1 and "removed" in short["reason"]


def test_issue_due_checkpoints_signs_only_chains_that_grew(
    client: TestClient,
    session_factory: sessionmaker[Session],
    settings: Settings,
    acme: TenantKeys,
) -> None:
    checkpoints.issue_due_checkpoints(session_factory, settings)
    assert checkpoints.issue_due_checkpoints(session_factory, settings) == 0
    h = acme.headers("auditor")
    first = client.get("/v1/audit-checkpoints/latest", headers=h).json()
    _more_events(client, acme, 1)
    assert checkpoints.issue_due_checkpoints(session_factory, settings) >= 1
    second = client.get("/v1/audit-checkpoints/latest", headers=h).json()
    assert second["size"] == first["size"] + 1


# -- payloads --------------------------------------------------------------------------------


def test_payloads_are_readable_and_an_edited_payload_is_reported(
    client: TestClient, connection: Connection, acme: TenantKeys
) -> None:
    res = client.post(
        "/v1/api-keys",
        json={"role": "auditor", "name": "compliance"},
        headers=acme.headers("admin"),
    )
    assert res.status_code == 201
    h = acme.headers("auditor")
    created = client.get(
        "/v1/audit-events", params={"action": "api_key.created"}, headers=h
    ).json()["items"]
    event = created[-1]
    assert event["payload"] == {"role": "auditor", "name": "compliance"}
    assert service.digest(event["payload"]) == event["payload_digest"]
    one = client.get(f"/v1/audit-events/{event['id']}", headers=h).json()
    assert one["payload"] == event["payload"]

    _without_triggers(
        connection,
        (
            "UPDATE audit_events SET payload = :p WHERE id = :i",
            {"p": json.dumps({"role": "admin", "name": "compliance"}), "i": event["id"]},
        ),
    )
    report = client.get("/v1/audit-events/verify", headers=h).json()
    assert not report["ok"] and report["first_broken_seq"] == event["seq"]
    assert "payload" in report["reason"] and "altered" in report["reason"]


def test_record_stores_payloads_in_their_canonical_json(db: Session, acme: TenantKeys) -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 12, 1, tzinfo=UTC)
    ev = service.record(
        db,
        tenant_id=acme.tenant_id,
        actor="system",
        action="test.recorded",
        subject_type="test",
        subject_id="x",
        payload={"at": at, "ids": (1, 2)},
    )
    assert ev.payload == {"at": str(at), "ids": [1, 2]}
    assert ev.payload_digest == service.digest({"at": at, "ids": (1, 2)})
    assert service.verify(db, acme.tenant_id).ok
