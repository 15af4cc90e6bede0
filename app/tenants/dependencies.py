"""Authentication and role checks as dependencies: Reader, Writer, Admin and Auditor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from app.core.errors import Forbidden
from app.tenants import service
from app.tenants.keycache import KeyCache
from app.tenants.schemas import Role

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer lethe_<id>_<secret>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Alternative header.")


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    role: Role


def _lookup(factory: sessionmaker[Session], presented: str | None) -> Principal:
    with factory() as session:
        key = service.authenticate(session, presented)
        return Principal(key.tenant_id, key.id, Role(key.role))


# Async, with its own short session: a cached key costs no worker-thread hop and no database
# round trip, which is most of what a status poll would otherwise spend.
async def get_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
) -> Principal:
    presented = bearer.credentials if bearer else header_key
    cache: KeyCache[Principal] = request.app.state.key_cache
    principal = cache.get(presented) if presented else None
    if principal is None:
        principal = await run_in_threadpool(_lookup, request.app.state.sessionmaker, presented)
        assert presented is not None  # authenticate() refused an absent key
        cache.put(presented, principal.key_id, principal)
    request.state.principal = principal
    return principal


def require(*roles: Role) -> object:
    allowed = frozenset(roles)

    async def _check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise Forbidden(f"This needs one of the roles: {names}; the key is {principal.role}.")
        return principal

    return Depends(_check)


# Every role reads; members and admins change things; admins manage keys; auditors and admins
# read the audit history.
Reader = Annotated[Principal, require(Role.admin, Role.member, Role.auditor)]
Writer = Annotated[Principal, require(Role.admin, Role.member)]
Admin = Annotated[Principal, require(Role.admin)]
Auditor = Annotated[Principal, require(Role.admin, Role.auditor)]
