"""Audit entries for Django's login flow (see TenantsConfig.ready)."""
from __future__ import annotations

from django.db import transaction

from .db_context import db_tenant_set
from .models import Membership
from .services import audit_record


def _meta(request) -> dict:
    if request is None:
        return {"ip": None, "user_agent": ""}
    return {"ip": request.META.get("REMOTE_ADDR") or None, "user_agent": request.META.get("HTTP_USER_AGENT", "")}


def on_login(sender, request, user, **kwargs) -> None:
    with transaction.atomic():
        db_tenant_set(tenant_id=None, user_id=user.pk)
        tenant_ids = list(Membership.objects.filter(user=user).values_list("organization_id", flat=True))
    # One entry per organization the user belongs to, so each organization's log shows it.
    for tenant_id in tenant_ids or [None]:
        audit_record(tenant_id=tenant_id, action="auth.login", user=user, **_meta(request))


def on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    audit_record(
        tenant_id=None, action="auth.login_failed", actor_label=str(credentials.get("username", ""))[:254], **_meta(request)
    )
