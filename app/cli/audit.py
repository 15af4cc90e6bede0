"""``lethe audit ...``: verify the tenant's hash-chained audit log (against a signed checkpoint
too), list its events and checkpoints, and grant the production application role."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.common import EXIT_FAILED, EXIT_OK, UsageError, _client, _listing, client_args

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from app.cli.common import SubParsers
    from app.client import LetheClient


def _find_checkpoint(value: Any) -> dict[str, Any] | None:
    """The first ``{"origin", "note", ...}`` object in a JSON document: a saved checkpoint, or
    one embedded in something else (a certificate's DSSE envelope, whose payload is decoded)."""
    if isinstance(value, dict):
        if isinstance(value.get("note"), str) and "origin" in value:
            return value
        if isinstance(value.get("payload"), str) and "payloadType" in value:
            try:
                return _find_checkpoint(json.loads(base64.b64decode(value["payload"])))
            except ValueError:
                return None
        children: list[Any] = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return None
    for child in children:
        found = _find_checkpoint(child)
        if found is not None:
            return found
    return None


def _read_checkpoint(path: str) -> tuple[str, dict[str, Any] | None]:
    """The signed note, and the JSON it came in (None when the file is the note itself)."""
    text = Path(path).read_text()
    if not text.lstrip().startswith("{"):
        return text, None
    try:
        found = _find_checkpoint(json.loads(text))
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON and not a signed note ({exc})") from None
    if found is None:
        raise UsageError(f"{path}: no checkpoint (an object with 'origin' and 'note') in it")
    return str(found["note"]), found


def _public_keys(client: LetheClient, key_file: str | None) -> dict[str, Ed25519PublicKey]:
    """By key ID: from ``--key`` (a PEM public key, or the saved JSON of /v1/signing-keys), or
    fetched from the service."""
    from app.certificates.signing import key_id_of, load_public_key

    if key_file:
        raw = Path(key_file).read_text()
        if not raw.lstrip().startswith("{"):
            key = load_public_key(raw)
            return {key_id_of(key): key}
        items = json.loads(raw)["items"]
    else:
        items = client.signing_keys()["items"]
    return {str(i["key_id"]): load_public_key(i["public_key_pem"]) for i in items}


def _check_against_checkpoint(client: LetheClient, args: argparse.Namespace) -> list[str]:
    """Problems, each one sentence; none when the chain still extends the signed head."""
    from app.audit.checkpoints import verify_note

    note, as_json = _read_checkpoint(args.checkpoint)
    try:
        keys = _public_keys(client, args.key)
    except (ValueError, KeyError) as exc:
        return [f"cannot read the public keys: {exc}"]
    cp = verify_note(note, keys)
    if not cp.ok:
        return [f"the checkpoint's signature does not verify: {p}" for p in cp.problems]
    assert cp.size is not None and cp.head_hash is not None
    signed = {"origin": cp.origin, "size": cp.size, "head_hash": cp.head_hash}
    edited = [k for k, v in signed.items() if as_json is not None and as_json.get(k) != v]
    if edited:
        return [f"the file's {', '.join(edited)} do not match its signed note (edited?)"]
    print(f"OK: checkpoint signed by key {cp.key_id}: {cp.size} events, issued {cp.issued_at}")
    me = client.whoami()
    if cp.tenant_id != me["tenant_id"]:
        return [f"the checkpoint is of {cp.origin}, but this key is of tenant {me['tenant_id']}"]
    report = client.verify_audit_log_through(cp.size)
    if report["checked"] < cp.size and report["first_broken_id"] is None:
        return [
            f"the chain has only {report['checked']} events but the checkpoint signed"
            f" {cp.size}: events were removed from its end"
        ]
    if not report["ok"]:
        return [
            f"the chain is broken at event seq {report['first_broken_seq']} (id"
            f" {report['first_broken_id']}), before the checkpoint's head: {report['reason']}"
        ]
    if report["head_hash"] != cp.head_hash:
        return [
            f"the event at seq {cp.size} now hashes to {report['head_hash']}, but the checkpoint"
            f" signed {cp.head_hash}: the chain was rewritten up to there (rows changed and"
            " every later hash recomputed)"
        ]
    print(f"OK: the chain's first {cp.size} events are the ones the checkpoint signed")
    return []


def cmd_audit_verify(args: argparse.Namespace) -> int:
    with _client(args) as client:
        problems = _check_against_checkpoint(client, args) if args.checkpoint else []
        report = client.verify_audit_log()
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if not report["ok"]:
        print(
            f"BROKEN at event seq {report['first_broken_seq']} (id {report['first_broken_id']}):"
            f" {report['reason']}; {report['checked']} events before it are intact",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"OK: {report['checked']} events, chain intact")
    return EXIT_FAILED if problems else EXIT_OK


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    with _client(args) as client:
        cp = client.latest_audit_checkpoint()
    text = json.dumps(cp, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"checkpoint of {cp['size']} events saved to {args.out}")
    else:
        print(text, end="")
    return EXIT_OK


def cmd_grant_app_role(args: argparse.Namespace) -> int:
    from app.audit.db_roles import app_role_grants, create_role_if_missing

    try:
        statements = app_role_grants(args.role)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.print_sql:
        print(";\n".join(statements) + ";")
        return EXIT_OK
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from app.cli.common import _settings
    from app.core.db import make_engine

    settings = _settings()
    engine = make_engine(settings.resolved_database_url)
    try:
        if engine.dialect.name != "postgresql":
            print("error: database roles exist on PostgreSQL only", file=sys.stderr)
            return EXIT_FAILED
        with engine.begin() as conn:
            if args.password_env:
                # The compose stack's migrate service: create the role on first start, and keep
                # its password what the environment says (quoted by the server, not by us).
                password = os.environ.get(args.password_env)
                if not password:
                    raise UsageError(f"{args.password_env} is not set")
                conn.execute(text(create_role_if_missing(args.role)))
                quoted = conn.execute(text("SELECT quote_literal(:p)"), {"p": password}).scalar()
                conn.execute(text(f'ALTER ROLE "{args.role}" PASSWORD {quoted}'))
            for stmt in statements:
                conn.execute(text(stmt))
    except DBAPIError as exc:
        print(f"error: {str(exc.orig).strip()} (run this as the tables' owner)", file=sys.stderr)
        return EXIT_FAILED
    finally:
        engine.dispose()
    print(f"granted {args.role}: INSERT and SELECT only on the audit tables")
    return EXIT_OK


def register(sub: SubParsers) -> None:
    audit = sub.add_parser("audit", help="audit log").add_subparsers(dest="audit", required=True)
    p = audit.add_parser(
        "verify",
        help="recompute the tenant's hash chain; with --checkpoint, check it still extends a"
        " signed checkpoint (nothing cut off the end, nothing rewritten)",
    )
    p.add_argument(
        "--checkpoint",
        help="a saved checkpoint (JSON of /v1/audit-checkpoints/latest, a certificate that"
        " embeds one, or the signed note's text)",
    )
    p.add_argument(
        "--key", help="a PEM public key, or the JSON of /v1/signing-keys (default: fetch it)"
    )
    client_args(p)
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser("checkpoint", help="the newest signed checkpoint, to keep")
    p.add_argument("--out", help="write it to this file")
    client_args(p)
    p.set_defaults(func=cmd_audit_checkpoint)
    p = audit.add_parser("checkpoints", help="the tenant's signed checkpoints, newest first")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.audit_checkpoints(), ["size", "issued_at", "key_id", "head_hash"]
        )
    )
    p = audit.add_parser("list", help="the tenant's audit events, oldest first")
    p.add_argument("--action", help="e.g. job.succeeded")
    p.add_argument("--subject", help="a subject ID (model, job, request, key)")
    p.add_argument("--actor", help="a key ID, or worker:...")
    p.add_argument("--since", help="ISO 8601 time")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.audit_events(
                action=a.action, subject_id=a.subject, actor=a.actor, since=a.since
            ),
            ["seq", "at", "actor", "action", "subject_type", "subject_id"],
        )
    )
    p = audit.add_parser(
        "grant-app-role",
        help="(operators, as the database owner) let ROLE run the API and workers: all it"
        " needs, but only INSERT and SELECT on the audit tables; rerun after each upgrade",
    )
    p.add_argument("role", help="an existing PostgreSQL role, e.g. lethe_app")
    p.add_argument("--print-sql", action="store_true", help="print the statements instead")
    p.add_argument(
        "--password-env",
        metavar="VAR",
        help="create ROLE as a login role if missing and set its password from $VAR",
    )
    p.set_defaults(func=cmd_grant_app_role)
