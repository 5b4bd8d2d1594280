"""Reads of organizations, members, invitations, API keys and the audit log, within one tenant."""
from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone

from .db_context import tenant_atomic
from .models import ApiKey, AuditEvent, Invitation, Membership, Organization, User


def membership_list(*, tenant_id: UUID | str) -> QuerySet[Membership]:
    return Membership.objects.select_related("user").filter(organization_id=tenant_id).order_by("created_at", "id")


def invitation_list(*, tenant_id: UUID | str) -> QuerySet[Invitation]:
    """Pending invitations: not accepted, not revoked, not expired."""
    return Invitation.objects.filter(
        tenant_id=tenant_id, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).order_by("-created_at", "-id")


def api_key_list(*, tenant_id: UUID | str) -> QuerySet[ApiKey]:
    return ApiKey.objects.select_related("created_by").filter(tenant_id=tenant_id).order_by("-created_at", "-id")


def audit_event_list(*, tenant_id: UUID | str, limit: int = 200) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.select_related("actor_user").filter(tenant_id=tenant_id).order_by("-created_at", "-id")[:limit]


def organizations_for_user(*, user: User) -> list[tuple[Organization, str]]:
    """Every organization the user belongs to, with their role (a user sees their own
    memberships in every organization; nobody else's)."""
    with tenant_atomic(None, user_id=user.pk):
        memberships = Membership.objects.select_related("organization").filter(user=user).order_by("created_at")
        return [(m.organization, m.role) for m in memberships]


def organization_owner_emails(*, tenant_id: UUID | str) -> list[str]:
    """Where notices about the organization go when it named no other address."""
    with tenant_atomic(tenant_id):
        return list(
            Membership.objects.filter(organization_id=tenant_id, role="owner", user__is_active=True)
            .order_by("created_at").values_list("user__email", flat=True)
        )
