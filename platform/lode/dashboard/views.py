"""Dashboard pages. Thin: resolve the request's tenant, call a selector, render a template.

Every signed-in page derives from TenantPageView, which resolves the tenant once and renders a
plain "no organization" page when the user has none. Live parts of a page (the jobs table, a
job's progress and events) are re-fetched by htmx from the same URL with `?fragment=<name>`,
which renders only that part's template."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.views import LoginView, LogoutView
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.generic import TemplateView

from lode.core.errors import NotFound
from lode.core.jobs.selectors import job_event_list, job_get, job_list
from tenants.context import current_tenant_for_request

if TYPE_CHECKING:
    from lode.core.models import Job, JobEvent
    from tenants.models import Organization

HOME_RECENT_JOBS = 10
JOBS_PAGE_LIMIT = 50
# The detail page lists this many of the latest events; the loss chart uses all of them.
JOB_EVENTS_SHOWN = 100


class DashboardLoginView(LoginView):
    template_name = "dashboard/login.html"
    redirect_authenticated_user = True


class DashboardLogoutView(LogoutView):
    """POST only (Django 5 removed logout on GET); redirects to LOGOUT_REDIRECT_URL."""


class TenantPageView(LoginRequiredMixin, TemplateView):
    """A signed-in page acting for the request's tenant (available as `self.tenant`)."""

    nav_active: str = ""
    # fragment name -> template rendering only that part of the page, for htmx polling
    fragments: dict[str, str] = {}

    tenant: Organization

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        tenant = current_tenant_for_request(request)
        if tenant is None:
            return render(request, "dashboard/no_tenant.html", status=403)
        self.tenant = tenant
        return super().dispatch(request, *args, **kwargs)

    def get_template_names(self) -> list[str]:
        fragment = self.request.GET.get("fragment")
        if fragment is None:
            return super().get_template_names()
        if fragment not in self.fragments:
            raise Http404("Unknown fragment.")
        return [self.fragments[fragment]]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["tenant"] = self.tenant
        context["nav_active"] = self.nav_active
        return context


def _any_active(jobs: list[Job]) -> bool:
    return any(not job.is_terminal for job in jobs)


class HomeView(TenantPageView):
    template_name = "dashboard/home.html"
    fragments = {"jobs-table": "dashboard/_jobs_table.html"}
    nav_active = "home"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        jobs = list(job_list(tenant_id=self.tenant.id, limit=HOME_RECENT_JOBS))
        context.update(jobs=jobs, jobs_active=_any_active(jobs))
        return context


class JobListView(TenantPageView):
    template_name = "dashboard/jobs.html"
    fragments = {"jobs-table": "dashboard/_jobs_table.html"}
    nav_active = "jobs"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        jobs = list(job_list(tenant_id=self.tenant.id, limit=JOBS_PAGE_LIMIT))
        context.update(jobs=jobs, jobs_active=_any_active(jobs))
        return context


def loss_points(events: list[JobEvent]) -> list[dict[str, float]]:
    """The {"x": step, "y": loss} points of the metric events that report a loss; the step is the
    event's own "step" when it gives one, else its sequence number."""
    points = []
    for event in events:
        data = event.data
        if not isinstance(data, dict):
            continue
        loss = data.get("loss")
        if isinstance(loss, bool) or not isinstance(loss, (int, float)):
            continue
        step = data.get("step")
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            step = event.seq
        points.append({"x": step, "y": loss})
    return points


class JobDetailView(TenantPageView):
    template_name = "dashboard/job_detail.html"
    fragments = {"job-live": "dashboard/_job_live.html"}
    nav_active = "jobs"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        try:
            job = job_get(tenant_id=self.tenant.id, job_id=kwargs["job_id"])
        except NotFound:
            # Missing and another tenant's job get the same answer.
            raise Http404("Job not found.") from None
        events = list(job_event_list(tenant_id=self.tenant.id, job_id=job.id))
        shown = events[-JOB_EVENTS_SHOWN:]
        context.update(
            job=job,
            events=list(reversed(shown)),
            events_total=len(events),
            events_hidden=len(events) - len(shown),
            loss_points=loss_points(events),
        )
        return context
