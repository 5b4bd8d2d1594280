"""Dashboard pages through Django's test client: sign-in, tenant scoping, htmx fragments."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from lode.core.jobs.services import job_claim, job_create, job_event_add, job_fail, job_progress_set
from lode.dashboard.views import loss_points
from tenants.services import user_signup

PASSWORD = "violet-harbour-lantern-42"

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada():
    return user_signup(email="ada@example.com", password=PASSWORD, organization_name="Analytical Engines")


@pytest.fixture
def grace():
    return user_signup(email="grace@example.com", password=PASSWORD, organization_name="Compilers Inc")


@pytest.fixture
def ada_client(client: Client, ada) -> Client:
    client.force_login(ada.user)
    return client


def _ping(signup, **params):
    return job_create(tenant_id=signup.organization.id, created_by=signup.user, kind="core.ping", params=params)


def _run(job, progress: float = 0.0, message: str = ""):
    """Moves a queued job to running as a worker would, optionally reporting progress."""
    job_claim(tenant_id=job.tenant_id, job_id=job.id, worker="test-worker", heartbeat_timeout=60)
    if progress:
        job_progress_set(tenant_id=job.tenant_id, job_id=job.id, worker="test-worker", progress=progress, message=message)
    return job


# --- Sign-in ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, kwargs", [("dashboard:home", {}), ("dashboard:jobs", {})])
def test_anonymous_user_is_redirected_to_login(client: Client, name: str, kwargs: dict):
    url = reverse(name, kwargs=kwargs)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('dashboard:login')}?next={url}"


def test_anonymous_job_detail_redirects_to_login(client: Client, ada):
    job = _ping(ada)
    response = client.get(reverse("dashboard:job", kwargs={"job_id": job.id}))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:login"))


def test_login_page_asks_for_email_and_password(client: Client):
    response = client.get(reverse("dashboard:login"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'type="email"' in html and 'type="password"' in html
    assert ">Email<" in html
    assert "csrfmiddlewaretoken" in html


def test_login_with_email_and_password_lands_on_home(client: Client, ada):
    response = client.post(reverse("dashboard:login"), {"username": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:home")
    assert client.get(reverse("dashboard:home")).status_code == 200


def test_login_with_wrong_password_shows_error_and_stays_signed_out(client: Client, ada):
    response = client.post(reverse("dashboard:login"), {"username": "ada@example.com", "password": "wrong-password-1"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'role="alert"' in html
    assert "Please enter a correct email" in html
    assert "_auth_user_id" not in client.session


def test_logout_needs_post_and_signs_out(ada_client: Client):
    assert ada_client.get(reverse("dashboard:logout")).status_code == 405
    response = ada_client.post(reverse("dashboard:logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:login")
    assert ada_client.get(reverse("dashboard:home")).status_code == 302


def test_signed_in_user_visiting_login_goes_home(ada_client: Client):
    response = ada_client.get(reverse("dashboard:login"))
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:home")


# --- Layout ---------------------------------------------------------------------------------------


def test_home_shows_user_organization_navigation_and_vendored_scripts(ada_client: Client):
    html = ada_client.get(reverse("dashboard:home")).content.decode()
    assert "ada@example.com" in html
    assert "Analytical Engines" in html
    for section in ("Home", "Jobs", "Datasets", "Labeling", "Fine-tunes", "Models", "Playground", "Moderation", "Billing"):
        assert f">{section}" in html
    assert html.count('aria-disabled="true"') == 1  # labeling: not built yet
    assert f'action="{reverse("dashboard:logout")}"' in html
    assert "/static/vendor/htmx/htmx.min.js" in html
    assert "/static/vendor/chartjs/chart.umd.min.js" in html
    assert "https://" not in html  # nothing from a CDN


def test_user_without_organization_gets_a_clear_page(client: Client):
    loner = get_user_model().objects.create_user("loner@example.com", PASSWORD)
    client.force_login(loner)
    response = client.get(reverse("dashboard:home"))
    assert response.status_code == 403
    assert "does not belong to an organization" in response.content.decode()


def test_static_files_are_served_by_whitenoise():
    # A fresh client builds its middleware under these settings; finders stand in for collectstatic.
    with override_settings(WHITENOISE_USE_FINDERS=True, WHITENOISE_AUTOREFRESH=False):
        response = Client().get("/static/vendor/htmx/htmx.min.js")
        assert response.status_code == 200
        assert response["Content-Type"].startswith(("text/javascript", "application/javascript"))
        body = b"".join(response.streaming_content)
        response.close()
    assert b"htmx" in body and len(body) > 10_000


# --- Jobs -----------------------------------------------------------------------------------------


def test_jobs_page_lists_only_the_users_tenants_jobs(ada_client: Client, ada, grace):
    own = _ping(ada)
    foreign = _ping(grace)
    for name in ("dashboard:jobs", "dashboard:home"):
        html = ada_client.get(reverse(name)).content.decode()
        assert str(own.id) in html
        assert str(foreign.id) not in html


def test_foreign_and_missing_job_detail_is_404(ada_client: Client, grace):
    foreign = _ping(grace)
    assert ada_client.get(reverse("dashboard:job", kwargs={"job_id": foreign.id})).status_code == 404
    missing = "00000000-0000-4000-8000-000000000000"
    assert ada_client.get(reverse("dashboard:job", kwargs={"job_id": missing})).status_code == 404


def test_jobs_table_polls_while_a_job_is_active_and_stops_when_all_are_done(ada_client: Client, ada):
    job = _run(_ping(ada), progress=0.42, message="halfway there")
    html = ada_client.get(reverse("dashboard:jobs")).content.decode()
    assert 'hx-get="/jobs/?fragment=jobs-table"' in html and 'hx-trigger="every 2s"' in html
    assert "Running" in html and "42%" in html and "halfway there" in html

    job_fail(tenant_id=job.tenant_id, job_id=job.id, worker="test-worker", error="disk on fire", code="test")
    fragment = ada_client.get(reverse("dashboard:jobs"), {"fragment": "jobs-table"})
    html = fragment.content.decode()
    assert "<html" not in html and 'id="jobs-table"' in html
    assert "hx-trigger" not in html and 'data-polling="false"' in html
    assert "Failed" in html and "disk on fire" in html


def test_home_polls_its_own_fragment(ada_client: Client, ada):
    _ping(ada)
    html = ada_client.get(reverse("dashboard:home")).content.decode()
    assert 'hx-get="/?fragment=jobs-table"' in html
    assert ada_client.get(reverse("dashboard:home"), {"fragment": "jobs-table"}).status_code == 200


def test_unknown_fragment_is_404(ada_client: Client):
    assert ada_client.get(reverse("dashboard:jobs"), {"fragment": "nope"}).status_code == 404


def test_jobs_page_query_count_does_not_grow_with_jobs(ada_client: Client, ada):
    _ping(ada)
    with CaptureQueriesContext(connection) as one:
        ada_client.get(reverse("dashboard:jobs"))
    for _ in range(5):
        _ping(ada)
    with CaptureQueriesContext(connection) as six:
        ada_client.get(reverse("dashboard:jobs"))
    assert len(six) == len(one)


def test_job_detail_shows_events_and_loss_chart(ada_client: Client, ada):
    job = _run(_ping(ada))
    for step, loss in ((1, 2.5), (2, 1.75), (3, 1.25)):
        job_event_add(job=job, kind="metric", message=f"step {step}", data={"step": step, "loss": loss})
    response = ada_client.get(reverse("dashboard:job", kwargs={"job_id": job.id}))
    assert response.status_code == 200
    html = response.content.decode()
    assert "step 3" in html and "running" in html
    assert '<script id="loss-points" type="application/json">' in html
    assert '{"x": 3, "y": 1.25}' in html
    assert 'data-loss-chart="loss-points"' in html
    assert f'hx-get="/jobs/{job.id}/?fragment=job-live"' in html


def test_job_detail_without_loss_metrics_has_no_chart(ada_client: Client, ada):
    job = _ping(ada)
    html = ada_client.get(reverse("dashboard:job", kwargs={"job_id": job.id})).content.decode()
    assert "loss-chart" not in html
    assert "queued" in html


def test_loss_points_take_the_step_or_fall_back_to_the_event_sequence():
    events = [
        SimpleNamespace(seq=10, data={"step": 1, "loss": 3.0}),
        SimpleNamespace(seq=11, data={"progress": 0.5}),
        SimpleNamespace(seq=12, data={"loss": 2}),
        SimpleNamespace(seq=13, data={"loss": "nan?"}),
        SimpleNamespace(seq=14, data=["not", "a", "dict"]),
        SimpleNamespace(seq=15, data={"loss": True}),
    ]
    assert loss_points(events) == [{"x": 1, "y": 3.0}, {"x": 12, "y": 2}]
