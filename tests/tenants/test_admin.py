"""Platform staff read every tenant's rows in the Django admin; nobody edits tenant data there."""
from lode.core.jobs.services import job_create
from tests.conftest import TRANSACTIONAL_WITH_SYSTEM

pytestmark = TRANSACTIONAL_WITH_SYSTEM


def test_staff_see_jobs_of_every_tenant_read_only(make_tenant, client, django_user_model):
    a, b = make_tenant(), make_tenant()
    job_a = job_create(tenant_id=a.organization.id, created_by=a.user, kind="core.ping")
    job_b = job_create(tenant_id=b.organization.id, created_by=b.user, kind="core.ping")
    staff = django_user_model.objects.create_superuser("staff@lode.example", "a long staff password 1")
    client.force_login(staff)

    listing = client.get("/admin/core/job/")

    assert listing.status_code == 200
    assert str(job_a.id) in listing.content.decode() and str(job_b.id) in listing.content.decode()
    detail = client.get(f"/admin/core/job/{job_a.id}/change/")
    assert detail.status_code == 200 and b"Save" not in detail.content
    assert client.post(f"/admin/core/job/{job_a.id}/delete/", {"post": "yes"}).status_code == 403


def test_a_tenant_owner_is_not_staff(make_tenant, client):
    tenant = make_tenant()
    client.force_login(tenant.user)

    assert client.get("/admin/core/job/").status_code == 302  # to the admin login
