"""The cross-tenant probe: every route of the URL configuration, tried by tenant B against tenant A.

Routes are enumerated from the URL resolver at collection time, so a new endpoint is probed
without anyone adding it here. Tenant A gets one object of every kind a route can name (a job, an
artifact, an API key, a second member, a pending invitation, a quota, an issued invoice), made
through the real services and API. As tenant B (its owner's API key with every permission, and its owner's session; dashboard
pages take the session only):

- a route that names an object: every verb the view implements answers 404 (a dashboard action
  may instead redirect back with the service's error message), exactly as it answers for an id
  that exists nowhere; a verb the view does not implement answers 405 (a dashboard page, failing
  closed, may answer 403);
- a route that names none (a list or page): B's answer holds none of A's ids, names or emails.

Afterwards A's objects and audit log are unchanged. A route whose path names an object this module
cannot make fails with "add a fixture for <kwarg>"; a route that names no object and has no GET
must be probed by hand or allowlisted with a reason (ALLOWLIST). The allowlisted routes that take
a foreign identifier in their body or path (switching organization, accepting an invitation) are
tried specifically at the end."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.cookies import SimpleCookie

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone
from rest_framework.test import APIClient

from lode.billing.models import Invoice, Quota
from lode.billing.selectors import period_bounds
from lode.billing.services import invoice_close, quota_set
from lode.core.jobs.services import job_create
from lode.core.models import Artifact, Job
from lode.core.webhooks.models import WebhookDelivery, WebhookEndpoint
from lode.core.webhooks.services import webhook_endpoint_create, webhook_endpoint_test
from lode.datasets.models import Dataset, DatasetVersion, Upload
from lode.datasets.services import dataset_create, upload_direct
from lode.generation.models import ExampleSet, PromptTemplate
from lode.safety.models import ModerationItem
from lode.training.models import BaseModel, TrainingCheckpoint, TunedModel
from tenants.db_context import tenant_atomic
from tenants.db_context import SETTINGS
from tenants.models import ApiKey, AuditEvent, Invitation, Membership, Organization
from tenants.services import invitation_accept, invitation_create, user_signup
from tests.conftest import api_key_for, rows

pytestmark = pytest.mark.django_db

API_PREFIXES = ("api/v1/", "v1/")
VERBS = ("get", "post", "put", "patch", "delete")

# Routes that by design take no tenant object (or are no tenant's to reach), with the reason.
ALLOWLIST: dict[str, str] = {
    "healthz": "liveness probe for the load balancer; no tenant data",
    "readyz": "readiness probe (database, Redis, S3 reachable); no tenant data",
    "metrics": "Prometheus counts across the platform, no tenant labels; loopback or token only",
    "admin/": "platform staff only (is_staff); a member is sent to the admin login (tested below)",
    "api/v1/auth/signup": "creates a new user and organization; names no existing object",
    "api/v1/auth/me": "answers the caller's own identity (checked after the switch attempt below)",
    "api/v1/auth/switch-organization": "takes an organization id in its body; probed specifically below",
    "api/v1/invitations/accept": "takes an invitation token in its body; probed specifically below",
    "api/v1/schema": "the OpenAPI description; the same for everyone",
    "api/v1/docs": "the API documentation page; the same for everyone",
    "api/v1/job-kinds": "the platform's catalogue of job kinds; the same for every tenant",
    "v1/chat/completions": "POST only; the model it names is looked up in the caller's tenant (another tenant's "
                           "model is a 404: tests/generation/test_openai_chat.py)",
    "v1/images/generations": "POST only; the model it names is looked up in the caller's tenant (another tenant's "
                             "model is a 404: tests/generation/test_openai_chat.py)",
    "v1/completions": "POST only; the model it names is looked up in the caller's tenant (another tenant's model is "
                      "a 404: tests/generation/test_openai_chat.py)",
    "api/v1/billing/subscription": "changes the caller's own organization's plan; names no object (POST only)",
    "api/v1/billing/estimate": "prices usage for the caller's own organization; names no object (POST only)",
    "api/v1/billing/stripe/webhook": "Stripe's calls, proven by signature, not by a tenant; tested in tests/billing/test_stripe.py",
    "api/v1/safety/check": "POST only: checks the texts in its body against the caller's own policy; names no object",
    "api/v1/safety/items/claim": "POST only: claims from the caller's own queue (SKIP LOCKED); names no object",
    "api/v1/safety/items/decisions": "POST only: the item ids in its body are looked up in the caller's tenant "
                                     "(another tenant's are skipped as not found: tests/safety)",
    "api/v1/safety/review-exports": "POST only: exports the caller's own reviews as a new dataset; names no object",
    "api/v1/safety/escalations": "platform staff only (is_staff, signed in); every tenant's escalations by design",
    "api/v1/safety/escalations/claim": "platform staff only (is_staff, signed in); names no object",
    "api/v1/safety/escalations/<uuid:item_id>/decision": "platform staff only (is_staff, signed in), any tenant's "
                                                          "escalated item by design; members get 403 (tests/safety)",
    "v1/moderations": "POST only: checks the texts in its body against the caller's own policy; names no object",
    "playground/stream/": "POST only; the model and template it names are looked up in the caller's tenant "
                          "(another tenant's is a 404/400: tests/dashboard/test_playground_pages.py)",
    "playground/images/": "POST only; the model it names is looked up in the caller's tenant "
                          "(tests/dashboard/test_playground_pages.py)",
    "moderation/escalations/": "platform staff only (is_staff): every tenant's escalated items by design, decided "
                               "by the item id in its form; members get 403 (tests/dashboard/test_safety_pages.py)",
    "login/": "the dashboard sign-in form; no tenant yet",
    "logout/": "signs the session out; names no object",
    "signup/": "the dashboard sign-up form: creates a new user and organization",
    "organizations/switch/": "takes an organization id in its form; probed specifically below",
    "invitations/accept/<str:token>/": "takes an invitation token in its path; probed specifically below",
}

# A body that passes the view's input validation, so the probe reaches the object lookup (a view
# that validates before it looks up would otherwise answer 400 and prove nothing).
WRITE_BODIES: dict[tuple[str, str], dict] = {
    ("api/v1/members/<uuid:membership_id>", "patch"): {"role": "annotator"},
    ("api/v1/members/<uuid:membership_id>", "put"): {"role": "annotator"},
    ("settings/members/<uuid:membership_id>/role/", "post"): {"role": "annotator"},
}


# --- Routes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    route: str  # the full route, e.g. "api/v1/jobs/<uuid:job_id>/cancel"
    kwargs: tuple[str, ...]  # the path's converter names, in order
    converters: tuple[str, ...]  # their converter types ("uuid", "int", ...), same order
    callback: Callable
    namespace: str = ""  # e.g. "dashboard", "tenants"

    def __str__(self) -> str:
        return self.route

    @property
    def view_class(self):
        return getattr(self.callback, "view_class", None) or getattr(self.callback, "cls", None)

    @property
    def is_api(self) -> bool:
        return self.route.startswith(API_PREFIXES)

    @property
    def verbs(self) -> tuple[str, ...]:
        """The verbs the view implements (a handler method, and the verb allowed by name)."""
        view_class = self.view_class
        if view_class is None:
            return ("get",)  # a function view: GET is the one verb it can be assumed to answer
        names = getattr(view_class, "http_method_names", VERBS)
        return tuple(verb for verb in VERBS if verb in names and callable(getattr(view_class, verb, None)))

    def path(self, values: dict[str, str]) -> str:
        return "/" + _CONVERTER.sub(lambda match: str(values[match.group(2)]), self.route)


_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")  # a path converter: <uuid:job_id>, <slug>


def _walk(patterns, prefix: str = "", namespace: str = "") -> Iterator[Route]:
    for pattern in patterns:
        text = str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            inner = ":".join(filter(None, (namespace, pattern.namespace)))
            if (prefix + text) in ALLOWLIST:
                yield Route(prefix + text, (), (), lambda: None, inner)
                continue
            yield from _walk(pattern.url_patterns, prefix + text, inner)
        elif isinstance(pattern, URLPattern):
            route = prefix + text
            if text.startswith("^"):
                raise AssertionError(f"route {route} is a regular expression; teach the probe its parameters")
            found = _CONVERTER.findall(route)
            yield Route(route, tuple(name for _, name in found), tuple(conv or "str" for conv, _ in found),
                        pattern.callback, namespace)


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns))


def api_routes() -> list[Route]:
    return [route for route in all_routes() if route.is_api]


def probed_routes() -> list[Route]:
    return [route for route in all_routes() if route.route not in ALLOWLIST]


# --- Tenant A's objects and tenant B's clients --------------------------------------------------


@dataclass
class World:
    a: Organization
    b: Organization
    a_owner: object  # tenants.models.User
    b_owner: object
    ids: dict[str, str]  # converter kwarg name -> the id of A's object of that kind
    objects: dict[str, tuple]  # name -> (model, id) of A's objects, for the snapshot
    markers: set[str]  # strings that only A's data holds: ids, emails, names
    snapshot: dict
    b_clients: dict[str, APIClient]  # "api_key" (B's owner's key, every permission), "session" (B's owner)


def _unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def _state(model, tenant_id, object_id) -> dict:
    [obj] = rows(model, tenant_id, id=object_id)
    return {field.attname: getattr(obj, field.attname) for field in obj._meta.concrete_fields}


def _snapshot(world_a: Organization, objects: dict[str, tuple]) -> dict:
    _forget_db_context()  # a lingering user context would add that user's own memberships
    state = {name: _state(model, world_a.id, object_id) for name, (model, object_id) in objects.items()}
    state["audit_events"] = sorted(event.id for event in rows(AuditEvent, world_a.id, tenant_id__exact=world_a.id))
    state["members"] = sorted(str(m.id) for m in rows(Membership, world_a.id, organization_id=world_a.id))
    return state


def _forget_db_context() -> None:
    """A request in a test runs inside the test's transaction, so the row-level-security context
    the previous request set is still there; a real request starts without one."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join("set_config(%s, '', true)" for _ in SETTINGS), list(SETTINGS))


@pytest.fixture(scope="module")
def test_clients() -> dict[str, APIClient]:
    """Test clients kept for the module: a new one loads the middleware again (WhiteNoise scans the
    static files), which would cost more than the probe itself. `world` resets them per test."""
    return {name: APIClient() for name in ("a", "b_api_key", "b_session")}


def _reset(client: APIClient) -> APIClient:
    client.cookies = SimpleCookie()
    client.credentials()
    return client


@pytest.fixture
def world(make_tenant, test_clients) -> World:
    a = make_tenant(email=f"{_unique('owner-a')}@example.com", organization_name=_unique("Tenant A"))
    b = make_tenant(email=f"{_unique('owner-b')}@example.com", organization_name=_unique("Tenant B"))
    a_org = a.organization

    # A's API key, used to upload A's artifact through the API.
    a_client = _reset(test_clients["a"])
    a_client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(a.user)}")
    [a_key] = rows(ApiKey, a_org.id, tenant_id__exact=a_org.id)
    artifact_name = f"{_unique('a-secret')}.txt"
    uploaded = a_client.post("/api/v1/artifacts", {"file": SimpleUploadedFile(artifact_name, b"tenant A's bytes")},
                             format="multipart")
    assert uploaded.status_code == 201, uploaded.content
    artifact_id = uploaded.json()["id"]

    job = job_create(tenant_id=a_org.id, created_by=a.user, kind="core.ping")
    quota = quota_set(tenant_id=a_org.id, meter="images", kind="hard", limit=10)
    this_month, _ = period_bounds(timezone.now())
    invoice = invoice_close(tenant_id=a_org.id, period_start=period_bounds(this_month - timedelta(days=1))[0])
    dataset = dataset_create(tenant_id=a_org.id, name=_unique("a-dataset"), modality="instruction", by=a.user)
    dataset_file = SimpleUploadedFile("a-rows.jsonl", b'{"prompt": "a secret question", "response": "a secret answer"}\n')
    dataset_upload, dataset_version = upload_direct(tenant_id=a_org.id, dataset_id=dataset.id, file=dataset_file, by=a.user)

    # A's fine-tune (its job, a checkpoint) and the model it made, written directly: the probe
    # needs the rows, not a training run.
    base_model, _ = BaseModel.objects.get_or_create(
        name="probe-base", defaults={"display_name": "Probe base", "task_type": "causal_lm",
                                     "architecture": "GPT2LMHeadModel", "parameter_count": 1, "artifact_prefix": "x"})
    finetune = job_create(tenant_id=a_org.id, created_by=a.user, kind="training.finetune", params={
        "base_model": base_model.name, "task": "sft", "method": "lora", "train_version_id": str(dataset_version.id),
        "validation_version_id": None, "hyperparameters": {}, "suffix": "", "gpus": 1,
        "estimate": {"gpu_class": "cpu", "gpu_seconds": 1.0, "seconds": 1.0, "tokens": 10, "tokens_per_second": 10.0},
    })
    with tenant_atomic(a_org.id):
        own_base = BaseModel.objects.create(
            tenant_id=a_org.id, name=_unique("a-base"), display_name="A's own checkpoint", task_type="causal_lm",
            architecture="LlamaForCausalLM", parameter_count=1, artifact_prefix="base-models/x", source="uploaded")
        tuned_model = TunedModel.objects.create(
            tenant_id=a_org.id, name=_unique("a-model"), base_model=base_model, task="sft", task_type="causal_lm",
            method="lora", architecture="GPT2LMHeadModel", artifact_prefix="models/x", train_version=dataset_version,
            model_card="tenant A's card", job=finetune)
        checkpoint = TrainingCheckpoint.objects.create(tenant_id=a_org.id, job=finetune, step=1,
                                                       key="fine-tunes/x/step-1.pt")

    # A's prompt template and its example set, under one name (both routes name it `name`).
    from lode.generation.prompts import example_set_create, template_create

    prompt_name = _unique("a-prompts")
    example_set = example_set_create(tenant_id=a_org.id, by=a.user, name=prompt_name,
                                     examples=[{"variables": {"question": "a secret"}, "output": "a secret reply"}])
    template = template_create(tenant_id=a_org.id, by=a.user, name=prompt_name,
                               values={"template": "Q: {{ question }}", "example_set": prompt_name})

    # A's webhook endpoint and one delivery to it (the test event; not sent: this test never commits).
    webhook_url = f"https://127.0.0.1:9/{_unique('a-hook')}"
    webhook = webhook_endpoint_create(tenant_id=a_org.id, by=a.user, url=webhook_url, events=["*"]).endpoint
    webhook_delivery = webhook_endpoint_test(tenant_id=a_org.id, by=a.user, endpoint_id=webhook.id)

    # A's moderation item (a flagged output), made through the real check path.
    from lode.safety.checks import texts_check
    from lode.safety.services import policy_create

    policy_create(tenant_id=a_org.id, by=a.user, blocklist=[{"kind": "term", "value": "a-secret-term"}],
                  rules={"blocklist": {"threshold": 0.5, "action": "flag"}})
    [flagged] = texts_check(tenant_id=a_org.id, texts=["tenant A's a-secret-term output"], source="output")

    # A second member of A, who signed up with an organization of their own.
    member = user_signup(email=f"{_unique('member-a')}@example.com", password="a long test password 1",
                         organization_name=_unique("Member's own"))
    joined = invitation_create(tenant_id=a_org.id, invited_by=a.user, email=member.user.email, role="engineer")
    membership = invitation_accept(token=joined.token, user=member.user)
    pending = invitation_create(tenant_id=a_org.id, invited_by=a.user, email=f"{_unique('invitee-a')}@example.com",
                                role="annotator")

    ids = {
        "job_id": str(finetune.id),  # a fine-tune: a job that the training routes also find
        "artifact_id": str(artifact_id),
        "api_key_id": str(a_key.id),
        "membership_id": str(membership.id),
        "invitation_id": str(pending.invitation.id),
        "quota_id": str(quota.id),
        "invoice_id": str(invoice.id),
        "dataset_id": str(dataset.id),
        "upload_id": str(dataset_upload.id),
        "version_id": str(dataset_version.id),
        "model_id": str(tuned_model.id),
        "base_model_id": str(own_base.id),
        # The OpenAI-compatible API (/v1/) names the same objects its own way.
        "file_id": f"file-{dataset_version.id.hex}",
        "fine_tuning_job_id": f"ftjob-{finetune.id.hex}",
        "model": tuned_model.name,
        "name": prompt_name,  # a prompt template and an example set
        "item_id": flagged.item_id,
        "endpoint_id": str(webhook.id),  # a webhook endpoint
        "unknown_route": "no-such-route",  # /v1/'s catch-all: a 404 for A's path as for any other
    }
    a_memberships = rows(Membership, a_org.id, organization_id=a_org.id)
    # A quota's id is a small integer that any page may show by chance: not a marker of A's data.
    markers = {value for kwarg, value in ids.items() if kwarg != "quota_id"} | {invoice.number, dataset.name, tuned_model.name, own_base.name, str(job.id)} | {
        str(a_org.id), a_org.slug, a_org.name, artifact_name, a_key.prefix,
        str(a.user.id), a.user.email, str(member.user.id), member.user.email, pending.invitation.email,
        str(joined.invitation.id), *(str(m.id) for m in a_memberships),
        webhook_url, webhook_delivery.event_id, str(webhook_delivery.id),
    }
    objects = {
        "job": (Job, job.id), "finetune": (Job, finetune.id), "artifact": (Artifact, artifact_id), "api_key": (ApiKey, a_key.id),
        "membership": (Membership, membership.id), "invitation": (Invitation, pending.invitation.id),
        "quota": (Quota, quota.id), "invoice": (Invoice, invoice.id),
        "dataset": (Dataset, dataset.id), "dataset_upload": (Upload, dataset_upload.id),
        "dataset_version": (DatasetVersion, dataset_version.id),
        "tuned_model": (TunedModel, tuned_model.id), "checkpoint": (TrainingCheckpoint, checkpoint.id),
        "own_base_model": (BaseModel, own_base.id),
        "example_set": (ExampleSet, example_set.id), "template": (PromptTemplate, template.id),
        "moderation_item": (ModerationItem, flagged.item_id),
        "webhook_endpoint": (WebhookEndpoint, webhook.id), "webhook_delivery": (WebhookDelivery, webhook_delivery.id),
    }
    snapshot = _snapshot(a_org, objects)

    b_api_key = _reset(test_clients["b_api_key"])
    b_api_key.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(b.user)}")
    b_session = _reset(test_clients["b_session"])
    b_session.force_login(b.user)

    return World(a=a_org, b=b.organization, a_owner=a.user, b_owner=b.user, ids=ids, objects=objects, markers=markers,
                 snapshot=snapshot, b_clients={"api_key": b_api_key, "session": b_session})


def _call(client: APIClient, verb: str, path: str, body: dict | None = None):
    _forget_db_context()
    client.cookies.pop("messages", None)  # CookieStorage's cookie: each answer is judged on its own messages
    if verb == "get":
        return client.get(path)
    # The API reads JSON; dashboard forms are posted as form data.
    return getattr(client, verb)(path, body or {}, format="json" if path.startswith(("/api/", "/v1/")) else "multipart")


def _answer(response) -> tuple:
    """What the caller learns: the status, the API error code, and any message flashed for the
    next page (a dashboard action redirects back with one)."""
    code = None
    if response.get("Content-Type", "").startswith("application/json"):
        code = (response.json().get("error") or {}).get("code")
    flashed = tuple((m.level_tag, str(m)) for m in get_messages(response.wsgi_request))
    return response.status_code, code, flashed


def _is_refusal(route: Route, verb: str, answer: tuple) -> bool:
    status, _, flashed = answer
    if verb not in route.verbs:
        # The API answers 405; a dashboard page refuses an undeclared method with 403 (it fails
        # closed: no write_permission) or 405.
        return status == 405 if route.is_api else status in (403, 405)
    if status == 404:
        return True
    # A dashboard action redirects back to its page with the service's error instead.
    return not route.is_api and status == 302 and bool(flashed) and all(level == "error" for level, _ in flashed)


def _assert_a_unchanged(world: World) -> None:
    assert _snapshot(world.a, world.objects) == world.snapshot, "tenant B changed tenant A's objects or audit log"


def _invite_someone_to_a(world: World):
    """A fresh invitation of A's (for someone who is not B); A's snapshot is retaken after it."""
    sent = invitation_create(tenant_id=world.a.id, invited_by=world.a_owner, email=f"{_unique('someone')}@example.com",
                             role="admin")
    world.snapshot = _snapshot(world.a, world.objects)
    return sent


def _auth_modes(route: Route) -> list[str]:
    return ["api_key", "session"] if route.is_api else ["session"]  # the dashboard takes no API keys


def _cases() -> list:
    cases = []
    for route in probed_routes():
        for mode in _auth_modes(route):
            cases.append(pytest.param(route, mode, id=f"{route.route or '/'}[{mode}]"))
    return cases


# --- The probe ----------------------------------------------------------------------------------


def _value_for(world: World, route: Route, kwarg: str) -> str:
    if kwarg not in world.ids:
        pytest.fail(f"add a fixture for {kwarg} (route {route.route}): the probe has no object of tenant A to name "
                    "there; create one in the `world` fixture and map it in `ids`")
    return world.ids[kwarg]


def _missing_value(converter: str) -> str:
    return {"int": "987654321", "uuid": str(uuid.uuid4())}.get(converter, f"missing-{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize("route, mode", _cases())
def test_tenant_b_cannot_reach_tenant_a(world, route, mode):
    client = world.b_clients[mode]

    if route.kwargs:
        path = route.path({kwarg: _value_for(world, route, kwarg) for kwarg in route.kwargs})
        missing = route.path({kwarg: _missing_value(conv) for kwarg, conv in zip(route.kwargs, route.converters)})
        assert resolve(path).func is route.callback, f"{path} does not resolve to {route.route}"
        for verb in VERBS:
            body = WRITE_BODIES.get((route.route, verb))
            response = _call(client, verb, path, body)
            answer = _answer(response)
            assert _is_refusal(route, verb, answer), (
                f"B's {verb.upper()} {path} ({route.route}, {mode}) answered {answer}, expected "
                f"{'404' if verb in route.verbs else '405'}: {response.content[:300]!r}"
                + ("; if the view validates its body before the lookup, add a valid body to WRITE_BODIES"
                   if response.status_code == 400 else "")
            )
            content = response.content.decode(errors="replace") + repr(answer)
            leaked = sorted(marker for marker in world.markers - set(world.ids.values()) if marker in content)
            assert not leaked, f"B's {verb.upper()} {path} ({mode}) shows tenant A's {leaked}"
            # "Not yours" and "missing" read the same.
            other = _answer(_call(client, verb, missing, body))
            assert other == answer, (
                f"{verb.upper()} {route.route} ({mode}): another tenant's object answers {answer}, "
                f"a missing one {other}"
            )
    else:
        if "get" not in route.verbs:
            pytest.fail(f"route {route.route} names no object and has no GET: probe it by hand in this module "
                        "or add it to ALLOWLIST with the reason it takes no tenant object")
        response = _call(client, "get", route.path({}))
        assert response.status_code == 200, (
            f"B's GET {route.route} ({mode}): {response.status_code} {response.content[:300]!r}"
        )
        content = response.content.decode(errors="replace")
        leaked = sorted(marker for marker in world.markers if marker in content)
        assert not leaked, f"B's GET {route.route} ({mode}) shows tenant A's {leaked}"

    _assert_a_unchanged(world)


def test_the_probe_covers_every_route_and_the_allowlist_is_current():
    routes = {route.route for route in all_routes()}
    stale = sorted(set(ALLOWLIST) - routes)
    assert not stale, f"ALLOWLIST names routes that no longer exist: {stale}"
    probed = probed_routes()
    assert {route.route for route in probed} | set(ALLOWLIST) == routes
    # The probe reaches the object routes it exists for (a walk that finds nothing proves nothing).
    assert {"job_id", "artifact_id", "api_key_id", "membership_id", "invitation_id", "quota_id", "invoice_id",
            "dataset_id", "upload_id", "version_id"} <= {
        kwarg for route in probed for kwarg in route.kwargs
    }


# --- The allowlisted routes that take a foreign identifier in their body or path ----------------


def test_switching_to_another_tenants_organization_is_a_404(world):
    session = world.b_clients["session"]

    response = _call(session, "post", "/api/v1/auth/switch-organization", {"organization_id": str(world.a.id)})
    missing = _call(session, "post", "/api/v1/auth/switch-organization", {"organization_id": str(uuid.uuid4())})

    assert response.status_code == 404, response.content
    assert _answer(missing) == _answer(response)
    me = _call(session, "get", "/api/v1/auth/me").json()
    assert me["organization"]["id"] == str(world.b.id)
    assert _call(session, "get", "/api/v1/jobs").json()["results"] == []
    # An API key belongs to one organization and cannot switch at all.
    by_key = _call(world.b_clients["api_key"], "post", "/api/v1/auth/switch-organization",
                   {"organization_id": str(world.a.id)})
    assert by_key.status_code == 403
    _assert_a_unchanged(world)


def test_accepting_another_tenants_invitation_for_someone_else_is_refused(world):
    sent = _invite_someone_to_a(world)

    for mode in ("session", "api_key"):
        response = _call(world.b_clients[mode], "post", "/api/v1/invitations/accept", {"token": sent.token})
        assert response.status_code in (403, 404), (mode, response.status_code, response.content)

    assert rows(Membership, world.a.id, organization_id=world.a.id, user_id=world.b_owner.pk) == []
    [invitation] = rows(Invitation, world.a.id, id=sent.invitation.id)
    assert invitation.accepted_at is None and invitation.accepted_by_id is None
    _assert_a_unchanged(world)


def test_the_admin_sends_a_tenant_member_to_its_login(world):
    response = _call(world.b_clients["session"], "get", "/admin/")

    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_the_dashboard_switcher_refuses_another_tenants_organization(world):
    session = world.b_clients["session"]

    response = _call(session, "post", "/organizations/switch/", {"organization_id": str(world.a.id)})
    missing = _call(session, "post", "/organizations/switch/", {"organization_id": str(uuid.uuid4())})

    assert response.status_code == 302
    assert _answer(response) == _answer(missing)
    assert [level for level, _ in _answer(response)[2]] == ["error"]
    assert _call(session, "get", "/api/v1/auth/me").json()["organization"]["id"] == str(world.b.id)
    _assert_a_unchanged(world)


def test_the_dashboard_invitation_link_refuses_another_persons_invitation(world):
    sent = _invite_someone_to_a(world)
    session = world.b_clients["session"]
    path = f"/invitations/accept/{sent.token}/"

    page = _call(session, "get", path)
    accepted = _call(session, "post", path)

    assert page.status_code == 200  # the confirmation page looks nothing up
    assert not sorted(m for m in world.markers if m in page.content.decode())
    assert accepted.status_code in (403, 404), accepted.status_code
    assert rows(Membership, world.a.id, organization_id=world.a.id, user_id=world.b_owner.pk) == []
    [invitation] = rows(Invitation, world.a.id, id=sent.invitation.id)
    assert invitation.accepted_at is None
    assert _call(session, "get", "/api/v1/auth/me").json()["organization"]["id"] == str(world.b.id)
    _assert_a_unchanged(world)
