"""The generation playground through Django's test client: the page offers the tenant's text and
image models (its fine-tunes and the base models) and its prompt templates, never another
tenant's; its two actions (the streamed answer and the images) refuse roles without
generation:write, answer bad parameters, unknown models and refused quotas with a JSON 4xx naming
the field, and stream the answer as server-sent events in order: on a real generation server, and
on a scripted engine for the held output of a safety check and a server that does not answer."""
from __future__ import annotations

import base64
import io
import json
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from lode.core.errors import ServiceUnavailable
from lode.generation import completions, prompts
from lode.training.models import TunedModel
from tenants.db_context import tenant_atomic
from tenants.services import invitation_accept, invitation_create
from tests.dashboard.conftest import PASSWORD, client_for
from tests.dashboard.test_dataset_pages import dataset_make, ready_version
from tests.generation.conftest import generation_server  # noqa: F401 (fixture)
from tests.training.conftest import base_models, instruction_rows  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db
WITH_SERVER = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])
TEXT, IMAGE = "tiny-gpt2", "tiny-sd"
STREAM, IMAGES, PAGE = "dashboard:playground-stream", "dashboard:playground-images", "dashboard:playground"


def _member(owner, role: str) -> Client:
    """A signed-in client of a new member of the owner's organization with `role` (their only one)."""
    user = get_user_model().objects.create_user(f"{role}-{uuid.uuid4().hex[:6]}@example.com", PASSWORD)
    sent = invitation_create(tenant_id=owner.organization.id, invited_by=owner.user, email=user.email, role=role)
    invitation_accept(token=sent.token, user=user)
    return client_for(user)


def _post(client: Client, name: str, body: dict, **extra):
    return client.post(reverse(name), data=json.dumps(body), content_type="application/json", **extra)


def _chat(prompt: str = "Where is my parcel?", **fields) -> dict:
    return {"model": TEXT, "mode": "chat", "prompt": prompt,
            "params": {"max_tokens": 8, "temperature": 0}, **fields}


def _events(response) -> list[tuple[str, dict]]:
    """The server-sent events of a streamed answer, as (name, data)."""
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream"), response
    text = b"".join(response.streaming_content).decode()
    events = []
    for block in filter(None, text.split("\n\n")):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def _answer(events) -> str:
    return "".join(data["text"] for name, data in events if name == "delta")


def _error(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    return response.json()["error"]


def _tuned(signup, base, *, name: str, task_type: str = "causal_lm") -> TunedModel:
    """A tenant's fine-tuned model row, as a fine-tune registers it (no weights: the page only
    names it)."""
    version = ready_version(signup, instruction_rows(4), dataset=dataset_make(signup, name=f"data-{name}"))
    with tenant_atomic(signup.organization.id):
        return TunedModel.objects.create(
            tenant_id=signup.organization.id, name=name, base_model=base, task="sft", task_type=task_type,
            method="lora", architecture=base.architecture, is_adapter=True, artifact_prefix=f"models/{uuid.uuid4()}",
            train_version=version)


def _template(signup, name: str = "support-reply", **fields):
    values = {"template": "Reply about {{ topic }} in a {{ tone }} tone.", "defaults": {"tone": "friendly"}} | fields
    return prompts.template_create(tenant_id=signup.organization.id, by=signup.user, name=name, values=values)


@pytest.fixture
def catalog(base_models):  # noqa: F811 (the imported fixture)
    return base_models(TEXT, IMAGE)


# --- The page ---------------------------------------------------------------------------------------


def test_anonymous_user_is_sent_to_login_and_the_actions_refuse(client: Client):
    page = client.get(reverse(PAGE))
    assert page.status_code == 302 and page["Location"].startswith(reverse("dashboard:login"))
    for name in (STREAM, IMAGES):
        assert _post(client, name, _chat()).status_code == 403


def test_the_page_offers_the_tenants_models_and_templates_and_not_another_tenants(ada, ada_client, grace, catalog):
    _tuned(ada, catalog[TEXT], name="ada-support-bot")
    _tuned(ada, catalog[IMAGE], name="ada-sticker-style", task_type="text_to_image")
    _tuned(grace, catalog[TEXT], name="grace-secret-bot")
    _template(ada, description="Answers a customer.")
    _template(grace, name="grace-secret-template")

    response = ada_client.get(reverse(PAGE))

    assert response.status_code == 200
    html = response.content.decode()
    models = response.context["models"]
    assert [model["name"] for model in models["text_tuned"]] == ["ada-support-bot"]
    assert [model["name"] for model in models["image_tuned"]] == ["ada-sticker-style"]
    assert TEXT in [model["name"] for model in models["text_base"]]
    assert IMAGE in [model["name"] for model in models["image_base"]]
    assert IMAGE not in [model["name"] for model in models["text_base"]]
    assert '<optgroup label="Text: fine-tuned models"><option value="ada-support-bot" data-kind="text">' in html
    assert '<option value="ada-sticker-style" data-kind="image">' in html
    assert f'<option value="{IMAGE}" data-kind="image">' in html
    templates = response.context["templates"]
    assert [template["name"] for template in templates] == ["support-reply"]
    assert templates[0]["variables"] == ["topic", "tone"] and templates[0]["defaults"] == {"tone": "friendly"}
    assert '<script id="playground-templates" type="application/json">' in html
    assert "grace-secret" not in html
    assert '<label for="pg-model">Model</label>' in html and '<label for="pg-prompt">Prompt</label>' in html
    assert 'aria-current="page">Playground</a>' in html
    assert "/static/dashboard/playground.js" in html and 'id="pg-send"' in html and "disabled" not in html.split(
        'id="pg-send"')[1].split(">")[0]


@pytest.mark.parametrize("role", ["admin", "engineer"])
def test_generation_writers_get_the_page_with_the_nav_link(ada, role):
    client = _member(ada, role)
    response = client.get(reverse(PAGE))
    assert response.status_code == 200 and response.context["can_write"]
    assert f'href="{reverse(PAGE)}" aria-current="page">Playground</a>' in response.content.decode()


@pytest.mark.parametrize("role", ["annotator", "reviewer", "billing"])
def test_roles_without_generation_get_403_on_the_page_and_actions_and_no_nav_link(ada, catalog, role):
    client = _member(ada, role)

    page = client.get(reverse(PAGE))
    streamed = _post(client, STREAM, _chat())
    drawn = _post(client, IMAGES, {"model": IMAGE, "prompt": "a red swatch", "params": {"size": "64x64"}})
    home = client.get(reverse("dashboard:home")).content.decode()

    assert page.status_code == 403 and 'data-testid="missing-permission">generation:read<' in page.content.decode()
    for response in (streamed, drawn):
        assert response.status_code == 403
        error = _error(response)
        assert error["details"]["required"] == "generation:write" and "generation:write" in error["message"]
    assert f'href="{reverse(PAGE)}"' not in home


def test_the_actions_take_only_post_and_enforce_csrf(ada):
    client = Client(enforce_csrf_checks=True)
    client.force_login(ada.user)
    assert client.get(reverse(STREAM)).status_code == 405
    refused = _post(client, STREAM, _chat())
    assert refused.status_code == 403 and "CSRF" in _error(refused)["message"]


# --- Refusals before anything is generated ---------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    (_chat(params={"temperature": 9}), "temperature"),
    (_chat(params={"max_tokens": 0}), "max_tokens"),
    (_chat(params={"max_tokens": 1.5}), "max_tokens"),
    (_chat(params={"top_p": 0}), "top_p"),
    (_chat(params={"stop": ["a", "b", "c", "d", "e"]}), "stop"),
    (_chat(params={"seed": "seven"}), "seed"),
    (_chat(params={"beams": 4}), "beams"),
    (_chat(params=[1, 2]), "params"),
    (_chat(mode="poem"), "mode"),
    (_chat(prompt=""), "prompt"),
    (_chat(mode="completion", system="Be terse."), "system"),
    (_chat(template={"name": "no-such-template"}), "template.name"),
    (_chat(template={"name": "support-reply", "variables": {}}), "template.variables.topic"),
    (_chat(template={"name": "support-reply", "variables": {"topic": "refunds"}}, system="Be terse."), "system"),
    (_chat(mode="completion", template={"name": "support-reply", "variables": {"topic": "x"}}), "prompt"),
])
def test_bad_text_requests_get_a_json_400_naming_the_field(ada, ada_client, catalog, body, field):
    _template(ada)
    response = _post(ada_client, STREAM, body)
    assert response.status_code == 400, response.content
    error = _error(response)
    assert error["details"]["field"] == field and error["message"], error


@pytest.mark.parametrize("params, field", [
    ({"size": "63x64"}, "size"), ({"size": "2048x2048"}, "size"), ({"size": "big"}, "size"), ({"n": 9}, "n"),
    ({"steps": 0}, "steps"), ({"guidance": 99}, "guidance"), ({"max_tokens": 4}, "max_tokens"),
])
def test_bad_image_requests_get_a_json_400_naming_the_field(ada_client, catalog, params, field):
    response = _post(ada_client, IMAGES, {"model": IMAGE, "prompt": "a red swatch", "params": params})
    assert response.status_code == 400, response.content
    assert _error(response)["details"]["field"] == field


def test_unknown_foreign_and_wrong_kind_models_and_foreign_templates_are_refused_naming_the_field(
        ada_client, grace, catalog):
    _tuned(grace, catalog[TEXT], name="grace-secret-bot")
    _template(grace, name="grace-secret-template")

    foreign_template = _post(ada_client, STREAM, _chat(template={"name": "grace-secret-template", "variables": {
        "topic": "x"}}))
    missing = _post(ada_client, STREAM, _chat(model="no-such-model"))
    foreign = _post(ada_client, STREAM, _chat(model="grace-secret-bot"))
    image_as_text = _post(ada_client, STREAM, _chat(model=IMAGE))
    text_as_image = _post(ada_client, IMAGES, {"model": TEXT, "prompt": "a red swatch", "params": {"size": "64x64"}})
    no_model = _post(ada_client, IMAGES, {"prompt": "a red swatch"})

    assert missing.status_code == foreign.status_code == 404
    assert _error(missing)["details"]["field"] == _error(foreign)["details"]["field"] == "model"
    assert "grace-secret-bot" in _error(foreign)["message"]  # the name asked for, nothing of grace's
    assert foreign_template.status_code == 400 and _error(foreign_template)["details"]["field"] == "template.name"
    for response in (image_as_text, text_as_image, no_model):
        assert response.status_code == 400 and _error(response)["details"]["field"] == "model"


def test_a_refused_quota_is_a_json_402(ada_client, catalog, monkeypatch):
    from lode.billing.services import QuotaExceeded

    def refuse(**kwargs):
        raise QuotaExceeded("The estimate of 8 output tokens exceeds the output_tokens quota.")

    monkeypatch.setattr("lode.billing.services.usage_admit", refuse)
    streamed = _post(ada_client, STREAM, _chat())
    drawn = _post(ada_client, IMAGES, {"model": IMAGE, "prompt": "a red swatch", "params": {"size": "64x64"}})

    for response in (streamed, drawn):
        assert response.status_code == 402
        error = _error(response)
        assert error["code"] == "quota_exceeded" and "output_tokens quota" in error["message"]


# --- The stream on a scripted engine: held output, blocked output, no server -------------------------------


def _scripted(monkeypatch, pieces: list[str], *, fail: Exception | None = None) -> list[dict]:
    """Replaces the generation server: the request's deltas, then done (or the exception)."""
    sent: list[dict] = []

    def engine(payload, timeout=None):
        sent.append(payload)
        if fail is not None:
            raise fail
        for piece in pieces:
            yield {"delta": piece}
        yield {"done": True, "finish_reason": "length", "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces)},
               "error": None}

    monkeypatch.setattr(completions, "engine_request", engine)
    return sent


def _hook(blocked_word: str):
    """A safety check: blocks an output with the word, flags one saying "careful", holds one saying
    "review" for a reviewer, redacts a phone number."""

    def review(*, tenant_id, kind, text, **context):
        if kind != "output":  # the prompt's verdict: the policy releases an answer after its verdict
            return completions.Verdict(policy_version=4, stream="end")
        if blocked_word in text:
            return completions.Verdict(allowed=False, flagged=True, categories={"violence": 0.93}, policy_version=4,
                                       action="block")
        if "careful" in text:
            return completions.Verdict(flagged=True, categories={"self_harm": 0.41}, policy_version=4, action="flag")
        if "review" in text:
            return completions.Verdict(flagged=True, categories={"pii": 0.8}, policy_version=4, action="flag", held=True,
                                       item_id="item-1")
        if "555-0100" in text:
            return completions.Verdict(flagged=True, categories={"pii": 1.0}, policy_version=4, action="redact",
                                       text=text.replace("555-0100", "[phone]"))
        return completions.Verdict(policy_version=4)

    return review


def test_without_a_safety_check_the_text_streams_piece_by_piece(ada_client, catalog, monkeypatch):
    monkeypatch.setattr(completions, "SAFETY_HOOKS", [])
    sent = _scripted(monkeypatch, ["Your ", "parcel ", "is near."])

    events = _events(_post(ada_client, STREAM, _chat(system="Be terse.")))

    assert [name for name, _ in events] == ["start", "verdict", "delta", "delta", "delta", "done"]
    assert [data["text"] for name, data in events if name == "delta"] == ["Your ", "parcel ", "is near."]
    assert events[0][1]["model"] == TEXT and events[0][1]["template"] is None
    passed = {**completions.Verdict().as_dict(), "blocked": False}
    assert events[1][1] == passed and passed["allowed"] and not passed["flagged"]
    assert events[-1][1] == {"finish_reason": "length", "usage": {"prompt_tokens": 5, "completion_tokens": 3,
                                                                   "total_tokens": 8}, "verdict": passed}
    assert sent[0]["messages"] == [{"role": "system", "content": "Be terse."},
                                   {"role": "user", "content": "Where is my parcel?"}]
    assert sent[0]["params"]["max_tokens"] == 8 and sent[0]["params"]["temperature"] == 0


def test_with_a_safety_check_the_text_is_held_and_a_blocked_output_never_sent(ada_client, catalog, monkeypatch):
    monkeypatch.setattr(completions, "SAFETY_HOOKS", [_hook("forbidden")])

    _scripted(monkeypatch, ["Be ", "careful ", "now."])
    flagged = _events(_post(ada_client, STREAM, _chat()))
    _scripted(monkeypatch, ["A ", "forbidden ", "answer."])
    blocked = _events(_post(ada_client, STREAM, _chat()))
    _scripted(monkeypatch, ["Needs ", "review ", "first."])
    held = _events(_post(ada_client, STREAM, _chat()))
    _scripted(monkeypatch, ["Call ", "555-0100 ", "today."])
    redacted = _events(_post(ada_client, STREAM, _chat()))

    assert [name for name, _ in flagged] == ["start", "verdict", "delta", "done"]
    assert flagged[2][1] == {"text": "Be careful now."}  # held, then sent whole
    assert flagged[1][1]["allowed"] and not flagged[1][1]["flagged"] and not flagged[1][1]["blocked"]
    assert flagged[-1][1]["finish_reason"] == "length"
    shown = flagged[-1][1]["verdict"]
    assert {key: shown[key] for key in ("action", "allowed", "flagged", "blocked", "categories", "policy_version")} == {
        "action": "flag", "allowed": True, "flagged": True, "blocked": False, "categories": {"self_harm": 0.41},
        "policy_version": 4}
    for withheld, word in ((blocked, "forbidden"), (held, "review")):
        assert [name for name, _ in withheld] == ["start", "verdict", "done"]
        assert word not in json.dumps(withheld)
        assert withheld[-1][1]["finish_reason"] == "content_filter"
    assert blocked[-1][1]["verdict"]["blocked"] and blocked[-1][1]["verdict"]["categories"] == {"violence": 0.93}
    assert held[-1][1]["verdict"]["held"] and not held[-1][1]["verdict"]["blocked"]
    assert _answer(redacted) == "Call [phone] today." and "555-0100" not in json.dumps(redacted)
    assert redacted[-1][1]["verdict"]["action"] == "redact" and redacted[-1][1]["finish_reason"] == "length"


def test_a_refused_prompt_is_a_json_400(ada_client, catalog, monkeypatch):
    def refuse(*, tenant_id, kind, text, **context):
        return completions.Verdict(allowed=kind != "prompt", flagged=True, categories={"hate": 0.9}, policy_version=2)

    monkeypatch.setattr(completions, "SAFETY_HOOKS", [refuse])
    sent = _scripted(monkeypatch, ["never"])
    response = _post(ada_client, STREAM, _chat())

    assert response.status_code == 400
    error = _error(response)
    assert error["details"]["field"] == "prompt" and error["details"]["categories"] == {"hate": 0.9}
    assert "safety policy" in error["message"]
    assert sent == []


def test_a_server_that_does_not_answer_ends_the_stream_with_an_error_event(ada_client, catalog, monkeypatch):
    _scripted(monkeypatch, [], fail=ServiceUnavailable("generation: no answer from the generation service in time"))

    events = _events(_post(ada_client, STREAM, _chat()))

    assert [name for name, _ in events] == ["start", "verdict", "error"]
    assert events[-1][1] == {"message": "generation: no answer from the generation service in time", "field": None,
                             "status": 503}


def test_a_template_fills_the_request_before_the_prompt(ada, ada_client, catalog, monkeypatch):
    _template(ada, system="You answer for {{ tone }} people.")
    sent = _scripted(monkeypatch, ["ok"])

    chat = _events(_post(ada_client, STREAM, _chat(prompt="And quickly.", template={
        "name": "support-reply", "variables": {"topic": "refunds"}})))
    completion = _events(_post(ada_client, STREAM, _chat(mode="completion", prompt="", template={
        "name": "support-reply", "variables": {"topic": "refunds", "tone": "formal"}})))

    assert chat[0][1]["template"] == completion[0][1]["template"] == {"name": "support-reply", "version": 1}
    assert sent[0]["messages"] == [{"role": "system", "content": "You answer for friendly people."},
                                   {"role": "user", "content": "Reply about refunds in a friendly tone."},
                                   {"role": "user", "content": "And quickly."}]
    assert sent[1]["prompt"] == "You answer for formal people.\n\nReply about refunds in a formal tone."


def test_the_template_preview_works_with_the_dashboard_session(ada, ada_client):
    _template(ada)
    response = ada_client.post(reverse("generation:template-render", kwargs={"name": "support-reply"}),
                               data=json.dumps({"variables": {"topic": "refunds"}}), content_type="application/json")
    assert response.status_code == 200
    assert response.json()["messages"] == [{"role": "user", "content": "Reply about refunds in a friendly tone."}]


# --- On a real generation server -----------------------------------------------------------------------------


@WITH_SERVER
def test_the_stream_returns_its_events_in_order_from_the_generation_server(generation_server, make_tenant,  # noqa: F811
                                                                           base_models):  # noqa: F811
    base_models(TEXT)
    tenant = make_tenant()
    client = client_for(tenant.user)

    events = _events(_post(client, STREAM, _chat(params={"max_tokens": 8, "temperature": 0})))
    again = _events(_post(client, STREAM, _chat(mode="completion", prompt="Your order",
                                                params={"max_tokens": 6, "temperature": 0.7, "seed": 3})))
    same = _events(_post(client, STREAM, _chat(mode="completion", prompt="Your order",
                                               params={"max_tokens": 6, "temperature": 0.7, "seed": 3})))

    names = [name for name, _ in events]
    assert names[:2] == ["start", "verdict"] and names[-1] == "done" and set(names[2:-1]) == {"delta"}
    assert len(names) >= 4
    done = events[-1][1]
    assert done["finish_reason"] in ("stop", "length") and done["verdict"]["allowed"]
    assert 1 <= done["usage"]["completion_tokens"] <= 8 and done["usage"]["prompt_tokens"] >= 1
    assert _answer(events)
    text = [_answer(run) for run in (again, same)]
    assert text[0] and text[0] == text[1]  # seeded


@WITH_SERVER
def test_images_come_back_as_png_data_urls_from_the_generation_server(generation_server, make_tenant,  # noqa: F811
                                                                      base_models):  # noqa: F811
    from PIL import Image

    base_models(IMAGE)
    tenant = make_tenant()
    client = client_for(tenant.user)

    response = _post(client, IMAGES, {"model": IMAGE, "prompt": "a red swatch",
                                      "params": {"size": "64x64", "steps": 2, "n": 2, "seed": 1, "negative_prompt": ""}})

    assert response.status_code == 200, response.content[:300]
    answer = response.json()
    assert answer["model"] == IMAGE and answer["id"] and len(answer["images"]) == 2
    assert answer["verdict"]["allowed"] and not answer["verdict"]["blocked"] and answer["reviews"] == [None, None]
    for url in answer["images"]:
        prefix, encoded = url.split(",", 1)
        assert prefix == "data:image/png;base64"
        assert Image.open(io.BytesIO(base64.b64decode(encoded))).size == (64, 64)
