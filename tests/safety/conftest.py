"""Fixtures of the safety tests: a tenant with an owner and two reviewers (API clients for all),
members of other roles on demand, flagged items made through the real check path."""
from __future__ import annotations

import pytest


@pytest.fixture
def safety_tenant(make_tenant, api_client_for):
    """An organization with its owner and a member with the reviewer role, and API clients."""
    from tenants.services import invitation_accept, invitation_create, user_signup

    owner = make_tenant()
    reviewers = []
    for number in range(2):
        person = user_signup(email=f"reviewer-{number}-{owner.organization.slug}@example.com",
                             password="a long test password 1", organization_name=f"{owner.organization.slug} r{number}")
        invited = invitation_create(tenant_id=owner.organization.id, invited_by=owner.user, email=person.user.email,
                                    role="reviewer")
        invitation_accept(token=invited.token, user=person.user)
        reviewers.append(person.user)

    class Tenant:
        id = owner.organization.id
        organization = owner.organization
        user = owner.user
        owner_client = api_client_for(owner.user)
        reviewer_users = reviewers
        reviewer_clients = [_client_for(user, owner.organization.id) for user in reviewers]

    return Tenant


def member_client(tenant, role: str):
    """A new member of the tenant's organization with `role` (signed up, invited by the owner, accepted)
    and an API client holding the role's rights: (user, client)."""
    import uuid

    from tenants.services import invitation_accept, invitation_create, user_signup

    person = user_signup(email=f"{role}-{uuid.uuid4().hex[:8]}@example.com", password="a long test password 1",
                         organization_name=f"The {role}'s own")
    invited = invitation_create(tenant_id=tenant.id, invited_by=tenant.user, email=person.user.email, role=role)
    invitation_accept(token=invited.token, user=person.user)
    return person.user, _client_for(person.user, tenant.id)


def _client_for(user, organization_id):
    """An API key of the user's membership in this organization (not the one they signed up with)."""
    from django.db import transaction
    from rest_framework.test import APIClient

    from tenants.db_context import db_tenant_set
    from tenants.models import Membership
    from tenants.permissions import ROLE_PERMISSIONS
    from tenants.services import api_key_create

    with transaction.atomic():
        db_tenant_set(tenant_id=None, user_id=user.pk)
        membership = Membership.objects.get(user=user, organization_id=organization_id)
    permissions = ROLE_PERMISSIONS[membership.role]
    created = api_key_create(tenant_id=organization_id, created_by=user, creator_permissions=permissions, name="reviewer",
                             scopes=sorted(permissions))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {created.secret}")
    return client


def flag_texts(tenant_id, texts: list[str], *, source: str = "output", hold: bool | None = None):
    """Flagged items through the real check path: a policy flagging a tenant term, then the texts."""
    from lode.safety.checks import texts_check

    return texts_check(tenant_id=tenant_id, texts=texts, source=source, hold=hold, source_ref="test")
