"""The long-lived generation server of a GPU worker: requests from the web tier arrive on a Redis
list, run on a TextEngine per base model (kept loaded, continuous batching, LoRA fine-tunes of the
base served side by side), and their text comes back as it is produced on a per-request reply list.

    python -m workers.generation.server          (infra/worker.sh generation)

Protocol (JSON on Redis; lode.generation.engine_client is the web side):
- request, RPUSH on `lode:generation:requests`: {"id", "tenant_id", "base": {"name", "tenant_id",
  "prefix", "manifest"} (a catalog model, a tenant's upload or a fully fine-tuned model),
  "adapter": {"id", "prefix", "manifest"} | null, "messages": [...] | "prompt": "...", "params": {...},
  "reply": "<key>", "deadline": <unix time>} (a request past its deadline is dropped unanswered).
- replies, RPUSH on the request's key (expiring): {"delta": "..."} as text is produced, then one
  {"done": true, "finish_reason", "usage": {"prompt_tokens", "completion_tokens"}, "error"}.
- an image request ("kind": "image", a text-to-image base and optionally a tenant's LoRA, "prompt",
  "params": {n, width, height, steps, guidance, seed, negative_prompt}) is answered with one
  {"done": true, "finish_reason": "stop", "images": [base64 PNG, …], "usage": {"images": n}}. Image
  requests waiting together (up to image_max_batch images, LODE_IMAGE_MAX_BATCH, plus stragglers of
  LODE_IMAGE_BATCH_WAIT_MS) are drawn in one call of a diffusers pipeline kept loaded per base model,
  one call per group that shares base, LoRA (loaded for the call), size, steps and guidance. Each
  request's noise comes from its own generator (its seed, else a fresh one), so a seed gives the same
  images alone or batched; a failed call answers each request of its group with an error.
A bad request (too long for the context, unknown adapter) is answered with done and an error
naming it. Engines and adapters are loaded on first use from the artifact store (through
workers.model_store): the server reads no database."""
from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

REQUESTS_KEY = "lode:generation:requests"
REPLY_TTL_SECONDS = 120
IMAGE_MAX_BATCH = 8  # images in one pipeline call
IMAGE_BATCH_WAIT_MS = 5.0  # how long a batch waits for stragglers once its first request is taken


class ImageCall(NamedTuple):
    """What the requests drawn in one pipeline call share."""

    base: str
    adapter: str | None
    width: int | None
    height: int | None
    steps: int
    guidance: float


class GenerationServer:
    def __init__(self, *, redis_url: str, max_batch: int = 32, device: str | None = None,
                 image_max_batch: int = IMAGE_MAX_BATCH, image_batch_wait_ms: float = IMAGE_BATCH_WAIT_MS):
        import redis
        import torch

        self.redis = redis.Redis.from_url(redis_url)
        self.max_batch = max_batch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.engines: dict[str, Any] = {}
        self.pipelines: dict[str, Any] = {}
        self._images: queue.Queue = queue.Queue()
        self.image_max_batch = max(1, image_max_batch)
        self.image_batch_wait = max(0.0, image_batch_wait_ms) / 1000
        self._image_held: dict[str, Any] | None = None  # taken from the queue, did not fit the last batch
        # max_batch: the most images one pipeline call has drawn.
        self.image_stats = {"pipeline_calls": 0, "images": 0, "max_batch": 0}
        self.adapters: dict[str, dict[str, Any]] = {}  # adapter name -> where it is stored
        self._stopping = threading.Event()

    def engine_for(self, base: dict[str, Any]):
        from .loading import base_key, text_engine_load

        key = base_key(base)
        engine = self.engines.get(key)
        if engine is None:
            engine = text_engine_load(base, device=self.device, max_batch=self.max_batch, adapter_folder=self._adapter_folder)
            self.engines[key] = engine
            logger.info("engine loaded", extra={"base_model": base["name"], "device": self.device})
        return engine

    def _adapter_folder(self, name: str):
        from .loading import adapter_folder

        where = self.adapters[name]
        return adapter_folder(tenant_id=where["tenant_id"], adapter={"id": name, **where})

    def handle(self, message: dict[str, Any]) -> None:
        from .engine import Request
        from .loading import prompt_ids, sampling

        reply = message["reply"]
        if message.get("deadline") and time.time() > message["deadline"]:
            return
        if message.get("kind") == "image":
            self._images.put(message)
            return
        try:
            engine = self.engine_for(message["base"])
            adapter = message.get("adapter")
            if adapter:
                self.adapters[adapter["id"]] = {"tenant_id": message["tenant_id"], "prefix": adapter["prefix"],
                                                "manifest": adapter["manifest"]}
            ids = prompt_ids(engine.tokenizer, messages=message.get("messages"), prompt=message.get("prompt"))
            request = engine.submit(Request(prompt_ids=ids, adapter=adapter["id"] if adapter else None,
                                            params=sampling(message.get("params") or {})))
        except Exception as exc:  # answered, never left hanging
            self._send(reply, {"done": True, "finish_reason": "error", "error": str(exc),
                               "usage": {"prompt_tokens": 0, "completion_tokens": 0}})
            return
        threading.Thread(target=self._pump, args=(request, reply), daemon=True, name=f"reply-{message['id']}").start()

    # --- images: one diffusers pipeline per base model, requests waiting together drawn in one call ---

    def _image_loop(self) -> None:
        while not self._stopping.is_set():
            batch = self._image_batch_take()
            if batch:
                self._image_batch_run(batch)

    def _image_batch_take(self, *, timeout: float = 1.0) -> list[dict[str, Any]]:
        """The image requests to draw next: the oldest waiting (blocking up to `timeout`), then those
        already queued or arriving within the straggler window, up to image_max_batch images; a
        request that does not fit is held as the first of the next batch, so order is kept."""
        if self._image_held is not None:
            first, self._image_held = self._image_held, None
        else:
            try:
                first = self._images.get(timeout=timeout)
            except queue.Empty:
                return []
        batch, images = [first], _image_count(first)
        window_ends = time.monotonic() + self.image_batch_wait
        while images < self.image_max_batch:
            wait = window_ends - time.monotonic()
            try:
                message = self._images.get(timeout=wait) if wait > 0 else self._images.get_nowait()
            except queue.Empty:
                break
            if images + _image_count(message) > self.image_max_batch:
                self._image_held = message
                break
            batch.append(message)
            images += _image_count(message)
        return batch

    def _image_batch_run(self, messages: list[dict[str, Any]]) -> None:
        """Draws the requests in one pipeline call per ImageCall group (in order of arrival) and
        answers each on its own reply key; a group's failure is each of its requests' error."""
        import torch

        groups: dict[ImageCall, list[tuple[dict[str, Any], Any]]] = {}
        for message in messages:
            try:
                call = self._image_call(message)
                params = message.get("params") or {}
                generator = torch.Generator(device="cpu")
                if params.get("seed") is not None:
                    generator.manual_seed(params["seed"])
                else:
                    generator.seed()
            except Exception as exc:  # answered, never left hanging
                self._image_error(message, exc)
                continue
            groups.setdefault(call, []).append((message, generator))
        for call, waiting in groups.items():
            # Earlier groups take time: a request whose caller has given up is dropped, as in handle().
            group = [(message, generator) for message, generator in waiting
                     if not (message.get("deadline") and time.time() > message["deadline"])]
            if not group:
                continue
            try:
                drawn = self._draw(call, group)
            except Exception as exc:  # answered, never left hanging
                logger.warning("image call failed", extra={"requests": len(group), "error": str(exc)})
                for message, _ in group:
                    self._image_error(message, exc)
                continue
            for (message, _), images in zip(group, drawn):
                self._send(message["reply"], {"done": True, "finish_reason": "stop", "error": None, "images": images,
                                              "usage": {"images": len(images)}})

    @staticmethod
    def _image_call(message: dict[str, Any]) -> ImageCall:
        params = message.get("params") or {}
        if not isinstance(message.get("prompt"), str):
            raise TypeError("prompt: the text to draw")
        if not isinstance(params.get("negative_prompt") or "", str):
            raise TypeError("negative_prompt: text")
        from .loading import base_key

        adapter = message.get("adapter")
        return ImageCall(base=base_key(message["base"]),
                         adapter=f"{message['tenant_id']}:{adapter['id']}" if adapter else None,
                         width=params.get("width"), height=params.get("height"), steps=int(params.get("steps", 20)),
                         guidance=float(params.get("guidance", 7.5)))

    def _image_error(self, message: dict[str, Any], exc: Exception) -> None:
        self._send(message["reply"], {"done": True, "finish_reason": "error", "error": str(exc),
                                      "usage": {"images": 0}})

    def _pipeline_for(self, base: dict[str, Any]):
        from diffusers import StableDiffusionPipeline

        from .loading import base_folder, base_key

        key = base_key(base)
        pipeline = self.pipelines.get(key)
        if pipeline is None:
            folder = base_folder(base)
            pipeline = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
            pipeline.set_progress_bar_config(disable=True)
            self.pipelines[key] = pipeline.to(self.device)
        return pipeline

    def _draw(self, call: ImageCall, group: list[tuple[dict[str, Any], Any]]) -> list[list[str]]:
        """One pipeline call for requests sharing `call`: each request's PNG images as base64 strings.

        A request's n starting latents are drawn from its generator as the pipeline draws them for
        that request alone (one (n, …) tensor), and the per-image generator list repeats its
        generator n times, so a scheduler that adds noise at each step draws the request's share
        from its own generator too: what a request gets never depends on the others in the call."""
        import base64
        import io

        import torch
        from diffusers.utils.torch_utils import randn_tensor

        from .loading import adapter_folder

        first = group[0][0]
        pipeline = self._pipeline_for(first["base"])
        height = call.height or pipeline.unet.config.sample_size * pipeline.vae_scale_factor
        width = call.width or pipeline.unet.config.sample_size * pipeline.vae_scale_factor
        dtype = pipeline.text_encoder.dtype if pipeline.text_encoder is not None else pipeline.unet.dtype
        prompts: list[str] = []
        negatives: list[str] = []
        generators: list[Any] = []
        latents = []
        counts = []
        for message, generator in group:
            params = message.get("params") or {}
            n = _image_count(message)
            latents.append(randn_tensor((n, pipeline.unet.config.in_channels, height // pipeline.vae_scale_factor,
                                         width // pipeline.vae_scale_factor), generator=generator, dtype=dtype))
            prompts += [message["prompt"]] * n
            # diffusers encodes no negative prompt as "" for each image: the two are the same input.
            negatives += [params.get("negative_prompt") or ""] * n
            generators += [generator] * n
            counts.append(n)
        adapter = first.get("adapter")
        try:
            if adapter:  # inside the try: a LoRA that fails half-loaded must not stay for the next call
                folder = adapter_folder(tenant_id=first["tenant_id"], adapter=adapter)
                pipeline.load_lora_weights(str(folder), adapter_name=f"a{adapter['id'].replace('-', '')}")
            result = pipeline(prompt=prompts, negative_prompt=negatives if any(negatives) else None,
                              num_inference_steps=call.steps, guidance_scale=call.guidance, width=width, height=height,
                              generator=generators, latents=torch.cat(latents))
        finally:
            if adapter:
                pipeline.unload_lora_weights()
        stats = self.image_stats
        stats["pipeline_calls"] += 1
        stats["images"] += len(prompts)
        stats["max_batch"] = max(stats["max_batch"], len(prompts))
        logger.info("images drawn", extra={"requests": len(group), "batch_images": len(prompts),
                                           "pipeline_calls": stats["pipeline_calls"], "images_total": stats["images"],
                                           "max_batch": stats["max_batch"]})
        encoded = []
        for image in result.images:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            encoded.append(base64.b64encode(buffer.getvalue()).decode())
        drawn, start = [], 0
        for n in counts:
            drawn.append(encoded[start:start + n])
            start += n
        return drawn

    def _pump(self, request, reply: str) -> None:
        while (delta := request.deltas.get()) is not None:
            self._send(reply, {"delta": delta})
        request.wait()
        self._send(reply, {"done": True, "finish_reason": request.finish_reason, "error": request.error,
                           "usage": {"prompt_tokens": len(request.prompt_ids), "completion_tokens": request.generated}})

    def _send(self, reply: str, event: dict[str, Any]) -> None:
        pipe = self.redis.pipeline()
        pipe.rpush(reply, json.dumps(event))
        pipe.expire(reply, REPLY_TTL_SECONDS)
        pipe.execute()

    def serve(self) -> None:
        logger.info("generation server ready", extra={"device": self.device, "max_batch": self.max_batch})
        threading.Thread(target=self._image_loop, name="images", daemon=True).start()
        while not self._stopping.is_set():
            item = self.redis.blpop([REQUESTS_KEY], timeout=1)
            if item is None:
                continue
            try:
                message = json.loads(item[1])
            except ValueError:
                logger.warning("dropped a request that is not JSON")
                continue
            self.handle(message)
        for engine in self.engines.values():
            engine.stop()

    def stop(self) -> None:
        self._stopping.set()


def _image_count(message: dict[str, Any]) -> int:
    """The images a request asks for (the web tier checks n; a malformed one counts as one)."""
    try:
        return max(1, int((message.get("params") or {}).get("n", 1)))
    except (TypeError, ValueError):
        return 1


def main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lode.settings.dev")
    django.setup()
    from django.conf import settings

    server = GenerationServer(redis_url=settings.REDIS_URL,
                              max_batch=int(os.environ.get("LODE_GENERATION_MAX_BATCH", "32")),
                              image_max_batch=int(os.environ.get("LODE_IMAGE_MAX_BATCH", IMAGE_MAX_BATCH)),
                              image_batch_wait_ms=float(os.environ.get("LODE_IMAGE_BATCH_WAIT_MS",
                                                                       IMAGE_BATCH_WAIT_MS)))
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    server.serve()


if __name__ == "__main__":
    main()
