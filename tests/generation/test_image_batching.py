"""Image requests waiting together on the generation server (workers/generation/server.py) are drawn
in one diffusers pipeline call per group of equal parameters, in process: a real tiny-sd pipeline
and a tenant's LoRA from S3, the replies taken at the server's own send. A seeded request gets the
same noise batched as alone, and so the same images up to the rounding of batched kernels; a
different size or an adapter is a separate call; a failing group answers each of its requests with
an error while the others draw."""
from __future__ import annotations

import base64
import io
import threading
import time
import uuid

import pytest
import torch

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])


@pytest.fixture
def server(monkeypatch):
    from django.conf import settings

    from workers.generation.server import GenerationServer

    server = GenerationServer(redis_url=settings.REDIS_URL, image_batch_wait_ms=0)
    server.replies = {}  # reply key -> the events sent on it
    monkeypatch.setattr(server, "_send", lambda reply, event: server.replies.setdefault(reply, []).append(event))
    yield server
    server.stop()


class Calls(list):
    """Each real StableDiffusionPipeline call: its number of images and its starting latents."""

    @property
    def sizes(self) -> list[int]:
        return [images for images, _ in self]


@pytest.fixture
def pipeline_calls(monkeypatch) -> Calls:
    from diffusers import StableDiffusionPipeline

    calls = Calls()
    original = StableDiffusionPipeline.__call__

    def counted(self, *args, **kwargs):
        latents = kwargs.get("latents")
        calls.append((len(kwargs["prompt"]), None if latents is None else latents.clone()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", counted)
    return calls


@pytest.fixture
def tiny_sd(make_tenant, base_models):
    """A tenant and the base dict of tiny-sd as the web tier sends it."""
    from lode.generation.completions import served_model_resolve

    base_models("tiny-sd")
    tenant = make_tenant()
    served = served_model_resolve(tenant_id=tenant.organization.id, name="tiny-sd", task_type="text_to_image")
    return tenant, served.base


def _message(tenant, base, *, prompt: str, seed: int | None, n: int = 1, size: int = 64, adapter=None,
             negative: str | None = None) -> dict:
    return {"id": uuid.uuid4().hex, "kind": "image", "tenant_id": str(tenant.organization.id), "base": base,
            "adapter": adapter, "prompt": prompt, "reply": f"test:image:{uuid.uuid4().hex}",
            "deadline": time.time() + 120,
            "params": {"n": n, "width": size, "height": size, "steps": 2, "guidance": 7.5, "seed": seed,
                       "negative_prompt": negative}}


def _alone(server, message: dict) -> list[str]:
    """The images of the same request drawn by itself."""
    again = dict(message, reply=f"test:image:{uuid.uuid4().hex}")
    server._image_batch_run([again])
    return _images(server, again)


def _images(server, message: dict) -> list[str]:
    (event,) = server.replies[message["reply"]]
    assert event["done"] and event["finish_reason"] == "stop" and event["error"] is None, event
    assert event["usage"] == {"images": len(event["images"])}
    return event["images"]


def _pixels(encoded: str):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))), dtype=np.int16)


def _size(encoded: str) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(encoded))).size


def _same_up_to_rounding(ours: list[str], theirs: list[str]) -> None:
    """Equal images, but for the float rounding of the UNet and VAE kernels, which depends on the
    batch size (about 1e-6 on CPU): a pixel may be one level off. The noise itself is exact."""
    assert len(ours) == len(theirs)
    for one, other in zip(ours, theirs):
        difference = abs(_pixels(one) - _pixels(other))
        assert difference.max() <= 2 and (difference > 0).mean() < 0.005, (difference.max(), (difference > 0).mean())


def _image_adapter(tenant, tmp_path) -> dict:
    """A tenant's random LoRA on tiny-sd's UNet, stored as a text-to-image fine-tune stores it."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    from lode.core import artifacts
    from lode.training.hyperparameters import lora_targets_for
    from lode.training.services import tuned_model_prefix
    from workers.model_store import materialize_base_model
    from workers.tiny_models.manifest import files_revision, folder_files

    pipeline = StableDiffusionPipeline.from_pretrained(materialize_base_model("tiny-sd"), safety_checker=None,
                                                       requires_safety_checker=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        pipeline.unet.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                             target_modules=lora_targets_for("unet")))
    folder = tmp_path / "lora"
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipeline.unet))
    StableDiffusionPipeline.save_lora_weights(save_directory=folder, unet_lora_layers=layers, safe_serialization=True)
    model_id = str(uuid.uuid4())
    files = folder_files(folder)
    for entry in files:
        artifacts.file_put(tenant_id=tenant.organization.id, key=f"{tuned_model_prefix(model_id)}/{entry['path']}",
                           path=folder / entry["path"])
    return {"id": model_id, "prefix": tuned_model_prefix(model_id), "manifest": {"files": files,
                                                                                "revision": files_revision(files)}}


def test_requests_queued_together_are_drawn_in_one_pipeline_call_with_the_images_they_get_alone(
        server, pipeline_calls, tiny_sd):
    tenant, base = tiny_sd
    seeded = [_message(tenant, base, prompt="a red swatch", seed=1),
              _message(tenant, base, prompt="a blue square", seed=2, n=2, negative="blurry"),
              _message(tenant, base, prompt="a green dot", seed=3)]
    unseeded = [_message(tenant, base, prompt="a red swatch", seed=None) for _ in range(2)]
    for message in [*seeded, *unseeded]:
        server._images.put(message)

    loop = threading.Thread(target=server._image_loop, daemon=True)
    loop.start()
    deadline = time.time() + 60
    while len(server.replies) < 5 and time.time() < deadline:
        time.sleep(0.02)
    server.stop()
    loop.join(timeout=10)

    assert pipeline_calls.sizes == [6]
    assert server.image_stats == {"pipeline_calls": 1, "images": 6, "max_batch": 6}
    batched = [_images(server, message) for message in seeded]
    assert [len(images) for images in batched] == [1, 2, 1]
    assert {_size(image) for images in batched for image in images} == {(64, 64)}
    assert len({image for images in batched for image in images}) == 4  # each image its own noise
    first, second = (_images(server, message)[0] for message in unseeded)
    assert first != second  # no seed: fresh noise for each request

    offset = 0
    for message, images, n in zip(seeded, batched, (1, 2, 1)):
        alone = _alone(server, message)
        assert torch.equal(pipeline_calls[-1][1], pipeline_calls[0][1][offset:offset + n])  # the same noise, exactly
        offset += n
        _same_up_to_rounding(alone, images)
    assert pipeline_calls.sizes == [6, 1, 2, 1]

    # A seed keeps the images it gave before batching (one generator drawing the request's n latents):
    # alone, the request is the same call as before, byte for byte.
    from workers.generation.loading import base_key

    pipeline = server.pipelines[base_key(base)]
    plain = pipeline(prompt=["a blue square"] * 2, negative_prompt=["blurry"] * 2, num_inference_steps=2,
                     guidance_scale=7.5, width=64, height=64, generator=torch.Generator("cpu").manual_seed(2))
    encoded = []
    for image in plain.images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    assert encoded == _alone(server, seeded[1])


def test_a_different_size_or_a_lora_adapter_goes_to_its_own_pipeline_call(server, pipeline_calls, tiny_sd, tmp_path):
    tenant, base = tiny_sd
    adapter = _image_adapter(tenant, tmp_path)
    tuned = _message(tenant, base, prompt="a red swatch", seed=1, adapter=adapter)
    plain = [_message(tenant, base, prompt="a red swatch", seed=1), _message(tenant, base, prompt="a cat", seed=4)]
    small = _message(tenant, base, prompt="a red swatch", seed=1, size=32)
    before = [dict(message, reply=f"test:image:{uuid.uuid4().hex}") for message in plain]
    server._image_batch_run(before)  # the same pair, before any LoRA was ever loaded
    pipeline_calls.clear()

    server._image_batch_run([tuned, plain[0], small, plain[1]])

    assert pipeline_calls.sizes == [1, 2, 1]  # the LoRA, the two plain 64x64 together, the 32x32
    assert server.image_stats["pipeline_calls"] == 1 + 3 and server.image_stats["max_batch"] == 2
    # The LoRA was unloaded after its call: the plain pair draws exactly as before it was loaded.
    assert [_images(server, message) for message in plain] == [_images(server, message) for message in before]
    (tuned_image,) = _images(server, tuned)
    assert abs(_pixels(tuned_image) - _pixels(_images(server, before[0])[0])).max() > 16  # the adapter drew
    assert _alone(server, tuned) == [tuned_image]
    (small_image,) = _images(server, small)
    assert _size(small_image) == (32, 32)


def test_a_failing_group_answers_each_of_its_requests_with_an_error_and_the_others_still_draw(
        server, pipeline_calls, tiny_sd):
    tenant, base = tiny_sd
    missing = {"name": "no-such-model", "tenant_id": None, "prefix": "base-models/no-such-model",
               "manifest": {"files": [], "revision": "0"}}
    lost = [_message(tenant, missing, prompt="a red swatch", seed=1), _message(tenant, missing, prompt="x", seed=2)]
    good = _message(tenant, base, prompt="a red swatch", seed=1)
    malformed = dict(_message(tenant, base, prompt="a red swatch", seed=1), prompt=None)
    expired = dict(_message(tenant, base, prompt="a red swatch", seed=1), deadline=time.time() - 1)

    server._image_batch_run([lost[0], good, malformed, lost[1], expired])

    for message in [*lost, malformed]:
        (event,) = server.replies[message["reply"]]
        assert event["done"] and event["finish_reason"] == "error" and event["error"], event
        assert event["usage"] == {"images": 0}
    assert "prompt" in server.replies[malformed["reply"]][0]["error"]
    assert len(_images(server, good)) == 1
    assert expired["reply"] not in server.replies  # its caller has given up: dropped unanswered
    assert pipeline_calls.sizes == [1]


def test_a_batch_takes_at_most_the_image_cap_and_keeps_the_rest_in_order(server):
    server.image_max_batch = 3
    messages = [{"id": name, "params": {"n": n}} for name, n in (("a", 2), ("b", 2), ("c", 1), ("d", 4))]
    for message in messages:
        server._images.put(message)

    taken = [[message["id"] for message in server._image_batch_take(timeout=0.01)] for _ in range(4)]

    assert taken == [["a"], ["b", "c"], ["d"], []]  # d alone is over the cap: still drawn, alone
