"""The tiny offline models: they build with the hub switched off and no network, load back with
`from_pretrained` from local folders and work (the LM generates and learned from its pre-training,
the classifier gives logits, the diffusion pipeline draws an image of the configured size); and
`build_tiny_models` registers them in the catalog so a worker can materialize them from S3."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch

from workers.tiny_models import TINY_GPT2, TINY_GPT2_CLASSIFIER, TINY_MODEL_NAMES, TINY_SD
from workers.tiny_models.causal_lm import QUICK_PRETRAIN_STEPS
from workers.tiny_models.manifest import MANIFEST_FILENAME, folder_is_complete

IMAGE_SIZE = 32
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub offline mode on, and any connection off this machine fails the test (the local
    PostgreSQL and S3 endpoint stay reachable)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import: set the constant it answers from too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    real_connect = socket.socket.connect

    def loopback_only(sock: socket.socket, address):
        if sock.family != socket.AF_UNIX and address[0] not in _LOOPBACK:
            raise AssertionError(f"network access attempted: {address!r}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """All tiny models, built once for this module with a short pre-training."""
    from workers.tiny_models.build import build_all

    with pytest.MonkeyPatch.context() as monkeypatch:
        _offline(monkeypatch)
        models = build_all(
            root=tmp_path_factory.mktemp("tiny-models"), pretrain_steps=QUICK_PRETRAIN_STEPS, image_size=IMAGE_SIZE
        )
    return {model.name: model for model in models}


def test_all_tiny_models_build_offline_with_complete_manifests(built):
    assert set(built) == set(TINY_MODEL_NAMES)
    for model in built.values():
        assert folder_is_complete(model.folder)
        assert (model.folder / MANIFEST_FILENAME).is_file()
        assert model.manifest["parameter_count"] > 0
        assert model.manifest["built_with"]["torch"]
    assert built[TINY_GPT2].manifest["architecture"] == "GPT2LMHeadModel"
    assert built[TINY_GPT2_CLASSIFIER].manifest["architecture"] == "GPT2ForSequenceClassification"
    assert built[TINY_SD].manifest["architecture"] == "StableDiffusionPipeline"
    assert 100_000 < built[TINY_GPT2].manifest["parameter_count"] < 1_000_000


def test_causal_lm_pretraining_drops_the_loss_and_it_generates(built, offline):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    training = built[TINY_GPT2].manifest["training"]
    assert training["steps"] == QUICK_PRETRAIN_STEPS
    assert training["loss_end"] < 0.8 * training["loss_start"], training

    folder = str(built[TINY_GPT2].folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    inputs = tokenizer(["Customer: How long do refunds take?\nAgent:"], return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    assert 0 < new_tokens.shape[0] <= 12
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def test_tokenizer_is_byte_level_deterministic_and_has_a_chat_template(built, tmp_path, offline):
    from transformers import AutoTokenizer

    from workers.tiny_models.tokenizer import build_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(built[TINY_GPT2].folder))
    text = "顾客：退款多久能到账？ Refund in 3-5 days."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    assert {tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token} == {"<s>", "</s>", "<pad>"}
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where is my order?"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|user|>\nWhere is my order?</s>\n<|assistant|>\n"
    assert tokenizer.convert_ids_to_tokens(tokenizer("<|assistant|>", add_special_tokens=False)["input_ids"]) == [
        "<|assistant|>"
    ]
    # A second training run on the same text gives the same tokenizer.
    build_tokenizer(output_dir=tmp_path)
    assert (tmp_path / "tokenizer.json").read_bytes() == (built[TINY_GPT2].folder / "tokenizer.json").read_bytes()


def test_sequence_classifier_outputs_logits_per_label(built, offline):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = str(built[TINY_GPT2_CLASSIFIER].folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.id2label == {0: "negative", 1: "positive"}
    texts = ["Great kettle, boils fast.", "The strap broke after a week and nobody answered."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()


def test_diffusion_pipeline_draws_an_image_of_the_configured_size(built, offline):
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(str(built[TINY_SD].folder))
    pipeline.set_progress_bar_config(disable=True)
    assert pipeline.tokenizer.model_max_length == 77
    assert pipeline.safety_checker is None
    result = pipeline(
        "a red running shoe on a white table",
        num_inference_steps=2,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    image = result.images[0]
    assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
    assert built[TINY_SD].manifest["image_size"] == IMAGE_SIZE


def test_build_all_reuses_a_complete_build_and_rebuilds_a_changed_recipe(built, tmp_path, offline):
    from workers.tiny_models.build import build_all

    # A copy, so the module's shared build stays as it is.
    shutil.copytree(built[TINY_SD].folder, tmp_path / TINY_SD)
    before = (tmp_path / TINY_SD / MANIFEST_FILENAME).read_bytes()
    messages: list[str] = []
    build_all(root=tmp_path, names=[TINY_SD], image_size=IMAGE_SIZE, log=messages.append)
    assert any("reusing" in message for message in messages)
    assert (tmp_path / TINY_SD / MANIFEST_FILENAME).read_bytes() == before

    messages.clear()
    rebuilt = build_all(root=tmp_path, names=[TINY_SD], image_size=IMAGE_SIZE, seed=1, log=messages.append)
    assert any("building" in message for message in messages)
    assert rebuilt[0].manifest["recipe"]["seed"] == 1
    assert rebuilt[0].manifest["revision"] != built[TINY_SD].manifest["revision"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [TINY_SD]  # no staging folder left behind


# --- The management command, the catalog and the model store (real PostgreSQL and S3) ----------


@pytest.mark.django_db(transaction=True)
def test_build_tiny_models_command_registers_models_that_materialize_from_s3(tmp_path, settings, offline):
    from io import StringIO

    from django.core.management import call_command
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lode.core import artifacts
    from lode.training.selectors import base_model_get, base_model_list, base_model_missing_files
    from workers.model_store import materialize_base_model

    settings.MODEL_CACHE_DIR = tmp_path / "models"
    out = StringIO()
    call_command("build_tiny_models", "--pretrain-steps", "30", stdout=out)
    assert "Tiny models ready" in out.getvalue(), out.getvalue()

    rows = {row.name: row for row in base_model_list()}
    assert set(rows) == set(TINY_MODEL_NAMES)
    lm = rows[TINY_GPT2]
    assert (lm.task_type, lm.architecture) == ("causal_lm", "GPT2LMHeadModel")
    assert lm.artifact_prefix == "base-models/tiny-gpt2"
    assert rows[TINY_SD].task_type == "text_to_image"
    assert rows[TINY_GPT2_CLASSIFIER].task_type == "sequence_classification"
    assert artifacts.object_exists(tenant_id=None, key="base-models/tiny-gpt2/model.safetensors")
    assert base_model_missing_files(base_model=lm) == []

    # A fresh cache (another worker) pulls the folder from S3 and loads it.
    fresh_cache = tmp_path / "worker-cache"
    local_path = materialize_base_model(TINY_GPT2, cache_dir=fresh_cache)
    assert local_path.is_relative_to(fresh_cache) and folder_is_complete(local_path)
    model = AutoModelForCausalLM.from_pretrained(str(local_path))
    tokenizer = AutoTokenizer.from_pretrained(str(local_path))
    output = model.generate(**tokenizer(["Product:"], return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert output.shape[1] > 1
    assert materialize_base_model(TINY_GPT2, cache_dir=fresh_cache) == local_path  # cached

    # A second run reuses the builds and uploads nothing; one whose endpoint lost the files
    # uploads them again.
    updated_at = base_model_get(name=TINY_GPT2).updated_at
    out = StringIO()
    call_command("build_tiny_models", "--pretrain-steps", "30", stdout=out)
    assert "tiny-gpt2: already registered" in out.getvalue()
    assert base_model_get(name=TINY_GPT2).updated_at == updated_at

    artifacts.prefix_delete(tenant_id=None, prefix="base-models/tiny-gpt2")
    out = StringIO()
    call_command("build_tiny_models", "--pretrain-steps", "30", "--only", TINY_GPT2, stdout=out)
    assert "uploading again" in out.getvalue()
    assert base_model_missing_files(base_model=base_model_get(name=TINY_GPT2)) == []


@pytest.mark.django_db(transaction=True)
def test_materialize_unknown_base_model_is_not_found(tmp_path):
    from lode.core.errors import NotFound
    from workers.model_store import materialize_base_model

    with pytest.raises(NotFound):
        materialize_base_model("no-such-model", cache_dir=tmp_path)


def test_corpus_is_shipped_plain_utf8_text():
    from workers.tiny_models.text import corpus_documents, corpus_paths, corpus_size_bytes

    assert len(corpus_paths()) >= 4
    assert 30_000 <= corpus_size_bytes() <= 80_000
    documents = corpus_documents()
    assert any("客服" in document for document in documents)
    assert all(isinstance(document, str) and document for document in documents)
    assert Path(corpus_paths()[0]).suffix == ".txt"
