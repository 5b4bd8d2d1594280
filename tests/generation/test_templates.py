"""Prompt templates and few-shot example sets: rendering (pure), the /api/v1 endpoints (create,
change, render a preview, delete; every bad input a 4xx naming the field, nothing written; another
tenant's templates unseen), and a chat completion that names a template."""
from __future__ import annotations

import pytest

from lode.generation.templates import Template, TemplateInvalid, examples_check, render, template_variables

# --- rendering ------------------------------------------------------------------------------------


def test_variables_are_found_in_order_and_bad_placeholders_refused():
    assert template_variables("Hi {{ name }}, about {{topic}} and {{ name }}.") == ["name", "topic"]
    for bad in ("Hi {{ 1name }}", "Hi {{ name", "Hi name }}", "{{ first last }}", "{{}}"):
        with pytest.raises(TemplateInvalid) as caught:
            template_variables(bad)
        assert caught.value.field == "template"


def test_render_fills_defaults_examples_and_system_and_never_expands_a_value():
    shape = Template(template="Write a {{ tone }} reply to: {{ question }}", system="You work for {{ company }}.",
                     defaults={"tone": "friendly"})
    shape.check()
    examples = examples_check([
        {"variables": {"question": "Where is my parcel?"}, "output": "It left today."},
        {"variables": {"question": "Refund?", "tone": "formal"}, "output": "Certainly."},
    ])
    rendered = render(shape, {"question": "Is {{ company }} open?", "company": "Acme"}, examples=examples)
    assert rendered.messages() == [
        {"role": "system", "content": "You work for Acme."},
        {"role": "user", "content": "Write a friendly reply to: Where is my parcel?"},
        {"role": "assistant", "content": "It left today."},
        {"role": "user", "content": "Write a formal reply to: Refund?"},
        {"role": "assistant", "content": "Certainly."},
        # The value's braces stay as typed: user text is never template text.
        {"role": "user", "content": "Write a friendly reply to: Is {{ company }} open?"},
    ]
    assert rendered.prompt() == ("You work for Acme.\n\nWrite a friendly reply to: Where is my parcel?\nIt left today.\n\n"
                                 "Write a formal reply to: Refund?\nCertainly.\n\nWrite a friendly reply to: Is {{ company }} open?")
    assert len(render(shape, {"question": "q", "company": "Acme"}, examples=examples, max_examples=1).turns) == 1


def test_render_refuses_missing_and_unknown_variables_naming_them():
    shape = Template(template="{{ a }} and {{ b }}", defaults={"b": "x"})
    with pytest.raises(TemplateInvalid) as caught:
        render(shape, {})
    assert caught.value.field == "variables.a"
    with pytest.raises(TemplateInvalid) as caught:
        render(shape, {"a": "1", "c": "2"})
    assert caught.value.field == "variables.c"
    with pytest.raises(TemplateInvalid) as caught:
        Template(template="{{ a }}", defaults={"z": "1"}).check()
    assert caught.value.field == "defaults.z"
    with pytest.raises(TemplateInvalid) as caught:
        render(shape, {"a": "1"}, examples=[{"variables": {"q": "?"}, "output": "!"}])
    assert caught.value.field == "examples[0].variables.q"
    with pytest.raises(TemplateInvalid) as caught:
        examples_check([{"variables": {"a": "1"}, "output": "  "}])
    assert caught.value.field == "examples[0].output"


# --- the API --------------------------------------------------------------------------------------


@pytest.fixture
def client(make_tenant, api_client_for):
    tenant = make_tenant()
    made = api_client_for(tenant.user)
    made.tenant = tenant
    return made


def _create_pair(client):
    response = client.post("/api/v1/example-sets", {"name": "support-shots", "examples": [
        {"variables": {"question": "Where is my parcel?"}, "output": "It left our warehouse today."},
        {"variables": {"question": "Can I get a refund?"}, "output": "Yes, within 30 days."},
    ]}, format="json")
    assert response.status_code == 201, response.content
    response = client.post("/api/v1/prompt-templates", {
        "name": "support-reply", "system": "You answer for {{ company }}.", "template": "Customer: {{ question }}",
        "defaults": {"company": "Acme"}, "example_set": "support-shots", "max_examples": 2}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.django_db
def test_templates_are_created_rendered_changed_and_deleted(client):
    created = _create_pair(client)
    assert created["variables"] == ["company", "question"] and created["version"] == 1
    assert created["example_set"] == "support-shots"
    listed = client.get("/api/v1/prompt-templates").json()["results"]
    assert [item["name"] for item in listed] == ["support-reply"]

    preview = client.post("/api/v1/prompt-templates/support-reply/render",
                          {"variables": {"question": "Is my order late?"}, "max_examples": 1}, format="json")
    assert preview.status_code == 200, preview.content
    assert preview.json()["messages"] == [
        {"role": "system", "content": "You answer for Acme."},
        {"role": "user", "content": "Customer: Where is my parcel?"},
        {"role": "assistant", "content": "It left our warehouse today."},
        {"role": "user", "content": "Customer: Is my order late?"},
    ]
    changed = client.patch("/api/v1/prompt-templates/support-reply", {"template": "Q: {{ question }}"}, format="json")
    assert changed.status_code == 200 and changed.json()["version"] == 2
    # The set is in use: it stays, and a change that the template cannot render is refused.
    assert client.delete("/api/v1/example-sets/support-shots").status_code == 409
    refused = client.patch("/api/v1/example-sets/support-shots",
                           {"examples": [{"variables": {"topic": "x"}, "output": "y"}]}, format="json")
    assert refused.status_code == 400 and "topic" in refused.json()["error"]["message"]
    assert client.get("/api/v1/example-sets/support-shots").json()["version"] == 1
    assert client.delete("/api/v1/prompt-templates/support-reply").status_code == 204
    assert client.delete("/api/v1/example-sets/support-shots").status_code == 204
    assert client.get("/api/v1/prompt-templates/support-reply").status_code == 404
    assert client.post("/api/v1/prompt-templates/support-reply/render", {}, format="json").status_code == 404


@pytest.mark.django_db
def test_bad_templates_get_4xx_naming_the_field_and_nothing_is_written(client):
    from lode.generation.models import ExampleSet, PromptTemplate
    from tests.conftest import rows

    _create_pair(client)
    cases = [
        ("/api/v1/prompt-templates", {"name": "x", "template": "Hi {{ 1x }}"}, 400, "template"),
        ("/api/v1/prompt-templates", {"name": "x"}, 400, "template"),
        ("/api/v1/prompt-templates", {"name": "Bad Name!", "template": "hi"}, 400, "name"),
        ("/api/v1/prompt-templates", {"name": "x", "template": "{{ a }}", "defaults": {"b": "1"}}, 400, "defaults.b"),
        ("/api/v1/prompt-templates", {"name": "x", "template": "{{ a }}", "example_set": "nope"}, 400, "example_set"),
        ("/api/v1/prompt-templates", {"name": "x", "template": "{{ a }}", "example_set": "support-shots"}, 400,
         "example_set.examples[0].variables.question"),
        ("/api/v1/prompt-templates", {"name": "x", "template": "hi", "colour": "red"}, 400, "colour"),
        ("/api/v1/prompt-templates", {"name": "support-reply", "template": "hi"}, 409, "name"),
        ("/api/v1/prompt-templates", {"name": "x", "template": "hi", "max_examples": -1}, 400, "max_examples"),
        ("/api/v1/example-sets", {"name": "y", "examples": []}, 400, "examples"),
        ("/api/v1/example-sets", {"name": "y", "examples": [{"variables": {"a": ["list"]}, "output": "o"}]}, 400,
         "examples[0].variables.a"),
        ("/api/v1/prompt-templates/support-reply/render", {"variables": {"nope": "1"}}, 400, "template.variables.nope"),
        ("/api/v1/prompt-templates/support-reply/render", {"variables": {}}, 400, "template.variables.question"),
    ]
    for path, body, status, field in cases:
        response = client.post(path, body, format="json")
        assert response.status_code == status, (body, response.content)
        assert response.json()["error"]["details"]["field"] == field, (body, response.json())
    tenant_id = client.tenant.organization.id
    assert [t.name for t in rows(PromptTemplate, tenant_id)] == ["support-reply"]
    assert [s.name for s in rows(ExampleSet, tenant_id)] == ["support-shots"]


@pytest.mark.django_db
def test_another_tenants_templates_are_not_found(client, make_tenant, api_client_for, base_models):
    base_models("tiny-gpt2")
    _create_pair(client)
    other = api_client_for(make_tenant().user)
    assert other.get("/api/v1/prompt-templates").json()["results"] == []
    assert other.get("/api/v1/prompt-templates/support-reply").status_code == 404
    assert other.patch("/api/v1/prompt-templates/support-reply", {"template": "x"}, format="json").status_code == 404
    assert other.delete("/api/v1/example-sets/support-shots").status_code == 404
    response = other.post("/v1/chat/completions", {"model": "tiny-gpt2", "template": {"name": "support-reply",
                                                   "variables": {"question": "hi"}}}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "template.name"


@pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])
def test_a_chat_completion_naming_a_template_equals_the_rendered_messages(generation_server, make_tenant, api_client_for,
                                                                         base_models):
    base_models("tiny-gpt2")
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    client.tenant = tenant
    _create_pair(client)
    params = {"model": "tiny-gpt2", "max_tokens": 12, "seed": 5, "temperature": 0.9}
    by_template = client.post("/v1/chat/completions", {**params, "template": {
        "name": "support-reply", "variables": {"question": "Is my order late?"}}}, format="json")
    assert by_template.status_code == 200, by_template.content
    assert by_template.json()["template"] == {"name": "support-reply", "version": 1}
    preview = client.post("/api/v1/prompt-templates/support-reply/render",
                          {"variables": {"question": "Is my order late?"}}, format="json").json()
    by_hand = client.post("/v1/chat/completions", {**params, "messages": preview["messages"]}, format="json")
    assert by_template.json()["choices"][0]["message"]["content"] == by_hand.json()["choices"][0]["message"]["content"]
    assert by_template.json()["usage"] == by_hand.json()["usage"]
    # A completion model takes the rendered prompt.
    text = client.post("/v1/completions", {**params, "template": {"name": "support-reply", "variables": {
        "question": "Is my order late?"}}}, format="json")
    by_prompt = client.post("/v1/completions", {**params, "prompt": preview["prompt"]}, format="json")
    assert text.status_code == 200 and text.json()["choices"][0]["text"] == by_prompt.json()["choices"][0]["text"]
    both = client.post("/v1/completions", {**params, "prompt": "x", "template": "support-reply"}, format="json")
    assert both.status_code == 400 and both.json()["error"]["param"] == "prompt"
