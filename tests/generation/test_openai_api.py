"""The OpenAI-compatible API's edges, through the test client: its error shape on unknown routes,
unauthenticated calls and unsupported verbs, and requests it refuses before doing any work."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from lode.datasets.models import Dataset
from tests.conftest import rows

pytestmark = pytest.mark.django_db


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize("verb", ["get", "post", "delete"])
def test_an_unknown_route_under_v1_is_a_404_in_openais_shape(verb):
    error = _error(getattr(APIClient(), verb)("/v1/chat/unknown"), 404)
    assert error["code"] == "unknown_url"


def test_a_call_without_a_key_is_a_401_in_openais_shape():
    response = APIClient().get("/v1/models")
    error = _error(response, 401)
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_verb_a_route_lacks_is_a_405_and_a_malformed_id_a_404(make_tenant, api_client_for):
    client = api_client_for(make_tenant().user)
    assert _error(client.delete("/v1/models/tiny-gpt2"), 405)["type"] == "invalid_request_error"
    assert _error(client.get("/v1/files/not-a-file-id"), 404)["code"] == "not_found"
    assert _error(client.get("/v1/fine_tuning/jobs/ftjob-xyz/events"), 404)["code"] == "not_found"
    assert _error(client.get("/v1/fine_tuning/jobs?limit=0"), 400)["param"] == "limit"


def test_a_refused_upload_leaves_no_dataset(make_tenant, api_client_for, settings):
    settings.DATASET_UPLOAD_MAX_BYTES = 64  # refused by upload_direct, after the dataset was made
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    line = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'

    response = client.post("/v1/files", {"purpose": "fine-tune", "file": SimpleUploadedFile("rows.jsonl", line * 3)},
                           format="multipart")

    assert _error(response, 413)["param"] == "file"
    assert rows(Dataset, tenant.organization.id, tenant_id__exact=tenant.organization.id) == []
    missing = _error(client.post("/v1/files", {}, format="json"), 400)
    assert missing["param"] in ("file", "purpose")
