"""The tenant context in the database: what PostgreSQL row-level security compares rows against.

Every tenant-owned table has a policy `tenant_id = current_setting('lode.tenant_id')` (see
tenants/rls.py). The setting is transaction-local (set_config(..., true) is SET LOCAL): a request
sets it inside its transaction (ATOMIC_REQUESTS) once the tenant is known; a task does its work in
`tenant_atomic(tenant_id)` blocks. Outside any context no tenant row is visible: RLS fails closed.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from uuid import UUID

from django.db import connections, transaction

TENANT_SETTING = "lode.tenant_id"
USER_SETTING = "lode.user_id"
API_KEY_PREFIX_SETTING = "lode.api_key_prefix"
INVITATION_SETTING = "lode.invitation_token"
SETTINGS = (TENANT_SETTING, USER_SETTING, API_KEY_PREFIX_SETTING, INVITATION_SETTING)

# What the enclosing tenant_atomic block is known to have set: (alias, tenant, user). A nested
# block asking for the same context then skips the settings round trips. Any other change of the
# settings (db_tenant_set, db_lookup_set) forgets it, so the next block sets them in full.
_known_context: ContextVar[tuple[str, str, str] | None] = ContextVar("lode_known_db_context", default=None)


def _set(values: dict[str, str], using: str) -> None:
    connection = connections[using]
    if not connection.in_atomic_block:
        # set_config(..., true) outside a transaction would lapse with the statement: refuse,
        # so a caller cannot believe it is scoped when it is not.
        raise RuntimeError("the tenant context can only be set inside a transaction")
    _known_context.set(None)
    placeholders = ", ".join("set_config(%s, %s, true)" for _ in values)
    params: list[str] = []
    for name, value in values.items():
        params += [name, value]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {placeholders}", params)


def db_context_get(*, using: str = "default") -> dict[str, str]:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT " + ", ".join("coalesce(current_setting(%s, true), '')" for _ in SETTINGS), list(SETTINGS))
        return dict(zip(SETTINGS, cursor.fetchone()))


def db_tenant_set(*, tenant_id: UUID | str | None, user_id: UUID | str | None = None, using: str = "default") -> None:
    """Sets the current transaction's tenant (and user) for row-level security, and ends any
    authentication lookup window (db_lookup_set)."""
    values = {TENANT_SETTING: str(tenant_id) if tenant_id else "", API_KEY_PREFIX_SETTING: "", INVITATION_SETTING: ""}
    if user_id is not None:
        values[USER_SETTING] = str(user_id)
    _set(values, using)


def db_lookup_set(*, api_key_prefix: str | None = None, invitation_token: str | None = None, using: str = "default") -> None:
    """Lets this transaction see the one API key (by prefix) or invitation (by token hash) it is
    authenticating, before any tenant is known. The secret itself is still checked by hash."""
    values = {}
    if api_key_prefix is not None:
        values[API_KEY_PREFIX_SETTING] = api_key_prefix
    if invitation_token is not None:
        values[INVITATION_SETTING] = invitation_token
    _set(values, using)


@contextmanager
def tenant_atomic(tenant_id: UUID | str | None, *, user_id: UUID | str | None = None, using: str = "default") -> Iterator[None]:
    """A transaction (or savepoint) in which tenant_id's rows are visible (with tenant_id=None and
    a user_id: only that user's own memberships). The previous context is restored on the way
    out, so a nested block for another tenant does not leak into its caller."""
    tenant = str(tenant_id) if tenant_id else ""
    known = _known_context.get()
    outer = connections[using].in_atomic_block
    if outer and known is not None and known[:2] == (using, tenant) and (user_id is None or known[2] == str(user_id)):
        # Already in this tenant's context (a service called from another service): no savepoint,
        # no settings round trips; an error fails the enclosing transaction.
        with transaction.atomic(using=using, savepoint=False):
            yield
        return
    with transaction.atomic(using=using):
        previous = db_context_get(using=using) if outer else None
        db_tenant_set(tenant_id=tenant_id, user_id=user_id, using=using)
        token = _known_context.set((using, tenant, str(user_id) if user_id is not None else (previous or {}).get(USER_SETTING, "")))
        try:
            yield
        finally:
            _known_context.reset(token)
        # On an exception the savepoint's rollback undoes the set_config as well; on success the
        # caller's context is put back by hand.
        if previous is not None:
            _set(previous, using)


def dangerously_all_tenants(model):
    """Every tenant's rows of a model, unscoped and through the role that bypasses row-level
    security. For platform work that must span tenants (the job reconciler, metrics, staff
    admin); never for anything a tenant asked for."""
    return model._base_manager.using("system").all()
