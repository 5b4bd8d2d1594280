"""Sign-up and identity endpoints."""
import pytest

from tenants.models import Membership, Organization, User
from tests.conftest import rows

pytestmark = pytest.mark.django_db


def test_signup_creates_user_organization_and_owner_membership(client):
    response = client.post(
        "/api/v1/auth/signup",
        {"email": "Founder@Example.com", "password": "a long test password 1", "organization_name": "Acme AI"},
        content_type="application/json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["user"]["email"] == "founder@example.com"
    assert body["organization"]["slug"] == "acme-ai"
    [membership] = rows(Membership, body["organization"]["id"], user__email="founder@example.com")
    assert membership.role == "owner" and membership.organization.name == "Acme AI"
    assert User.objects.get(email="founder@example.com").check_password("a long test password 1")


def test_signup_with_a_taken_email_is_a_409_and_writes_nothing(client, make_tenant):
    make_tenant(email="taken@example.com")
    organizations = Organization.objects.count()

    response = client.post(
        "/api/v1/auth/signup",
        {"email": "TAKEN@example.com", "password": "a long test password 1", "organization_name": "Other"},
        content_type="application/json",
    )

    assert response.status_code == 409
    assert response.json()["error"]["details"]["field"] == "email"
    assert Organization.objects.count() == organizations


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"email": "not-an-email", "password": "a long test password 1", "organization_name": "X"}, "email"),
        ({"email": "a@example.com", "password": "short", "organization_name": "X"}, "password"),
        ({"email": "a@example.com", "password": "password123", "organization_name": "X"}, "password"),
        ({"email": "a@example.com", "password": "a long test password 1"}, "organization_name"),
    ],
)
def test_bad_signup_is_a_400_naming_the_field(client, payload, field):
    response = client.post("/api/v1/auth/signup", payload, content_type="application/json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith(field)
    assert User.objects.count() == 0 and Organization.objects.count() == 0


def test_me_through_an_api_key_shows_the_organization_and_the_keys_rights(make_tenant, api_client_for):
    tenant = make_tenant(organization_name="Vertical Co")

    body = api_client_for(tenant.user, scopes=["platform:read"]).get("/api/v1/auth/me").json()

    assert body["user"] is None  # a key acts for its organization, not as a person
    assert body["organization"]["name"] == "Vertical Co"
    assert body["permissions"] == ["platform:read"]


def test_me_through_the_session_shows_the_user_role_and_permissions(make_tenant, client):
    tenant = make_tenant(organization_name="Vertical Co")
    client.force_login(tenant.user)

    body = client.get("/api/v1/auth/me").json()

    assert body["user"]["email"] == tenant.user.email
    assert body["role"] == "owner" and "billing:write" in body["permissions"]


def test_a_wrong_api_key_is_a_401(make_tenant, client):
    make_tenant()

    response = client.get("/api/v1/auth/me", HTTP_AUTHORIZATION="Bearer lode_sk_000000000000_not-a-real-secret")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
