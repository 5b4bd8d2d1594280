"""A tenant's own base model: a zip of a Hugging Face-format folder through the API, checked before
anything is stored, registered for that tenant only, and fine-tuned from on a worker."""
from __future__ import annotations

import io
import json
import struct
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from lode.training.models import BaseModel
from tests.conftest import system
from tests.training.conftest import instruction_rows, version_from_rows

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])


@pytest.fixture(scope="module")
def gpt2_files() -> dict[str, bytes]:
    from django.conf import settings

    from workers.tiny_models import TINY_GPT2
    from workers.tiny_models.build import build_all

    [built] = [model for model in build_all(root=settings.MODEL_CACHE_DIR / "build", names=[TINY_GPT2])
               if model.name == TINY_GPT2]
    return {path.name: path.read_bytes() for path in built.folder.iterdir() if path.is_file()
            and path.name != "lode_model.json"}


def _zip(files: dict[str, bytes], *, root: str = "my-model/") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(root + name, data)
    return SimpleUploadedFile("model.zip", buffer.getvalue(), content_type="application/zip")


def _upload(client, files, *, name="support-llm", root="my-model/"):
    return client.post("/api/v1/base-models", {"file": _zip(files, root=root), "name": name,
                                               "display_name": "Our support LM"}, format="multipart")


def test_uploaded_checkpoint_is_the_tenants_own_and_fine_tunes_on_a_worker(
        make_tenant, api_client_for, gpt2_files):
    from transformers import AutoModelForCausalLM

    from lode.core.jobs.runner import job_execute
    from lode.core.models import Job
    from workers.model_store import materialize_base_model

    tenant = make_tenant()
    client = api_client_for(tenant.user)
    stranger = api_client_for(make_tenant().user)

    answer = _upload(client, gpt2_files)

    assert answer.status_code == 201, answer.content
    body = answer.json()
    folder = materialize_base_model("support-llm", tenant_id=tenant.organization.id)
    # Tied weights (the LM head is the embedding) are stored and counted once.
    expected = sum(parameter.numel() for parameter in AutoModelForCausalLM.from_pretrained(folder).parameters())
    assert (body["owned"], body["task_type"], body["architecture"], body["source"]) == (
        True, "causal_lm", "GPT2LMHeadModel", "uploaded")
    assert body["parameter_count"] == expected
    assert "support-llm" in [model["name"] for model in client.get("/api/v1/base-models").json()]
    assert "support-llm" not in [model["name"] for model in stranger.get("/api/v1/base-models").json()]
    assert stranger.get(f"/api/v1/base-models/{body['id']}").status_code == 404

    version = version_from_rows(tenant, instruction_rows(30), modality="instruction")
    created = client.post("/api/v1/fine-tunes", {"base_model": "support-llm", "train_version": str(version.id),
                                                 "hyperparameters": {"max_steps": 2, "generation_eval_samples": 0}},
                          format="json")
    assert created.status_code == 202, created.content
    assert job_execute(tenant_id=tenant.organization.id, job_id=created.json()["id"]) == "succeeded"
    assert system(Job).get(id=created.json()["id"]).result["steps"] == 2
    foreign = stranger.post("/api/v1/fine-tunes", {"base_model": "support-llm", "train_version": str(version.id)},
                            format="json")
    assert foreign.status_code == 400 and foreign.json()["error"]["details"]["field"] == "base_model"

    # In use by a fine-tuned model: kept.
    assert client.delete(f"/api/v1/base-models/{body['id']}").status_code == 409


def _broken_safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 8  # 8 bytes of data where 64 are promised


@pytest.mark.parametrize("change, rule, path", [
    ({"pytorch_model.bin": b"pickle"}, "unsafe_format", "pytorch_model.bin"),
    ({"modeling_custom.py": b"import os"}, "unsafe_format", "modeling_custom.py"),
    ({"config.json": None}, "invalid_checkpoint", "config.json"),
    ({"config.json": b'{"architectures": ["BertModel"], "model_type": "bert"}'}, "invalid_checkpoint", "config.json"),
    ({"config.json": b"{not json"}, "invalid_checkpoint", "config.json"),
    ({"tokenizer.json": None, "tokenizer_config.json": None}, "invalid_checkpoint", "tokenizer.json"),
    ({"model.safetensors": None}, "invalid_checkpoint", "model.safetensors"),
    ({"model.safetensors": _broken_safetensors()}, "invalid_checkpoint", "model.safetensors"),
])
def test_unsafe_or_incomplete_checkpoints_are_refused_and_nothing_is_stored(
        make_tenant, api_client_for, gpt2_files, change, rule, path):
    from lode.core import artifacts

    tenant = make_tenant()
    client = api_client_for(tenant.user)
    files = {name: data for name, data in {**gpt2_files, **change}.items() if data is not None}

    answer = _upload(client, files)

    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert (error["details"]["field"], error["details"]["rule"], error["details"]["path"]) == ("file", rule, path)
    assert not system(BaseModel).filter(tenant_id=tenant.organization.id).exists()
    assert artifacts.object_list(tenant_id=tenant.organization.id, prefix="base-models/") == []


def test_zip_tricks_and_bad_names_are_refused(make_tenant, api_client_for, gpt2_files, settings):
    tenant = make_tenant()
    client = api_client_for(tenant.user)

    traversal = _upload(client, {**gpt2_files, "../escape.json": b"{}"}, root="")
    not_zip = client.post("/api/v1/base-models", {"file": SimpleUploadedFile("m.zip", b"hello"), "name": "x"},
                          format="multipart")
    catalog_name = _upload(client, gpt2_files, name="tiny-gpt2") if BaseModel.objects.filter(
        name="tiny-gpt2", tenant__isnull=True).exists() else None
    bad_name = _upload(client, gpt2_files, name="Not A Slug")
    settings.MODEL_UPLOAD_MAX_BYTES = 1000
    too_large = _upload(client, gpt2_files, name="big")

    assert traversal.status_code == 400 and traversal.json()["error"]["details"]["rule"] == "zip_unsafe"
    assert not_zip.status_code == 400 and not_zip.json()["error"]["details"]["rule"] == "format"
    assert catalog_name is None or catalog_name.json()["error"]["details"]["field"] == "name"
    assert bad_name.status_code == 400 and bad_name.json()["error"]["details"]["field"] == "name"
    assert too_large.status_code == 413
    assert not system(BaseModel).filter(tenant_id=tenant.organization.id).exists()


def test_an_unused_upload_can_be_deleted_with_its_files(make_tenant, api_client_for, gpt2_files, base_models):
    from lode.core import artifacts

    base_models("tiny-gpt2")
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    body = _upload(client, gpt2_files).json()
    catalog = next(model for model in client.get("/api/v1/base-models").json() if model["name"] == "tiny-gpt2")

    assert client.delete(f"/api/v1/base-models/{catalog['id']}").status_code == 404  # the catalog is not the tenant's
    assert client.delete(f"/api/v1/base-models/{body['id']}").status_code == 204
    assert artifacts.object_list(tenant_id=tenant.organization.id, prefix="base-models/") == []
    assert _upload(client, gpt2_files, name="tiny-gpt2").json()["error"]["details"]["field"] == "name"
