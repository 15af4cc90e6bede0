"""The production database roles: the owner migrates; the API and workers connect as an
application role that may only INSERT and SELECT the audit tables.

The append-only triggers stop UPDATE, DELETE and TRUNCATE from any role, but the table's owner
(or a superuser) can switch them off; an application role that does not own the tables can
neither do that nor, lacking the grants, change the rows with the triggers off. A stolen API
credential then cannot rewrite history, and the signed checkpoints catch the owner doing so.
"""

from __future__ import annotations

import re

AUDIT_TABLES = ("audit_events", "audit_checkpoints")
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def create_role_if_missing(role: str) -> str:
    """A statement that creates ``role`` as a login role without a password when it does not
    exist; the caller sets the password (quoted by the server, never pasted into SQL text)."""
    if not _ROLE.match(role):
        raise ValueError(f"{role!r}: a role name is lower-case letters, digits and _")
    return (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')"
        f' THEN CREATE ROLE "{role}" LOGIN; END IF; END $$'
    )


def app_role_grants(role: str, schema: str = "public") -> list[str]:
    """The statements that give ``role`` what the service needs and no more. Idempotent: run
    them again after every ``lethe db upgrade`` so that new tables are covered."""
    if not _ROLE.match(role) or not _ROLE.match(schema):
        raise ValueError(f"{role!r}: a role name is lower-case letters, digits and _")
    r, s = f'"{role}"', f'"{schema}"'
    audit = ", ".join(f"{s}.{t}" for t in AUDIT_TABLES)
    return [
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {audit} FROM {r}",
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {s}.alembic_version FROM {r}",
    ]
