"""A stream whose generation server does not answer: no server runs in this module (the
generation_server fixture is module-scoped, so none is left from another module), the request waits
in the real Redis queue, and the web side's timeout ends the stream with an OpenAI-shape error event
and [DONE] instead of a cut connection."""
from __future__ import annotations

import json

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])


@override_settings(GENERATION_TIMEOUT_SECONDS=1)
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_a_stream_nobody_answers_ends_with_an_error_event_and_done(make_tenant, api_client_for, base_models, route):
    from lode.billing.models import UsageEvent
    from tests.conftest import system

    base_models("tiny-gpt2")
    tenant = make_tenant()
    client = api_client_for(tenant.user, scopes=["generation:read", "generation:write"])
    body = ({"model": "tiny-gpt2", "max_tokens": 4, "messages": [{"role": "user", "content": "Hello there"}]}
            if route.endswith("chat/completions") else {"model": "tiny-gpt2", "prompt": "Hi", "max_tokens": 4})

    response = client.post(route, {**body, "stream": True}, format="json")

    assert response.status_code == 200, response.content
    events = [line[6:] for line in b"".join(response.streaming_content).decode().splitlines()
              if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2]) == {"error": {
        "message": "generation: no answer from the generation service in time", "type": "server_error",
        "param": None, "code": "unavailable"}}
    assert all("error" not in json.loads(event) for event in events[:-2])
    assert not system(UsageEvent).filter(tenant_id=tenant.organization.id).exists()  # nothing generated, nothing billed
