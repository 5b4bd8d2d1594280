"""API keys: hashed at rest, scoped, revocable, expiring; rate limits; audit entries."""
import os
import subprocess
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from tenants.models import ApiKey, AuditEvent
from tests.conftest import TRANSACTIONAL_WITH_SYSTEM, api_key_for, rows

pytestmark = pytest.mark.django_db


def _bearer(client, key):
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def api():
    from rest_framework.test import APIClient

    return APIClient()


def test_created_key_is_shown_once_and_works(make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)

    created = client.post("/api/v1/api-keys", {"name": "ci", "scopes": ["platform:read"]}, format="json")

    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("lode_sk_" + created.json()["prefix"] + "_")
    listed = client.get("/api/v1/api-keys").json()["results"]
    assert all("secret" not in item for item in listed)
    from rest_framework.test import APIClient

    assert _bearer(APIClient(), secret).get("/api/v1/jobs").status_code == 200


@TRANSACTIONAL_WITH_SYSTEM
def test_the_secret_is_nowhere_in_a_database_dump(make_tenant):
    tenant = make_tenant()
    secret = api_key_for(tenant.user)
    db = settings.DATABASES["system"]  # the role that bypasses RLS, so the dump holds every row
    dump = subprocess.run(
        ["pg_dump", "--data-only", "-h", db["HOST"], "-p", str(db["PORT"]), "-U", db["USER"], db["NAME"]],
        env={**os.environ, "PGPASSWORD": db["PASSWORD"]}, capture_output=True, text=True, check=True,
    ).stdout

    prefix = secret.split("_")[2]
    assert prefix in dump  # the dump does hold the key's row
    assert secret not in dump and secret.split("_", 3)[3] not in dump


def test_revoked_key_is_a_401(make_tenant, api_client_for, api):
    tenant = make_tenant()
    owner = api_client_for(tenant.user)
    created = owner.post("/api/v1/api-keys", {"name": "old", "scopes": ["platform:read"]}, format="json").json()

    assert owner.post(f"/api/v1/api-keys/{created['id']}/revoke").status_code == 200

    response = _bearer(api, created["secret"]).get("/api/v1/jobs")
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_expired_key_is_a_401(make_tenant, api):
    tenant = make_tenant()
    secret = api_key_for(tenant.user, scopes=["platform:read"])
    [key] = rows(ApiKey, tenant.organization.id)
    from tenants.db_context import tenant_atomic

    with tenant_atomic(tenant.organization.id):
        ApiKey.objects.filter(id=key.id).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = _bearer(api, secret).get("/api/v1/jobs")
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


@pytest.mark.parametrize("bad", ["lode_sk_nope", "lode_sk_abcdefabcdef_wrong-secret", "sk-other-vendor", ""])
def test_malformed_or_wrong_keys_are_a_401(make_tenant, api, bad):
    make_tenant()
    response = api.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Bearer {bad}")
    assert response.status_code == 401


def test_a_guessed_secret_for_a_real_prefix_is_a_401(make_tenant, api):
    tenant = make_tenant()
    secret = api_key_for(tenant.user)
    forged = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")

    assert _bearer(api, forged).get("/api/v1/jobs").status_code == 401


def test_scope_violation_is_a_403_naming_the_permission(make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user, scopes=["platform:read"])

    assert client.get("/api/v1/jobs").status_code == 200
    response = client.post("/api/v1/jobs", {"kind": "core.ping"}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Missing permission platform:write."
    assert response.json()["error"]["details"]["required"] == "platform:write"


def test_a_key_cannot_get_more_than_its_creators_role(make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user, scopes=["organization:read", "organization:write"])

    response = client.post("/api/v1/api-keys", {"name": "escalate", "scopes": ["billing:write"]}, format="json")

    assert response.status_code == 403 and response.json()["error"]["details"]["required"] == "billing:write"


def test_unknown_scope_is_a_400(make_tenant, api_client_for):
    client = api_client_for(make_tenant().user)

    response = client.post("/api/v1/api-keys", {"name": "x", "scopes": ["everything:write"]}, format="json")

    assert response.status_code == 400 and response.json()["error"]["details"]["field"] == "scopes"


def test_key_creation_and_revocation_are_audited(make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    created = client.post("/api/v1/api-keys", {"name": "audited", "scopes": ["platform:read"]}, format="json").json()
    client.post(f"/api/v1/api-keys/{created['id']}/revoke")

    actions = [e["action"] for e in client.get("/api/v1/audit-events").json()["results"]]

    assert "api_key.created" in actions and "api_key.revoked" in actions


def test_the_audit_log_is_append_only(make_tenant):
    tenant = make_tenant()
    from django.db import connection

    from tenants.db_context import tenant_atomic

    with pytest.raises(Exception, match="append-only"):
        with tenant_atomic(tenant.organization.id), connection.cursor() as cursor:
            cursor.execute("UPDATE tenants_auditevent SET action = 'nothing happened'")
    assert all(e.action != "nothing happened" for e in rows(AuditEvent, tenant.organization.id))


def test_rate_limit_per_key_is_a_429_with_retry_after(make_tenant, api_client_for):
    client = api_client_for(make_tenant().user)  # a fresh key: its counter starts at zero
    from rest_framework.throttling import SimpleRateThrottle

    # DRF reads the rates once, into a class attribute; swap it for this test only.
    original = SimpleRateThrottle.THROTTLE_RATES
    SimpleRateThrottle.THROTTLE_RATES = {**original, "api_key": "3/min"}
    try:
        statuses = [client.get("/api/v1/jobs").status_code for _ in range(4)]
        limited = client.get("/api/v1/jobs")
    finally:
        SimpleRateThrottle.THROTTLE_RATES = original

    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert limited.json()["error"]["code"] == "throttled"


def test_login_is_locked_after_repeated_failures_even_with_the_right_password(make_tenant, client):
    import uuid

    email = f"target-{uuid.uuid4().hex[:8]}@example.com"  # its own failure counter
    tenant = make_tenant(email=email)
    with override_settings(LOGIN_MAX_FAILURES_PER_EMAIL=3):
        for _ in range(3):
            client.post("/login/", {"username": email, "password": "wrong guess"})
        response = client.post("/login/", {"username": email, "password": tenant.user.raw_password})

    assert response.status_code == 200  # the form again, not the redirect of a successful login
    assert "_auth_user_id" not in client.session
