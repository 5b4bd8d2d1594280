"""Which tenant a request acts for, and with which rights. Resolved once per request, from the
API key or from the signed-in user's current organization; it also sets the transaction's
row-level-security context. Views never pick a tenant themselves."""
from __future__ import annotations

from dataclasses import dataclass

from .db_context import db_tenant_set
from .models import ApiKey, Membership, Organization, User
from .permissions import ROLE_PERMISSIONS

SESSION_ORGANIZATION_KEY = "lode_organization_id"


@dataclass(frozen=True)
class TenantAccess:
    tenant: Organization | None
    user: User | None
    api_key: ApiKey | None
    role: str | None
    permissions: frozenset[str]


def _remember(request, access: TenantAccess) -> TenantAccess:
    request.tenant_access = access
    inner = getattr(request, "_request", None)  # DRF's Request wraps Django's HttpRequest
    if inner is not None:
        inner.tenant_access = access
    return access


def access_for_user(request, user: User) -> TenantAccess:
    """The signed-in user's access: their chosen organization (session), else their first one."""
    db_tenant_set(tenant_id=None, user_id=user.pk)
    memberships = Membership.objects.select_related("organization").filter(user=user).order_by("created_at")
    session = getattr(request, "session", None)
    chosen = session.get(SESSION_ORGANIZATION_KEY) if session is not None else None
    membership = None
    if chosen:
        membership = memberships.filter(organization_id=chosen).first()
    membership = membership or memberships.first()
    if membership is None:
        return _remember(request, TenantAccess(None, user, None, None, frozenset()))
    db_tenant_set(tenant_id=membership.organization_id, user_id=user.pk)
    return _remember(
        request,
        TenantAccess(membership.organization, user, None, membership.role, ROLE_PERMISSIONS.get(membership.role, frozenset())),
    )


def access_for_api_key(request, api_key: ApiKey) -> TenantAccess:
    # No user: a key acts for its organization only, so the creator's memberships elsewhere
    # (visible to a user context through the memberships policy) stay out of reach.
    db_tenant_set(tenant_id=api_key.tenant_id, user_id="")
    return _remember(request, TenantAccess(api_key.tenant, None, api_key, None, frozenset(api_key.scopes)))


def current_access(request) -> TenantAccess | None:
    access = getattr(request, "tenant_access", None)
    if access is not None:
        return access
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return access_for_user(request, user)


def current_tenant_for_request(request) -> Organization | None:
    access = current_access(request)
    return access.tenant if access is not None else None


def organization_switch(request, *, organization_id) -> Organization:
    """Makes another of the signed-in user's organizations the one their session acts for."""
    from lode.core.errors import NotFound

    from .db_context import tenant_atomic

    user = request.user
    with tenant_atomic(None, user_id=user.pk):
        membership = (
            Membership.objects.select_related("organization").filter(user=user, organization_id=organization_id).first()
            if _is_uuid(organization_id) else None
        )
    if membership is None:
        raise NotFound("Organization not found.")
    request.session[SESSION_ORGANIZATION_KEY] = str(membership.organization_id)
    for holder in (request, getattr(request, "_request", None)):
        if holder is not None and hasattr(holder, "tenant_access"):
            del holder.tenant_access
    access_for_user(request, user)
    return membership.organization


def _is_uuid(value) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def request_actor(request) -> ApiKey | User | None:
    """Who acts in a request, as services take it (`by`): its API key, else its signed-in user."""
    access = current_access(request)
    return access.api_key or access.user
