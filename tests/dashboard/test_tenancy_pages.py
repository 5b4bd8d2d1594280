"""Tenancy pages through Django's test client: sign-up, the organization switcher, members and
invitations, roles, API keys (the secret shown once) and the audit log, each checked against the
role's permissions."""
from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tenants.models import ApiKey, AuditEvent, Invitation, Membership
from tenants.selectors import organizations_for_user
from tenants.services import api_key_create, invitation_accept, invitation_create
from tests.conftest import rows
from tests.dashboard.conftest import PASSWORD, client_for

SECRET = re.compile(r"lode_sk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")
pytestmark = pytest.mark.django_db


def _user(email: str):
    return get_user_model().objects.create_user(email, PASSWORD)


def _join(owner, user, role: str) -> Membership:
    """Makes `user` a member of the owner's organization through the real invitation flow."""
    created = invitation_create(tenant_id=owner.organization.id, invited_by=owner.user, email=user.email, role=role)
    return invitation_accept(token=created.token, user=user)


def _members(signup, **filters) -> list[Membership]:
    # Filtered by organization as well: inside a test's one transaction the RLS user setting of
    # the last request stays set, which also shows that user's memberships elsewhere.
    return rows(Membership, signup.organization.id, organization_id=signup.organization.id, **filters)


def _html(response) -> str:
    return response.content.decode()


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


# --- Sign-up --------------------------------------------------------------------------------------


def test_signup_creates_user_and_organization_and_signs_in(client: Client):
    response = client.post(reverse("dashboard:signup"), {
        "email": "Lin@Example.com", "password": PASSWORD, "organization_name": "Tidal Labs", "full_name": "Lin",
    })
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:home")

    user = get_user_model().objects.get(email="lin@example.com")
    assert str(user.pk) == client.session["_auth_user_id"]
    [(organization, role)] = organizations_for_user(user=user)
    assert (organization.name, role) == ("Tidal Labs", "owner")
    [membership] = rows(Membership, organization.id, user=user)
    assert membership.role == "owner"

    html = _html(client.get(reverse("dashboard:home")))
    assert "Tidal Labs" in html and "lin@example.com" in html


def test_signup_page_is_a_form_and_links_to_login(client: Client):
    html = _html(client.get(reverse("dashboard:signup")))
    for label in ("Email", "Password", "Organization name"):
        assert f">{label}</label>" in html
    assert 'type="password"' in html and 'autocomplete="new-password"' in html
    assert "csrfmiddlewaretoken" in html
    assert f'href="{reverse("dashboard:login")}"' in html
    # ... and the login page links back to sign-up.
    assert f'href="{reverse("dashboard:signup")}"' in _html(client.get(reverse("dashboard:login")))


@pytest.mark.parametrize("field, data, error", [
    ("password", {"password": "short"}, "too short"),
    ("password", {"password": "password123"}, "too common"),
    ("email", {"email": "not-an-email"}, "Enter a valid email address."),
    ("organization_name", {"organization_name": ""}, "This field is required."),
])
def test_bad_signup_shows_the_field_error_and_writes_nothing(client: Client, field: str, data: dict, error: str):
    users_before = get_user_model().objects.count()
    form = {"email": "lin@example.com", "password": PASSWORD, "organization_name": "Tidal Labs"} | data
    response = client.post(reverse("dashboard:signup"), form)
    assert response.status_code == 400
    assert error in _html(response)
    assert error in " ".join(response.context["form"].errors[field])
    assert get_user_model().objects.count() == users_before
    assert "_auth_user_id" not in client.session
    # What was typed stays in the form (except the password).
    if field != "email":
        assert 'value="lin@example.com"' in _html(response)


def test_signup_with_a_taken_email_names_the_email_field(client: Client, ada):
    response = client.post(reverse("dashboard:signup"), {
        "email": "ADA@example.com", "password": PASSWORD, "organization_name": "Second Engines",
    })
    assert response.status_code == 409
    assert response.context["form"].errors["email"] == ["An account with this email already exists."]
    assert get_user_model().objects.filter(email__iexact="ada@example.com").count() == 1
    assert [org.name for org, _ in organizations_for_user(user=ada.user)] == ["Analytical Engines"]


def test_signup_follows_a_safe_next_only(client: Client):
    form = {"password": PASSWORD, "organization_name": "Tidal Labs"}
    response = client.post(reverse("dashboard:signup"), form | {"email": "a@example.com", "next": "/invitations/accept/abc/"})
    assert response["Location"] == "/invitations/accept/abc/"
    other = Client()
    response = other.post(reverse("dashboard:signup"), form | {"email": "b@example.com", "next": "https://evil.example/"})
    assert response["Location"] == reverse("dashboard:home")


def test_signed_in_user_visiting_signup_goes_home(ada_client: Client):
    response = ada_client.get(reverse("dashboard:signup"))
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:home")


# --- Permissions and navigation -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dashboard:members", "dashboard:api-keys", "dashboard:audit"])
def test_anonymous_user_is_sent_to_login(client: Client, name: str):
    url = reverse(name)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('dashboard:login')}?next={url}"


def test_owner_sees_every_settings_link(ada_client: Client):
    html = _html(ada_client.get(reverse("dashboard:home")))
    for name in ("dashboard:members", "dashboard:api-keys", "dashboard:audit", "dashboard:jobs"):
        assert f'href="{reverse(name)}"' in html


def test_annotator_sees_only_what_their_role_allows(ada):
    annotator = _user("ann@example.com")
    _join(ada, annotator, "annotator")
    client = client_for(annotator)

    home = _html(client.get(reverse("dashboard:home")))
    assert f'href="{reverse("dashboard:members")}"' in home  # organization:read
    assert f'href="{reverse("dashboard:audit")}"' not in home
    assert f'href="{reverse("dashboard:jobs")}"' not in home
    assert "Recent jobs" not in home

    # Readable: members and API keys, without any of the managing forms.
    members = _html(client.get(reverse("dashboard:members")))
    assert "ada@example.com" in members and "ann@example.com" in members
    assert "Send invitation" not in members and "Change role" not in members and "Remove" not in members
    keys = client.get(reverse("dashboard:api-keys"))
    assert keys.status_code == 200
    assert "Create key" not in _html(keys)


@pytest.mark.parametrize("method, name, permission", [
    ("get", "dashboard:audit", "audit:read"),
    ("get", "dashboard:jobs", "platform:read"),
    ("post", "dashboard:members", "organization:write"),
    ("post", "dashboard:api-keys", "organization:write"),
])
def test_a_page_the_role_may_not_use_is_403_naming_the_permission(ada, method: str, name: str, permission: str):
    annotator = _user("ann@example.com")
    _join(ada, annotator, "annotator")
    client = client_for(annotator)
    data = {"email": "x@example.com", "role": "engineer", "name": "k", "scopes": ["labeling:read"]}
    response = getattr(client, method)(reverse(name), data if method == "post" else None)
    assert response.status_code == 403
    html = _html(response)
    assert f'<code data-testid="missing-permission">{permission}</code>' in html
    assert "annotator" in html
    assert rows(Invitation, ada.organization.id, accepted_at__isnull=True) == []
    assert rows(ApiKey, ada.organization.id) == []


def test_row_actions_need_organization_write(ada):
    annotator = _user("ann@example.com")
    membership = _join(ada, annotator, "annotator")
    key = api_key_create(tenant_id=ada.organization.id, created_by=ada.user, creator_permissions=frozenset({"datasets:read"}),
                         name="ci", scopes=["datasets:read"])
    client = client_for(annotator)
    for url, data in (
        (reverse("dashboard:member-role", kwargs={"membership_id": membership.id}), {"role": "admin"}),
        (reverse("dashboard:member-remove", kwargs={"membership_id": membership.id}), {}),
        (reverse("dashboard:api-key-revoke", kwargs={"api_key_id": key.api_key.id}), {}),
    ):
        response = client.post(url, data)
        assert response.status_code == 403, url
        assert "organization:write" in _html(response)
    assert _members(ada, user=annotator)[0].role == "annotator"
    assert rows(ApiKey, ada.organization.id)[0].revoked_at is None


def test_row_actions_are_post_only(ada_client: Client, ada):
    [membership] = _members(ada)
    assert ada_client.get(reverse("dashboard:member-remove", kwargs={"membership_id": membership.id})).status_code == 405


# --- Members and invitations -----------------------------------------------------------------------


def test_invitation_email_link_lets_the_invitee_join_with_the_role(
    ada_client: Client, ada, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = ada_client.post(reverse("dashboard:members"), {"email": "Bob@Example.com", "role": "engineer"}, follow=True)
    assert response.status_code == 200
    assert "Invitation sent to bob@example.com." in _messages(response)
    assert 'data-invitation="bob@example.com"' in _html(response)  # listed as pending

    [email] = mail.outbox
    assert email.to == ["bob@example.com"]
    assert "Analytical Engines" in email.subject
    match = re.search(r"https?://[^/\s]+(/invitations/accept/([^/\s]+)/)", email.body)
    assert match, email.body
    path, token = match.groups()
    assert path == reverse("dashboard:invitation-accept", kwargs={"token": token})

    bob = _user("bob@example.com")
    bob_client = client_for(bob)
    page = bob_client.get(path)
    assert page.status_code == 200
    assert "Accept invitation" in _html(page)
    assert _members(ada, user=bob) == []  # a GET accepts nothing

    response = bob_client.post(path, follow=True)
    assert response.redirect_chain == [(reverse("dashboard:home"), 302)]
    assert "You joined Analytical Engines as Engineer." in _messages(response)
    assert 'data-testid="org-name">Analytical Engines<' in _html(response)
    [membership] = _members(ada, user=bob)
    assert membership.role == "engineer"

    # No longer pending; a second use of the link is refused with a message, not a 500.
    assert 'data-invitation="bob@example.com"' not in _html(ada_client.get(reverse("dashboard:members")))
    again = bob_client.post(path)
    assert again.status_code == 409
    assert "already accepted" in _html(again)


def test_anonymous_invitee_is_offered_login_and_signup_coming_back(client: Client, ada):
    created = invitation_create(tenant_id=ada.organization.id, invited_by=ada.user, email="lin@example.com", role="reviewer")
    path = reverse("dashboard:invitation-accept", kwargs={"token": created.token})
    page = _html(client.get(path))
    assert f'href="{reverse("dashboard:login")}?next={path}"' in page
    assert f'href="{reverse("dashboard:signup")}?next={path}"' in page
    response = client.post(path)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('dashboard:login')}?next={path}"

    # Signing up with next comes back to the link, which then accepts.
    response = client.post(reverse("dashboard:signup"), {
        "email": "lin@example.com", "password": PASSWORD, "organization_name": "Lin's lab", "next": path,
    })
    assert response["Location"] == path
    client.post(path)
    lin = get_user_model().objects.get(email="lin@example.com")
    assert _members(ada, user=lin)[0].role == "reviewer"


def test_invitation_for_another_address_is_refused_on_the_page(ada):
    created = invitation_create(tenant_id=ada.organization.id, invited_by=ada.user, email="bob@example.com", role="engineer")
    eve = _user("eve@example.com")
    response = client_for(eve).post(reverse("dashboard:invitation-accept", kwargs={"token": created.token}))
    assert response.status_code == 403
    assert "sent to another email address" in _html(response)
    assert _members(ada, user=eve) == []


def test_unknown_invitation_token_is_404_on_the_page(ada):
    response = client_for(ada.user).post(reverse("dashboard:invitation-accept", kwargs={"token": "nope"}))
    assert response.status_code == 404
    assert "does not exist or was revoked" in _html(response)


@pytest.mark.parametrize("data, field, error, status", [
    ({"email": "not-an-email", "role": "engineer"}, "email", "Enter a valid email address.", 400),
    ({"email": "x@example.com", "role": "owner"}, "role", "Select a valid choice.", 400),
    ({"email": "ADA@example.com", "role": "engineer"}, "email", "ada@example.com is already a member.", 409),
])
def test_bad_invitation_shows_the_field_error(ada_client: Client, ada, data, field, error, status):
    response = ada_client.post(reverse("dashboard:members"), data)
    assert response.status_code == status
    assert any(error in message for message in response.context["invite_form"].errors[field])
    assert error.replace("'", "&#x27;") in _html(response)
    assert rows(Invitation, ada.organization.id) == []
    assert mail.outbox == []


def test_revoking_an_invitation_removes_it_and_its_link_stops_working(ada_client: Client, ada):
    created = invitation_create(tenant_id=ada.organization.id, invited_by=ada.user, email="bob@example.com", role="engineer")
    response = ada_client.post(reverse("dashboard:invitation-revoke", kwargs={"invitation_id": created.invitation.id}), follow=True)
    assert "Invitation to bob@example.com revoked." in _messages(response)
    assert 'data-invitation="bob@example.com"' not in _html(response)
    bob = _user("bob@example.com")
    refused = client_for(bob).post(reverse("dashboard:invitation-accept", kwargs={"token": created.token}))
    assert refused.status_code == 404


def test_owner_changes_a_role_and_removes_a_member(ada_client: Client, ada):
    bob = _user("bob@example.com")
    membership = _join(ada, bob, "engineer")
    html = _html(ada_client.get(reverse("dashboard:members")))
    assert 'aria-label="Role of bob@example.com"' in html

    response = ada_client.post(reverse("dashboard:member-role", kwargs={"membership_id": membership.id}), {"role": "reviewer"}, follow=True)
    assert "bob@example.com is now Reviewer." in _messages(response)
    assert _members(ada, user=bob)[0].role == "reviewer"

    response = ada_client.post(reverse("dashboard:member-remove", kwargs={"membership_id": membership.id}), follow=True)
    assert "Member removed." in _messages(response)
    assert _members(ada, user=bob) == []
    assert 'data-member="bob@example.com"' not in _html(response)
    actions = [event.action for event in rows(AuditEvent, ada.organization.id)]
    assert "member.role_changed" in actions and "member.removed" in actions


def test_the_last_owner_cannot_leave_and_the_page_says_why(ada_client: Client, ada):
    [own] = _members(ada)
    for url, data in (
        (reverse("dashboard:member-remove", kwargs={"membership_id": own.id}), {}),
        (reverse("dashboard:member-role", kwargs={"membership_id": own.id}), {"role": "admin"}),
    ):
        response = ada_client.post(url, data, follow=True)
        assert response.status_code == 200
        assert "An organization keeps at least one owner." in _messages(response)
    assert _members(ada)[0].role == "owner"


def test_an_admin_is_offered_no_owner_actions_and_is_refused_them(ada):
    admin = _user("root@example.com")
    _join(ada, admin, "admin")
    [owner_membership] = _members(ada, user=ada.user)
    client = client_for(admin)
    html = _html(client.get(reverse("dashboard:members")))
    assert 'aria-label="Role of ada@example.com"' not in html  # the owner's row has no forms
    assert 'aria-label="Remove ada@example.com"' not in html
    assert '<option value="owner"' not in html

    response = client.post(reverse("dashboard:member-remove", kwargs={"membership_id": owner_membership.id}), follow=True)
    assert "Only an owner can remove an owner." in _messages(response)
    assert _members(ada, user=ada.user) != []


def test_another_tenants_member_or_invitation_is_not_found(ada_client: Client, grace):
    [foreign] = _members(grace)
    invitation = invitation_create(tenant_id=grace.organization.id, invited_by=grace.user, email="x@example.com", role="engineer")
    response = ada_client.post(reverse("dashboard:member-role", kwargs={"membership_id": foreign.id}), {"role": "annotator"}, follow=True)
    assert "Member not found." in _messages(response)
    response = ada_client.post(reverse("dashboard:invitation-revoke", kwargs={"invitation_id": invitation.invitation.id}), follow=True)
    assert "Invitation not found." in _messages(response)
    assert _members(grace)[0].role == "owner"
    assert rows(Invitation, grace.organization.id)[0].revoked_at is None


def test_members_page_query_count_does_not_grow_with_members(ada_client: Client, ada):
    _join(ada, _user("m0@example.com"), "engineer")
    with CaptureQueriesContext(connection) as few:
        ada_client.get(reverse("dashboard:members"))
    for n in range(1, 6):
        _join(ada, _user(f"m{n}@example.com"), "annotator")
        invitation_create(tenant_id=ada.organization.id, invited_by=ada.user, email=f"i{n}@example.com", role="reviewer")
    with CaptureQueriesContext(connection) as many:
        html = _html(ada_client.get(reverse("dashboard:members")))
    assert "m5@example.com" in html and "i5@example.com" in html
    assert len(many) == len(few)


# --- API keys -------------------------------------------------------------------------------------


def test_created_api_key_secret_is_shown_once_and_works(ada_client: Client, ada):
    shown = ada_client.post(reverse("dashboard:api-keys"), {"name": "ci", "scopes": ["datasets:read", "training:write"]})
    assert shown.status_code == 201  # the page answers the POST itself: the secret is never stored
    html = _html(shown)
    [secret] = set(SECRET.findall(html))
    assert "it is shown only once" in html
    assert "no-store" in shown["Cache-Control"]
    [key] = rows(ApiKey, ada.organization.id)
    assert (key.name, key.scopes, key.created_by_id) == ("ci", ["datasets:read", "training:write"], ada.user.id)
    assert secret.startswith(f"lode_sk_{key.prefix}_")

    # The secret is a working key ...
    me = Client().get("/api/v1/auth/me", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert me.status_code == 200
    assert me.json()["organization"]["name"] == "Analytical Engines"

    # ... stored nowhere, not even in the session ...
    assert secret not in str(dict(ada_client.session))
    # ... and the page shows the key's row but never the secret again.
    again = _html(ada_client.get(reverse("dashboard:api-keys")))
    assert secret not in again and not SECRET.search(again)
    assert f"lode_sk_{key.prefix}_…" in again
    assert "datasets:read" in again and "training:write" in again
    assert "Active" in again


def test_api_key_with_expiry_lists_it(ada_client: Client, ada):
    ada_client.post(reverse("dashboard:api-keys"), {"name": "temp", "scopes": ["datasets:read"], "expires_on": "2999-01-31"})
    [key] = rows(ApiKey, ada.organization.id)
    assert key.expires_at.isoformat() == "2999-02-01T00:00:00+00:00"  # the end of the chosen day, UTC
    assert "2999-02-01 00:00" in _html(ada_client.get(reverse("dashboard:api-keys")))


@pytest.mark.parametrize("data, field, error", [
    ({"name": "ci", "scopes": []}, "scopes", "This field is required."),
    ({"name": "", "scopes": ["datasets:read"]}, "name", "This field is required."),
    ({"name": "ci", "scopes": ["nope:read"]}, "scopes", "Select a valid choice."),
    ({"name": "ci", "scopes": ["datasets:read"], "expires_on": "2001-01-01"}, "expires_on", "must be in the future"),
])
def test_bad_api_key_form_shows_the_field_error_and_creates_nothing(ada_client: Client, ada, data, field, error):
    response = ada_client.post(reverse("dashboard:api-keys"), data)
    assert response.status_code == 400
    assert any(error in message for message in response.context["create_form"].errors[field])
    assert error in _html(response)
    assert not SECRET.search(_html(response))
    assert rows(ApiKey, ada.organization.id) == []


def test_api_key_form_offers_only_scopes_the_role_has(ada):
    admin = _user("root@example.com")
    _join(ada, admin, "admin")
    client = client_for(admin)
    html = _html(client.get(reverse("dashboard:api-keys")))
    assert 'value="datasets:write"' in html
    assert 'value="billing:write"' not in html and 'value="audit:write"' not in html
    response = client.post(reverse("dashboard:api-keys"), {"name": "ci", "scopes": ["billing:write"]})
    assert response.status_code == 400
    assert rows(ApiKey, ada.organization.id) == []


def test_revoking_an_api_key_marks_it_and_refuses_it(ada_client: Client, ada):
    created = api_key_create(tenant_id=ada.organization.id, created_by=ada.user, creator_permissions=frozenset({"datasets:read"}),
                             name="ci", scopes=["datasets:read"])
    assert Client().get("/api/v1/auth/me", HTTP_AUTHORIZATION=f"Bearer {created.secret}").status_code == 200
    response = ada_client.post(reverse("dashboard:api-key-revoke", kwargs={"api_key_id": created.api_key.id}), follow=True)
    assert any("revoked" in message for message in _messages(response))
    html = _html(response)
    assert "Revoked" in html
    assert 'aria-label="Revoke ci"' not in html  # nothing left to revoke
    assert rows(ApiKey, ada.organization.id)[0].revoked_at is not None
    assert Client().get("/api/v1/auth/me", HTTP_AUTHORIZATION=f"Bearer {created.secret}").status_code == 401


def test_another_tenants_api_key_cannot_be_revoked(ada_client: Client, grace):
    created = api_key_create(tenant_id=grace.organization.id, created_by=grace.user, creator_permissions=frozenset({"datasets:read"}),
                             name="theirs", scopes=["datasets:read"])
    response = ada_client.post(reverse("dashboard:api-key-revoke", kwargs={"api_key_id": created.api_key.id}), follow=True)
    assert response.status_code == 200
    assert "API key not found." in _messages(response)
    assert "theirs" not in _html(response)
    assert rows(ApiKey, grace.organization.id)[0].revoked_at is None


def test_a_secret_created_in_one_organization_is_not_shown_in_another(ada, grace):
    _join(grace, ada.user, "admin")
    client = client_for(ada.user)
    client.post(reverse("dashboard:api-keys"), {"name": "ci", "scopes": ["datasets:read"]})
    client.post(reverse("dashboard:organization-switch"), {"organization_id": str(grace.organization.id)})
    assert not SECRET.search(_html(client.get(reverse("dashboard:api-keys"))))


# --- Audit log ------------------------------------------------------------------------------------


def test_audit_page_lists_the_api_key_creation_with_actor_and_ip(ada_client: Client, ada):
    ada_client.post(reverse("dashboard:api-keys"), {"name": "ci", "scopes": ["datasets:read"]})
    response = ada_client.get(reverse("dashboard:audit"))
    assert response.status_code == 200
    html = _html(response)
    row = re.search(r'<tr data-action="api_key.created">(.*?)</tr>', html, re.S)
    assert row, html
    assert "ada@example.com" in row.group(1)
    assert "127.0.0.1" in row.group(1)
    assert "tenants.apikey" in row.group(1)
    assert 'data-action="organization.created"' in html


def test_audit_page_shows_only_the_tenants_events(ada_client: Client, grace):
    api_key_create(tenant_id=grace.organization.id, created_by=grace.user, creator_permissions=frozenset({"datasets:read"}),
                   name="theirs", scopes=["datasets:read"])
    html = _html(ada_client.get(reverse("dashboard:audit")))
    assert "grace@example.com" not in html
    assert 'data-action="api_key.created"' not in html


def test_audit_page_query_count_does_not_grow_with_events(ada_client: Client, ada):
    def create(n):
        api_key_create(tenant_id=ada.organization.id, created_by=ada.user, creator_permissions=frozenset({"datasets:read"}),
                       name=f"k{n}", scopes=["datasets:read"])
    create(0)
    with CaptureQueriesContext(connection) as few:
        ada_client.get(reverse("dashboard:audit"))
    for n in range(1, 6):
        create(n)
    with CaptureQueriesContext(connection) as many:
        ada_client.get(reverse("dashboard:audit"))
    assert len(many) == len(few)


# --- Organization switcher -------------------------------------------------------------------------


def test_organization_switcher_changes_the_organization_shown(ada, grace):
    _join(grace, ada.user, "engineer")
    client = client_for(ada.user)
    home = _html(client.get(reverse("dashboard:home")))
    assert 'data-testid="org-name">Analytical Engines<' in home
    assert 'data-testid="org-switcher"' in home
    assert f'<option value="{grace.organization.id}"' in home and "Compilers Inc · engineer" in home

    response = client.post(reverse("dashboard:organization-switch"), {"organization_id": str(grace.organization.id)}, follow=True)
    assert response.redirect_chain == [(reverse("dashboard:home"), 302)]
    assert "Now working in Compilers Inc." in _messages(response)
    html = _html(response)
    assert 'data-testid="org-name">Compilers Inc<' in html
    assert f'<option value="{grace.organization.id}" selected>' in html
    # The other pages act for the new organization, with the role held there.
    members = _html(client.get(reverse("dashboard:members")))
    assert "grace@example.com" in members and "Send invitation" not in members  # engineer: read only
    assert client.get(reverse("dashboard:audit")).status_code == 403


def test_a_single_organization_has_no_switcher(ada_client: Client):
    assert 'data-testid="org-switcher"' not in _html(ada_client.get(reverse("dashboard:home")))


@pytest.mark.parametrize("organization_id", ["foreign", "not-a-uuid", "00000000-0000-4000-8000-000000000000"])
def test_switching_to_an_organization_one_is_not_in_is_refused_with_a_message(ada_client: Client, grace, organization_id):
    value = str(grace.organization.id) if organization_id == "foreign" else organization_id
    response = ada_client.post(reverse("dashboard:organization-switch"), {"organization_id": value}, follow=True)
    assert response.status_code == 200
    assert "Organization not found." in _messages(response)
    assert 'data-testid="org-name">Analytical Engines<' in _html(response)


def test_switching_needs_post_and_a_signed_in_user(client: Client, ada_client: Client):
    assert ada_client.get(reverse("dashboard:organization-switch")).status_code == 405
    response = client.post(reverse("dashboard:organization-switch"), {"organization_id": "x"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("dashboard:login"))


def test_a_method_a_page_does_not_handle_is_405(ada_client: Client):
    assert ada_client.post(reverse("dashboard:jobs")).status_code == 405
    assert ada_client.delete(reverse("dashboard:api-keys")).status_code == 405


def test_signups_from_one_address_share_one_limit_across_api_and_dashboard(client):
    from rest_framework.throttling import SimpleRateThrottle

    original = SimpleRateThrottle.THROTTLE_RATES
    SimpleRateThrottle.THROTTLE_RATES = {**original, "signup": "2/hour"}
    address = "198.51.100.23"  # its own counter
    try:
        for n in range(2):
            api = client.post(
                "/api/v1/auth/signup",
                {"email": f"limit-{n}@example.com", "password": "a long test password 1", "organization_name": f"L{n}"},
                content_type="application/json", REMOTE_ADDR=address,
            )
            assert api.status_code == 201
        page = client.post(
            reverse("dashboard:signup"),
            {"email": "limit-2@example.com", "password": "a long test password 1", "organization_name": "L2"},
            REMOTE_ADDR=address,
        )
    finally:
        SimpleRateThrottle.THROTTLE_RATES = original

    assert page.status_code == 429 and int(page["Retry-After"]) > 0
    assert "Too many sign-ups" in page.content.decode()
    assert not get_user_model().objects.filter(email="limit-2@example.com").exists()
