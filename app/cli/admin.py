"""``lethe admin ...``: tenants and keys, straight in the database (no service needed)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from app.cli.common import EXIT_FAILED, EXIT_OK, _database

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.cli.common import SubParsers


@contextmanager
def _admin_session() -> Iterator[Session]:
    """One unit of work on the database, its schema at head first (see ``_database``)."""
    from app.core.db import make_sessionmaker, session_scope

    engine = _database()
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def cmd_create_tenant(args: argparse.Namespace) -> int:
    from app.tenants import service

    with _admin_session() as session:
        tenant, key, plaintext = service.create_tenant(session, args.name)
        tenant_id, key_id = tenant.id, key.id
    print(f"tenant_id: {tenant_id}\nkey_id:    {key_id}\nrole:      admin")
    print(f"api_key:   {plaintext}\n(the key is shown once; store it now)")
    return EXIT_OK


def cmd_create_key(args: argparse.Namespace) -> int:
    from app.tenants import repository, service
    from app.tenants.schemas import Role

    with _admin_session() as session:
        tenant = repository.get_tenant(session, args.tenant) or repository.get_tenant_by_name(
            session, args.tenant
        )
        if tenant is None:
            print(f"error: no tenant {args.tenant!r}", file=sys.stderr)
            return EXIT_FAILED
        key, plaintext = service.create_key(session, tenant.id, Role(args.role), args.name)
        key_id = key.id
    print(f"key_id:  {key_id}\nrole:    {args.role}\napi_key: {plaintext}")
    print("(the key is shown once; store it now)")
    return EXIT_OK


def cmd_revoke_key(args: argparse.Namespace) -> int:
    from app.tenants import repository
    from app.tenants import service as tenants

    with _admin_session() as session:
        key = repository.get_key(session, args.key_id)
        if key is None:
            print(f"error: no key {args.key_id}", file=sys.stderr)
            return EXIT_FAILED
        tenants.revoke_key(session, key.tenant_id, key.id)
    print(f"revoked {args.key_id}")
    return EXIT_OK


def cmd_list_tenants(args: argparse.Namespace) -> int:
    from app.tenants import repository

    with _admin_session() as session:
        for t in repository.list_tenants(session):
            print(f"{t.id}  {t.name}")
    return EXIT_OK


def register(sub: SubParsers) -> None:
    admin = sub.add_parser("admin", help="tenants and keys (talks to the database directly)")
    asub = admin.add_subparsers(dest="admin", required=True)
    p = asub.add_parser("create-tenant", help="create a tenant and print its first admin key")
    p.add_argument("name")
    p.set_defaults(func=cmd_create_tenant)
    p = asub.add_parser("create-key", help="create an API key and print it once")
    p.add_argument("--tenant", required=True, help="tenant ID or name")
    p.add_argument("--role", required=True, choices=["admin", "member", "auditor"])
    p.add_argument("--name", default="")
    p.set_defaults(func=cmd_create_key)
    p = asub.add_parser("revoke-key", help="revoke an API key by its ID")
    p.add_argument("key_id")
    p.set_defaults(func=cmd_revoke_key)
    p = asub.add_parser("list-tenants")
    p.set_defaults(func=cmd_list_tenants)
