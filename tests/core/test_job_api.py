"""Job API: validation, error bodies, tenant scoping, pagination."""
import pytest

from lode.core.jobs import services
from lode.core.models import Job
from tests.conftest import rows

pytestmark = pytest.mark.django_db


def test_unknown_job_kind_is_a_400_naming_the_field(make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)

    response = client.post("/api/v1/jobs", {"kind": "nope.nothing"}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["message"].startswith("kind:")
    assert "core.ping" in error["details"]["known"]
    assert rows(Job, tenant.organization.id) == []


@pytest.mark.parametrize(
    "params, field",
    [({"steps": 0}, "params.steps"), ({"steps": "3"}, "params.steps"), ({"sleep_seconds": 61}, "params.sleep_seconds"),
     ({"colour": "red"}, "params.colour")],
)
def test_bad_job_params_are_a_400_naming_the_parameter(make_tenant, api_client_for, params, field):
    tenant = make_tenant()
    client = api_client_for(tenant.user)

    response = client.post("/api/v1/jobs", {"kind": "core.ping", "params": params}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == field
    assert rows(Job, tenant.organization.id) == []


def test_malformed_json_is_a_400_with_the_error_body(make_tenant, api_client_for):
    client = api_client_for(make_tenant().user)

    response = client.post("/api/v1/jobs", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_unauthenticated_request_is_a_401_with_the_error_body(client):
    response = client.get("/api/v1/jobs")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "not_authenticated"


def test_another_tenants_job_is_not_found(make_tenant, api_client_for):
    owner, stranger = make_tenant(), make_tenant()
    job = services.job_create(tenant_id=owner.organization.id, created_by=owner.user, kind="core.ping")
    client = api_client_for(stranger.user)

    assert client.get(f"/api/v1/jobs/{job.id}").status_code == 404
    assert client.post(f"/api/v1/jobs/{job.id}/cancel").status_code == 404
    assert client.get(f"/api/v1/jobs/{job.id}/events").status_code == 404
    assert client.get("/api/v1/jobs").json()["results"] == []
    assert rows(Job, owner.organization.id, id=job.id)[0].state == "queued"


def test_job_list_is_cursor_paginated_newest_first(make_tenant, api_client_for, django_assert_max_num_queries):
    tenant = make_tenant()
    ids = [
        str(services.job_create(tenant_id=tenant.organization.id, created_by=tenant.user, kind="core.ping").id)
        for _ in range(5)
    ]
    client = api_client_for(tenant.user)
    client.get("/api/v1/jobs?page_size=1")  # the key's first use records last_used_at once

    # SAVEPOINT, key lookup window, key, tenant context, page, RELEASE: no query per row.
    with django_assert_max_num_queries(6):
        first = client.get("/api/v1/jobs?page_size=3").json()
    second = client.get(first["next"]).json()

    assert [j["id"] for j in first["results"]] + [j["id"] for j in second["results"]] == ids[::-1]
    assert second["next"] is None


def test_job_list_rejects_an_unknown_state_filter(make_tenant, api_client_for):
    response = api_client_for(make_tenant().user).get("/api/v1/jobs?state=melting")

    assert response.status_code == 400 and response.json()["error"]["details"]["field"] == "state"


def test_unknown_api_route_is_a_json_404(make_tenant, api_client_for):
    response = api_client_for(make_tenant().user).get("/api/v1/no-such-thing")

    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_openapi_schema_and_swagger_ui_are_served(client):
    schema = client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = client.get("/api/v1/docs")

    assert schema.status_code == 200
    assert "/api/v1/jobs" in schema.json()["paths"]
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
