"""Which tenant a request acts for. Resolved once per request; views never pick it themselves."""
from __future__ import annotations

from .models import Membership, Organization


def current_tenant_for_request(request) -> Organization | None:
    cached = getattr(request, "_lode_tenant", False)
    if cached is not False:
        return cached
    tenant = None
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        membership = (
            Membership.objects.select_related("organization").filter(user=user).order_by("created_at").first()
        )
        tenant = membership.organization if membership else None
    request._lode_tenant = tenant
    return tenant
