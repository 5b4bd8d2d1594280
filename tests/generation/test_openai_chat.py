"""The official `openai` client's chat.completions and completions against a live Lode and a real
generation server: whole and streamed, on a base model and on a tenant's fine-tune, with usage;
and bad parameters, unknown and foreign models answered in OpenAI's error shape."""
from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from tests.conftest import api_key_for
from tests.generation.test_serving import _adapter_model

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])
SCOPES = ["generation:read", "generation:write", "training:read"]


def _client(live_server, user) -> OpenAI:
    return OpenAI(api_key=api_key_for(user, scopes=SCOPES), base_url=live_server.url + "/v1", max_retries=0, timeout=120)


def test_chat_and_text_completions_whole_and_streamed(live_server, generation_server, make_tenant, base_models, tmp_path):
    base = base_models("tiny-gpt2")["tiny-gpt2"]
    tenant = make_tenant()
    _adapter_model(tenant, base, tmp_path, name="ft-support")
    client = _client(live_server, tenant.user)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Where is my parcel?"}]

    whole = client.chat.completions.create(model="ft-support", messages=messages, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model="ft-support", messages=messages, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = client.completions.create(model="tiny-gpt2", prompt="Your order", max_tokens=8, temperature=0.7, seed=3)
    streamed_text = list(client.completions.create(model="tiny-gpt2", prompt="Your order", max_tokens=8,
                                                   temperature=0.7, seed=3, stream=True))

    assert whole.object == "chat.completion" and whole.model == "ft-support"
    assert whole.choices[0].message.role == "assistant" and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens >= 1 and whole.usage.total_tokens == (
        whole.usage.prompt_tokens + whole.usage.completion_tokens)
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert content == whole.choices[0].message.content  # greedy: the same text, in pieces
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == whole.choices[0].finish_reason
    assert text.object == "text_completion" and text.choices[0].text
    assert "".join(chunk.choices[0].text for chunk in streamed_text) == text.choices[0].text  # seeded


def test_bad_requests_get_openai_errors_naming_the_parameter(live_server, make_tenant, base_models, tmp_path):
    base = base_models("tiny-gpt2")["tiny-gpt2"]
    owner = make_tenant()
    _adapter_model(owner, base, tmp_path, name="ft-private")
    client = _client(live_server, make_tenant().user)
    messages = [{"role": "user", "content": "hi"}]

    cases = [
        (dict(model="tiny-gpt2", messages=messages, max_tokens=-1), openai.BadRequestError, "max_tokens"),
        (dict(model="tiny-gpt2", messages=messages, temperature=9), openai.BadRequestError, "temperature"),
        (dict(model="tiny-gpt2", messages=messages, n=3), openai.BadRequestError, "n"),
        (dict(model="no-such-model", messages=messages), openai.NotFoundError, "model"),
        (dict(model="ft-private", messages=messages), openai.NotFoundError, "model"),  # another tenant's
        (dict(model="tiny-gpt2", messages=[{"role": "wizard", "content": "x"}]), openai.BadRequestError, "messages"),
    ]
    for arguments, error, param in cases:
        with pytest.raises(error) as raised:
            client.chat.completions.create(**arguments)
        body = raised.value.response.json()["error"]
        assert body["param"] == param and body["message"], (arguments, body)


def test_images_generate_on_the_tiny_diffusion_model_as_base64_and_presigned_urls(
        live_server, generation_server, make_tenant, base_models):
    import base64
    import io

    import requests
    from PIL import Image

    from lode.billing.models import UsageEvent
    from tests.conftest import system

    base_models("tiny-sd", "tiny-gpt2")
    tenant = make_tenant()
    client = _client(live_server, tenant.user)

    inline = client.images.generate(model="tiny-sd", prompt="a red swatch", size="64x64", n=2,
                                    response_format="b64_json", extra_body={"steps": 2, "seed": 1})
    linked = client.images.generate(model="tiny-sd", prompt="a red swatch", size="64x64",
                                    extra_body={"steps": 2, "seed": 1})

    pictures = [Image.open(io.BytesIO(base64.b64decode(item.b64_json))) for item in inline.data]
    assert [picture.size for picture in pictures] == [(64, 64), (64, 64)]
    fetched = requests.get(linked.data[0].url, timeout=30)
    assert fetched.status_code == 200 and Image.open(io.BytesIO(fetched.content)).size == (64, 64)
    assert "X-Amz-Expires" in linked.data[0].url  # a short-lived presigned URL
    drawn = sum(event.quantity for event in system(UsageEvent).filter(tenant_id=tenant.organization.id, meter="images"))
    assert drawn == 3

    for arguments, param in ((dict(model="tiny-sd", prompt="x", size="2048x2048"), "size"),
                             (dict(model="tiny-sd", prompt="x", size="63x64"), "size"),
                             (dict(model="tiny-gpt2", prompt="x", size="64x64"), "model"),
                             (dict(model="tiny-sd", prompt="x", size="64x64", n=9), "n")):
        with pytest.raises(openai.BadRequestError) as raised:
            client.images.generate(**arguments)
        assert raised.value.response.json()["error"]["param"] == param, arguments
