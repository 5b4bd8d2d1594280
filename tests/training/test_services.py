"""The base-model catalog service: files go to the platform scope of the artifact store, the row
records what was uploaded, and bad input is refused before anything is uploaded."""
from __future__ import annotations

import uuid

import pytest

from lode.core import artifacts
from lode.core.errors import ValidationFailed
from lode.training.models import BaseModel
from lode.training.selectors import base_model_get, base_model_missing_files
from lode.training.services import base_model_register


def _folder(tmp_path, files: dict[str, bytes]):
    folder = tmp_path / uuid.uuid4().hex
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return folder


def _register(*, name: str, folder, **overrides) -> BaseModel:
    fields = dict(
        name=name,
        display_name="A test model",
        task_type="causal_lm",
        architecture="GPT2LMHeadModel",
        parameter_count=10,
        local_dir=folder,
        manifest={"training": {"loss_start": 7.0, "loss_end": 3.0}},
    )
    return base_model_register(**{**fields, **overrides})


@pytest.mark.django_db(transaction=True)
def test_register_uploads_every_file_and_records_them_in_the_manifest(tmp_path):
    name = f"test-{uuid.uuid4().hex[:8]}"
    folder = _folder(tmp_path, {"config.json": b"{}", "model.safetensors": b"x" * 100, "sub/a.txt": b"a"})

    base_model = _register(name=name, folder=folder)

    assert base_model.artifact_prefix == f"base-models/{name}"
    assert [f["path"] for f in base_model.manifest["files"]] == ["config.json", "model.safetensors", "sub/a.txt"]
    assert base_model.manifest["training"] == {"loss_start": 7.0, "loss_end": 3.0}
    assert base_model.revision
    assert artifacts.object_get(tenant_id=None, key=f"base-models/{name}/sub/a.txt") == b"a"
    assert base_model_missing_files(base_model=base_model) == []


@pytest.mark.django_db(transaction=True)
def test_registering_again_updates_the_row_and_drops_files_the_new_folder_lacks(tmp_path):
    name = f"test-{uuid.uuid4().hex[:8]}"
    first = _register(name=name, folder=_folder(tmp_path, {"config.json": b"{}", "old.bin": b"old"}))

    second = _register(name=name, folder=_folder(tmp_path, {"config.json": b'{"v": 2}'}), parameter_count=20)

    assert second.id == first.id and BaseModel.objects.filter(name=name).count() == 1
    assert base_model_get(name=name).parameter_count == 20
    assert second.revision != first.revision
    assert [o.key for o in artifacts.object_list(tenant_id=None, prefix=f"base-models/{name}")] == [
        f"base-models/{name}/config.json"
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "overrides",
    [{"name": "Not A Slug!"}, {"task_type": "speech"}, {"parameter_count": -1}, {"display_name": ""}],
)
def test_invalid_registration_is_refused_before_any_upload(tmp_path, overrides):
    overrides = {"name": f"test-{uuid.uuid4().hex[:8]}", **overrides}
    folder = _folder(tmp_path, {"config.json": b"{}"})

    with pytest.raises(ValidationFailed):
        _register(folder=folder, **overrides)

    assert not BaseModel.objects.exists()
    assert artifacts.object_list(tenant_id=None, prefix=f"base-models/{overrides['name']}") == []


@pytest.mark.django_db(transaction=True)
def test_registering_a_missing_or_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    for local_dir in (tmp_path / "absent", tmp_path / "empty"):
        with pytest.raises(ValidationFailed):
            _register(name=f"test-{uuid.uuid4().hex[:8]}", folder=local_dir)
