"""The role matrix: each role gets exactly the access `tenants.permissions.ROLE_PERMISSIONS` gives
it, on the API and on the dashboard.

For every role an organization gets a member with that role (its owner signs up and invites them;
they accept, having signed up with an organization of their own, and switch to it). Then every API
route that declares an area is read and written as that member, through the session and through
an API key holding the role's rights: an allowed call is anything but a 403 (a 400 for the empty
body, a 404 for the made-up id: the permission check runs first), a denied one is a 403 naming the
missing `<area>:read|write`. Routes come from the URL resolver, so a new endpoint is in the matrix
without being listed here; a route that declares no area must be in NO_AREA with its reason.
The dashboard pages declare `read_permission` / `write_permission` and are checked the same way."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from http.cookies import SimpleCookie

import pytest
from rest_framework.test import APIClient

from lode.core.jobs.services import job_create
from lode.core.models import Job
from tenants.models import ApiKey, Organization, Role, User
from tenants.permissions import ROLE_PERMISSIONS, permission_for, permissions_for
from tenants.services import api_key_create, invitation_accept, invitation_create, user_signup
from tests.conftest import rows
from tests.tenants.test_cross_tenant_probe import Route, all_routes, api_routes

pytestmark = pytest.mark.django_db

ROLES = [role.value for role in Role]
WRITE_VERBS = ("post", "put", "patch", "delete")

# API routes open to any signed-in caller (or to anyone), with the reason they declare no area.
NO_AREA: dict[str, str] = {
    "api/v1/auth/signup": "creates an account; nobody is signed in yet",
    "api/v1/auth/me": "the caller's own identity and rights",
    "api/v1/auth/switch-organization": "the session picks among the user's own organizations",
    "api/v1/invitations/accept": "the invitee is not a member yet; the token and email decide",
    "api/v1/billing/stripe/webhook": "Stripe's calls: no session or key; the signature over the body decides",
    "api/v1/schema": "the OpenAPI description",
    "api/v1/docs": "the API documentation page",
    "v1/<path:unknown_route>": "the OpenAI-compatible API's 404 for paths that are no route; reads nothing",
    "api/v1/safety/escalations": "platform staff only (is_staff, signed in), across tenants: tests/safety",
    "api/v1/safety/escalations/claim": "platform staff only (is_staff, signed in), across tenants: tests/safety",
    "api/v1/safety/escalations/<uuid:item_id>/decision": "platform staff only (is_staff, signed in): tests/safety",
}
# Dashboard routes that are not pages of an organization, with the reason they declare nothing.
DASHBOARD_OPEN: dict[str, str] = {
    "login/": "signing in",
    "logout/": "signing out",
    "signup/": "creating an account",
    "organizations/switch/": "the session picks among the user's own organizations",
    "invitations/accept/<str:token>/": "the invitee is not a member yet",
    "moderation/escalations/": "platform staff only (is_staff), every organization's escalations: "
                               "tests/dashboard/test_safety_pages.py",
}
# What the table says the settings and jobs pages need (read, write); the pages must
# declare exactly this, so loosening a declaration fails here, not in production.
EXPECTED_PAGE_PERMISSIONS: dict[str, tuple[str | None, str | None]] = {
    "": (None, None),  # the home page: every member (jobs show only with platform:read)
    "jobs/": ("platform:read", None),
    "jobs/<uuid:job_id>/": ("platform:read", None),
    "settings/members/": ("organization:read", "organization:write"),
    "settings/members/<uuid:membership_id>/role/": (None, "organization:write"),
    "settings/members/<uuid:membership_id>/remove/": (None, "organization:write"),
    "settings/invitations/<uuid:invitation_id>/revoke/": (None, "organization:write"),
    "settings/api-keys/": ("organization:read", "organization:write"),
    "settings/api-keys/<uuid:api_key_id>/revoke/": (None, "organization:write"),
    "settings/audit/": ("audit:read", None),
    "datasets/": ("datasets:read", "datasets:write"),
    "datasets/<uuid:dataset_id>/": ("datasets:read", None),  # uploads go to the API
    "dataset-versions/<uuid:version_id>/": ("datasets:read", "datasets:write"),
    "billing/": ("billing:read", "billing:write"),
    "billing/quotas/<int:quota_id>/delete/": (None, "billing:write"),
    "billing/plans/": ("billing:read", "billing:write"),
    "billing/invoices/": ("billing:read", None),
    "billing/invoices/<uuid:invoice_id>/html": ("billing:read", None),
    "billing/invoices/<uuid:invoice_id>/pdf": ("billing:read", None),
}


def _area_routes() -> list[Route]:
    return [route for route in api_routes() if getattr(route.view_class, "required_area", None)]


def _page_permissions(route: Route) -> tuple[str | None, str | None] | None:
    """The (read, write) permission a dashboard page declares; None for a route that is no page
    of an organization (it declares neither)."""
    view_class = route.view_class
    if view_class is None or not any(
        hasattr(view_class, name) for name in ("read_permission", "write_permission", "required_permission")
    ):
        return None
    required = getattr(view_class, "required_permission", None)
    return (getattr(view_class, "read_permission", None) or required,
            getattr(view_class, "write_permission", None) or required)


def _dashboard_pages() -> list[Route]:
    return [route for route in all_routes() if route.namespace == "dashboard" and _page_permissions(route) is not None]


def _path(route: Route) -> str:
    """The route with made-up values: the permission check answers before any lookup."""
    made_up = {"uuid": lambda: str(uuid.uuid4()), "int": lambda: "987654321"}
    values = {kwarg: made_up.get(conv, lambda: "made-up")() for kwarg, conv in zip(route.kwargs, route.converters)}
    return route.path(values)


# --- An organization with a member of each role ------------------------------------------------


@dataclass
class Member:
    role: str
    organization: Organization
    user: User
    job: Job
    session: APIClient
    api_key: APIClient

    @property
    def permissions(self) -> frozenset[str]:
        return ROLE_PERMISSIONS[self.role]


@pytest.fixture(scope="module")
def test_clients() -> dict[str, APIClient]:
    """Kept for the module (a new client loads the middleware again, WhiteNoise's static file scan
    included); reset for each test."""
    return {"session": APIClient(), "api_key": APIClient()}


def _reset(client: APIClient) -> APIClient:
    client.cookies = SimpleCookie()
    client.credentials()
    return client


def _call(client: APIClient, verb: str, path: str):
    client.cookies.pop("messages", None)
    if verb == "get":
        return client.get(path)
    return getattr(client, verb)(path, {}, format="json" if path.startswith(("/api/", "/v1/")) else "multipart")


@pytest.fixture
def member_of(make_tenant, test_clients):
    """make(role): one member per test (the two clients are the module's, reset here)."""

    def make(role: str) -> Member:
        owner = make_tenant(email=f"owner-{uuid.uuid4().hex[:8]}@example.com", organization_name=f"Org of a {role}")
        organization = owner.organization
        job = job_create(tenant_id=organization.id, created_by=owner.user, kind="core.ping")
        if role == Role.OWNER:
            user = owner.user
        else:
            person = user_signup(email=f"{role}-{uuid.uuid4().hex[:8]}@example.com", password="a long test password 1",
                                 organization_name=f"The {role}'s own")
            sent = invitation_create(tenant_id=organization.id, invited_by=owner.user, email=person.user.email,
                                     role=role)
            invitation_accept(token=sent.token, user=person.user)
            user = person.user

        session = _reset(test_clients["session"])
        session.force_login(user)
        switched = session.post("/api/v1/auth/switch-organization", {"organization_id": str(organization.id)},
                                format="json")
        assert switched.status_code == 200 and switched.json()["role"] == role, switched.content

        key = api_key_create(tenant_id=organization.id, created_by=user, creator_permissions=ROLE_PERMISSIONS[role],
                             name=f"{role} key", scopes=sorted(ROLE_PERMISSIONS[role]))
        api_key = _reset(test_clients["api_key"])
        api_key.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
        return Member(role=role, organization=organization, user=user, job=job, session=session, api_key=api_key)

    return make


# --- API ----------------------------------------------------------------------------------------


def _judge(response, needed: str, allowed: bool) -> str | None:
    """None when the answer is what the table says, else what is wrong with it."""
    status = response.status_code
    if allowed:
        # Anything the view itself answers: a success, a redirect, a 400 for the empty body, a 404
        # for the made-up id, a 409. Not a refusal, a rate limit or an error.
        if status in (401, 403, 405, 429) or status >= 500:
            return f"allowed ({needed}) but answered {status}: {response.content[:200]!r}"
        return None
    if status != 403:
        return f"denied (lacks {needed}) but answered {status}: {response.content[:200]!r}"
    if response.get("Content-Type", "").startswith("application/json"):
        error = response.json().get("error", {})
        named = f"Missing permission {needed}" in error.get("message", "")
        if "type" in error:  # OpenAI's error shape (/v1/): no details; the message and code say it
            if not named or error.get("code") != "permission_denied":
                return f"403 without naming {needed}: {error}"
        elif not named or error.get("details", {}).get("required") != needed:
            return f"403 without naming {needed}: {error}"
    elif needed not in response.content.decode(errors="replace"):
        return f"403 page without naming {needed}"
    return None


@pytest.mark.parametrize("mode", ["session", "api_key"])
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_areas_on_the_api(member_of, role, mode):
    member = member_of(role)
    client = getattr(member, mode)

    me = _call(client, "get", "/api/v1/auth/me").json()
    assert me["permissions"] == sorted(member.permissions)

    wrong, calls = [], 0
    for route in _area_routes():
        area = route.view_class.required_area
        for verb in route.verbs:
            # The area's read or write, then what the view's writes also need: the first one the
            # member lacks is the one a denial names.
            needs = permissions_for(view=route.view_class, method=verb.upper())
            assert needs[0] == permission_for(area=area, method=verb.upper())
            missing = [permission for permission in needs if permission not in member.permissions]
            needed = missing[0] if missing else needs[-1]
            problem = _judge(_call(client, verb, _path(route)), needed, not missing)
            calls += 1
            if problem:
                wrong.append(f"{role} ({mode}) {verb.upper()} /{route.route}: {problem}")
    assert not wrong, "\n".join(wrong)
    assert calls >= 20  # the walk found the routes (a matrix of nothing proves nothing)
    # Nothing a denied write touched was written: the organization still has its one job.
    jobs = rows(Job, member.organization.id, tenant_id__exact=member.organization.id)
    assert [job.id for job in jobs] == [member.job.id]


def test_every_api_route_declares_an_area_or_says_why_not():
    undeclared = {route.route for route in api_routes() if not getattr(route.view_class, "required_area", None)}

    assert undeclared == set(NO_AREA), (
        f"declare required_area on {sorted(undeclared - set(NO_AREA))}" if undeclared - set(NO_AREA)
        else f"NO_AREA names routes that are gone or now declare an area: {sorted(set(NO_AREA) - undeclared)}"
    )


# --- API keys -----------------------------------------------------------------------------------


def test_a_read_only_key_reads_and_is_refused_a_write_naming_the_permission(api_client_for, make_tenant):
    tenant = make_tenant()
    client = api_client_for(tenant.user, scopes=["platform:read"])

    listed = client.get("/api/v1/jobs")
    refused = client.post("/api/v1/jobs", {"kind": "core.ping"}, format="json")

    assert listed.status_code == 200
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert "Missing permission platform:write" in error["message"]
    assert error["details"]["required"] == "platform:write"
    assert rows(Job, tenant.organization.id, tenant_id__exact=tenant.organization.id) == []


@pytest.mark.parametrize("mode", ["session", "api_key"])
def test_a_key_cannot_get_a_scope_its_creators_role_lacks(member_of, mode):
    admin = member_of(Role.ADMIN)  # manages keys (organization:write), but lacks billing:write
    client = getattr(admin, mode)
    before = {key.id for key in rows(ApiKey, admin.organization.id, tenant_id__exact=admin.organization.id)}

    response = client.post("/api/v1/api-keys", {"name": "too strong", "scopes": ["billing:write"]}, format="json")

    assert response.status_code == 403, response.content
    assert response.json()["error"]["details"]["required"] == "billing:write"
    after = {key.id for key in rows(ApiKey, admin.organization.id, tenant_id__exact=admin.organization.id)}
    assert after == before


def test_a_key_cannot_get_a_scope_the_key_creating_it_lacks(make_tenant, api_client_for):
    owner = make_tenant()
    narrow = api_client_for(owner.user, scopes=["organization:read", "organization:write"])

    response = narrow.post("/api/v1/api-keys", {"name": "wider", "scopes": ["platform:read"]}, format="json")

    assert response.status_code == 403, response.content
    assert response.json()["error"]["details"]["required"] == "platform:read"
    assert [key.name for key in rows(ApiKey, owner.organization.id, tenant_id__exact=owner.organization.id)] == ["test"]


# --- Dashboard ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_dashboard_pages(member_of, role):
    member = member_of(role)

    wrong, calls = [], 0
    for route in _dashboard_pages():
        read, write = _page_permissions(route)
        for verb in route.verbs:
            if verb == "get":
                needed = read
            else:
                needed = write or "a declared permission"  # an undeclared write fails closed
            allowed = needed is None or needed in member.permissions
            response = _call(member.session, verb, _path(route))
            calls += 1
            problem = _judge(response, needed or "membership", allowed)
            if problem:
                wrong.append(f"{role} {verb.upper()} /{route.route}: {problem}")
    assert not wrong, "\n".join(wrong)
    assert calls >= len(EXPECTED_PAGE_PERMISSIONS)

    home = _call(member.session, "get", "/")
    assert home.status_code == 200
    assert (str(member.job.id) in home.content.decode()) == ("platform:read" in member.permissions)


def test_the_dashboard_pages_declare_the_tables_permissions():
    pages = {route.route: _page_permissions(route) for route in _dashboard_pages()}
    open_routes = {route.route for route in all_routes() if route.namespace == "dashboard" and route.route not in pages}

    missing = sorted(set(EXPECTED_PAGE_PERMISSIONS) - set(pages))
    assert not missing, f"these dashboard pages are gone or declare no permission: {missing}"
    assert {route: pages[route] for route in EXPECTED_PAGE_PERMISSIONS} == EXPECTED_PAGE_PERMISSIONS
    assert open_routes == set(DASHBOARD_OPEN), (
        f"dashboard routes that declare no permission: {sorted(open_routes - set(DASHBOARD_OPEN))}; "
        f"DASHBOARD_OPEN entries that are gone or now declare one: {sorted(set(DASHBOARD_OPEN) - open_routes)}"
    )
