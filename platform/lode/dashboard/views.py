"""Dashboard pages. Thin: resolve the request's tenant, check the role's permission, call a
selector or a service, render a template.

Every signed-in page derives from TenantPageView, which resolves the tenant once, renders a plain
"no organization" page when the user has none, and a 403 page naming the missing permission when
the member's role lacks the one the page declares (`read_permission` for GET, `write_permission`
for anything else). Domain errors from services become form errors or messages, never a 500.
Live parts of a page (the jobs table, a job's progress and events) are re-fetched by htmx from
the same URL with `?fragment=<name>`, which renders only that part's template."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.views import LoginView, LogoutView, redirect_to_login
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.generic import TemplateView

from lode.core.errors import LodeError, NotFound, PermissionDenied, ValidationFailed
from lode.core.jobs.selectors import job_event_list, job_get, job_list
from tenants.context import current_access, organization_switch
from tenants.selectors import api_key_list, audit_event_list, invitation_list, membership_list, organizations_for_user
from tenants.services import (
    api_key_create,
    api_key_revoke,
    invitation_accept,
    invitation_create,
    invitation_revoke,
    membership_remove,
    membership_role_change,
    user_signup,
)
from tenants.throttling import SignupRateThrottle

from .forms import (
    OWNER,
    ROLE_CHOICES,
    ApiKeyCreateForm,
    InvitationForm,
    OrganizationSwitchForm,
    RoleChangeForm,
    SignupForm,
    form_error_from,
)

if TYPE_CHECKING:
    from lode.core.models import Job, JobEvent
    from tenants.context import TenantAccess
    from tenants.models import Organization

HOME_RECENT_JOBS = 10
JOBS_PAGE_LIMIT = 50
# The detail page lists this many of the latest events; the loss chart uses all of them.
JOB_EVENTS_SHOWN = 100
AUDIT_EVENTS_SHOWN = 200
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _safe_next(request: HttpRequest) -> str | None:
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return None


def shell_context(request: HttpRequest) -> dict[str, Any]:
    """What the page frame (top bar, navigation, organization switcher) needs on every page of a
    signed-in user; also sets the transaction's tenant context (current_access)."""
    if not request.user.is_authenticated:
        return {}
    access = current_access(request)
    return {
        "access": access,
        "tenant": access.tenant if access is not None else None,
        "organizations": organizations_for_user(user=request.user),
    }


def _render_error(request: HttpRequest, exc: LodeError) -> HttpResponse:
    """A domain error as a page with its status. Nothing the request wrote is kept."""
    context = shell_context(request)
    if isinstance(exc, PermissionDenied):
        context.update(message=exc.message, required=(exc.details or {}).get("required"))
        response = render(request, "dashboard/forbidden.html", context, status=exc.http_status)
    else:
        context.update(message=exc.message, status=exc.http_status)
        response = render(request, "dashboard/error.html", context, status=exc.http_status)
    # Rendered first: once the transaction is marked for rollback it runs no more queries.
    _discard_writes()
    return response


def _discard_writes() -> None:
    """Marks the request's transaction (ATOMIC_REQUESTS) for rollback: a request that ends in a
    domain error keeps nothing it wrote, whatever the service left behind."""
    if transaction.get_connection().in_atomic_block:
        transaction.set_rollback(True)


def forbidden(request: HttpRequest, permission: str) -> HttpResponse:
    access = current_access(request)
    role = access.role if access is not None else None
    return _render_error(request, PermissionDenied(
        f"This needs the permission {permission}, which your role ({role or 'none'}) does not have.",
        details={"required": permission},
    ))


class DashboardLoginView(LoginView):
    template_name = "dashboard/login.html"
    redirect_authenticated_user = True


class DashboardLogoutView(LogoutView):
    """POST only (Django 5 removed logout on GET); redirects to LOGOUT_REDIRECT_URL."""


class SignupView(View):
    """Creates an account and its first organization (the person becomes its owner), signs the
    person in and sends them home (or to a safe `next`, e.g. an invitation to accept)."""

    template_name = "dashboard/signup.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            return self._onward(request)
        return self._render(request, SignupForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            return self._onward(request)
        form = SignupForm(request.POST)
        status = 400
        throttle = SignupRateThrottle()
        if not throttle.allow_request(request, self):
            wait = int(throttle.wait() or 60)
            form.add_error(None, f"Too many sign-ups from this address; try again in {wait} seconds.")
            response = self._render(request, form, status=429)
            response["Retry-After"] = str(wait)
            return response
        if form.is_valid():
            try:
                result = user_signup(**form.cleaned_data)
            except LodeError as exc:
                form_error_from(form, exc)
                status = exc.http_status
            else:
                login(request, result.user, backend="tenants.backends.EmailBackend")
                return self._onward(request)
        return self._render(request, form, status=status)

    @staticmethod
    def _onward(request: HttpRequest) -> HttpResponse:
        return HttpResponseRedirect(_safe_next(request) or reverse("dashboard:home"))

    def _render(self, request: HttpRequest, form: SignupForm, status: int = 200) -> HttpResponse:
        return render(request, self.template_name, {"form": form, "next": _safe_next(request) or ""}, status=status)


class OrganizationSwitchView(LoginRequiredMixin, View):
    """The top bar's organization switcher: the session acts for another of the user's
    organizations from the next request on."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        form = OrganizationSwitchForm(request.POST)
        try:
            if not form.is_valid():
                raise NotFound("Organization not found.")
            organization = organization_switch(request, organization_id=form.cleaned_data["organization_id"])
        except LodeError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Now working in {organization.name}.")
        return redirect("dashboard:home")


class TenantPageView(LoginRequiredMixin, TemplateView):
    """A signed-in page acting for the request's tenant (`self.tenant`, `self.access`)."""

    nav_active: str = ""
    # fragment name -> template rendering only that part of the page, for htmx polling
    fragments: dict[str, str] = {}
    # The permission a GET needs (None: any member) and the one POST needs. A page that accepts
    # POST without declaring write_permission refuses it: the check fails closed.
    read_permission: str | None = None
    write_permission: str | None = None

    tenant: Organization
    access: TenantAccess

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        access = current_access(request)
        if access is None or access.tenant is None:
            return render(request, "dashboard/no_tenant.html", shell_context(request), status=403)
        self.access = access
        self.tenant = access.tenant
        method = request.method.lower()
        if method not in self.http_method_names or not hasattr(self, method):
            return self.http_method_not_allowed(request, *args, **kwargs)
        if request.method in SAFE_METHODS:
            needed = self.read_permission
        elif self.write_permission is None:
            return _render_error(request, PermissionDenied("This page declares no permission for changes; it accepts none."))
        else:
            needed = self.write_permission
        if needed is not None and needed not in access.permissions:
            return forbidden(request, needed)
        try:
            return super().dispatch(request, *args, **kwargs)
        except LodeError as exc:
            return _render_error(request, exc)

    def get_template_names(self) -> list[str]:
        fragment = self.request.GET.get("fragment")
        if fragment is None:
            return super().get_template_names()
        if fragment not in self.fragments:
            raise Http404("Unknown fragment.")
        return [self.fragments[fragment]]

    def can(self, permission: str) -> bool:
        return permission in self.access.permissions

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(shell_context(self.request))
        context["nav_active"] = self.nav_active
        return context


class TenantFormPageView(TenantPageView):
    """A page of an area with write controls: `can_write` (the member holds the area's
    manage_permission, whether the controls post here or to another route) in the context, and
    render_invalid() to answer a form that failed."""

    manage_permission: str = ""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["can_write"] = bool(self.manage_permission) and self.can(self.manage_permission)
        return context

    def render_invalid(self, status: int, **forms_in_error: Any) -> HttpResponse:
        """The page again with the forms that failed, and nothing the request wrote kept."""
        response = self.render_to_response(self.get_context_data(**forms_in_error), status=status)
        response.render()  # before the rollback mark: after it the transaction runs no queries
        _discard_writes()
        return response


class TenantActionView(TenantPageView):
    """A POST-only action on one row (revoke, remove, change a role): calls one service, then
    redirects back to its page with a message saying what happened or why it did not."""

    http_method_names = ["post"]
    write_permission = "organization:write"
    redirect_to: str = "dashboard:home"

    def act(self, request: HttpRequest, **kwargs: Any) -> str:
        raise NotImplementedError

    def post(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        try:
            done = self.act(request, **kwargs)
        except LodeError as exc:
            _discard_writes()
            messages.error(request, exc.message)
        else:
            messages.success(request, done)
        return redirect(self.redirect_to)


def _any_active(jobs: list[Job]) -> bool:
    return any(not job.is_terminal for job in jobs)


class HomeView(TenantPageView):
    """Every member has a home page; the recent jobs show for roles that may read jobs."""

    template_name = "dashboard/home.html"
    fragments = {"jobs-table": "dashboard/_jobs_table.html"}
    nav_active = "home"

    def get_template_names(self) -> list[str]:
        if self.request.GET.get("fragment") is not None and not self.can("platform:read"):
            raise Http404("Unknown fragment.")
        return super().get_template_names()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        if self.can("platform:read"):
            jobs = list(job_list(tenant_id=self.tenant.id, limit=HOME_RECENT_JOBS))
            context.update(show_jobs=True, jobs=jobs, jobs_active=_any_active(jobs))
        return context


class JobListView(TenantPageView):
    template_name = "dashboard/jobs.html"
    fragments = {"jobs-table": "dashboard/_jobs_table.html"}
    nav_active = "jobs"
    read_permission = "platform:read"

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
    read_permission = "platform:read"

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


# --- Organization settings: members, invitations, API keys, audit log ----------------------------


class MembersView(TenantPageView):
    """Members and their roles, pending invitations; for managers (organization:write) the role
    and removal forms and the invitation form, which posts here."""

    template_name = "dashboard/members.html"
    nav_active = "members"
    read_permission = "organization:read"
    write_permission = "organization:write"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        can_manage = self.can("organization:write")
        is_owner = self.access.role == OWNER
        # Only an owner grants, takes or removes the owner role (tenants.services); the page
        # offers nobody an action the service would refuse.
        grantable_roles = ROLE_CHOICES if is_owner else [choice for choice in ROLE_CHOICES if choice[0] != OWNER]
        rows = [
            {
                "membership": membership,
                "is_you": membership.user_id == self.request.user.pk,
                "manageable": can_manage and (is_owner or membership.role != OWNER),
            }
            for membership in membership_list(tenant_id=self.tenant.id)
        ]
        context.update(
            rows=rows,
            invitations=list(invitation_list(tenant_id=self.tenant.id)),
            can_manage=can_manage,
            grantable_roles=grantable_roles,
        )
        context.setdefault("invite_form", InvitationForm())
        return context

    def post(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        form = InvitationForm(request.POST)
        status = 400
        if form.is_valid():
            try:
                created = invitation_create(
                    tenant_id=self.tenant.id, invited_by=self.access.user, email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"], ip=_ip(request),
                )
            except LodeError as exc:
                form_error_from(form, exc)
                status = exc.http_status
            else:
                messages.success(request, f"Invitation sent to {created.invitation.email}.")
                return redirect("dashboard:members")
        return self.render_to_response(self.get_context_data(invite_form=form), status=status)


class MemberRoleChangeView(TenantActionView):
    redirect_to = "dashboard:members"

    def act(self, request: HttpRequest, **kwargs: Any) -> str:
        form = RoleChangeForm(request.POST)
        if not form.is_valid():
            raise ValidationFailed(f"Choose a role: {', '.join(value for value, _ in ROLE_CHOICES)}.")
        membership = membership_role_change(
            tenant_id=self.tenant.id, membership_id=kwargs["membership_id"], role=form.cleaned_data["role"],
            by=self.access.user, by_role=self.access.role or "", ip=_ip(request),
        )
        return f"{membership.user.email} is now {membership.get_role_display()}."


class MemberRemoveView(TenantActionView):
    redirect_to = "dashboard:members"

    def act(self, request: HttpRequest, **kwargs: Any) -> str:
        membership_remove(
            tenant_id=self.tenant.id, membership_id=kwargs["membership_id"], by=self.access.user,
            by_role=self.access.role or "", ip=_ip(request),
        )
        return "Member removed."


class InvitationRevokeView(TenantActionView):
    redirect_to = "dashboard:members"

    def act(self, request: HttpRequest, **kwargs: Any) -> str:
        invitation = invitation_revoke(
            tenant_id=self.tenant.id, invitation_id=kwargs["invitation_id"], by=self.access.user, ip=_ip(request),
        )
        return f"Invitation to {invitation.email} revoked."


class InvitationAcceptView(View):
    """The link in an invitation email. A signed-in person confirms with a POST (a GET never
    accepts: mail scanners follow links); an anonymous one is offered log-in and sign-up, both
    coming back here. Accepting makes the new organization the one the session acts for."""

    template_name = "dashboard/invitation_accept.html"

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        return self._render(request)

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.path)
        try:
            membership = invitation_accept(token=token, user=request.user, ip=_ip(request))
            organization = organization_switch(request, organization_id=membership.organization_id)
        except LodeError as exc:
            return self._render(request, error=exc.message, status=exc.http_status)
        messages.success(request, f"You joined {organization.name} as {membership.get_role_display()}.")
        return redirect("dashboard:home")

    def _render(self, request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
        context = shell_context(request) | {"error": error, "next": request.path}
        return render(request, self.template_name, context, status=status)


class ApiKeysView(TenantPageView):
    """The organization's API keys. Creating one answers with the page showing the secret, once:
    it is not stored anywhere, so reloading the list never shows it again."""

    template_name = "dashboard/api_keys.html"
    nav_active = "api-keys"
    read_permission = "organization:read"
    write_permission = "organization:write"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self._no_store(self.render_to_response(self.get_context_data()))

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = ApiKeyCreateForm(request.POST, grantable=self.access.permissions)
        status = 400
        if form.is_valid():
            try:
                created = api_key_create(
                    tenant_id=self.tenant.id, created_by=self.access.user, creator_permissions=self.access.permissions,
                    name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"], expires_at=form.expires_at(),
                    ip=_ip(request),
                )
            except LodeError as exc:
                form_error_from(form, exc, aliases={"expires_at": "expires_on"})
                status = exc.http_status
            else:
                # The secret goes out in this response only: it is never stored, not even in the
                # session, so no later page (or database dump) can show it.
                shown = {"id": str(created.api_key.id), "name": created.api_key.name, "secret": created.secret}
                return self._no_store(self.render_to_response(self.get_context_data(created=shown), status=201))
        return self._no_store(self.render_to_response(self.get_context_data(create_form=form), status=status))

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            api_keys=list(api_key_list(tenant_id=self.tenant.id)),
            can_manage=self.can("organization:write"),
            now=timezone.now(),
        )
        context.setdefault("create_form", ApiKeyCreateForm(grantable=self.access.permissions))
        return context

    @staticmethod
    def _no_store(response: HttpResponse) -> HttpResponse:
        # The page may carry a secret: no cache, the browser's included, may keep it.
        add_never_cache_headers(response)
        return response


class ApiKeyRevokeView(TenantActionView):
    redirect_to = "dashboard:api-keys"

    def act(self, request: HttpRequest, **kwargs: Any) -> str:
        api_key = api_key_revoke(tenant_id=self.tenant.id, api_key_id=kwargs["api_key_id"], by=self.access.user, ip=_ip(request))
        return f"API key {api_key.name} (lode_sk_{api_key.prefix}_…) revoked: requests with it are refused from now on."


class AuditLogView(TenantPageView):
    template_name = "dashboard/audit.html"
    nav_active = "audit"
    read_permission = "audit:read"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(events=list(audit_event_list(tenant_id=self.tenant.id, limit=AUDIT_EVENTS_SHOWN)),
                       limit=AUDIT_EVENTS_SHOWN)
        return context
