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
  {"done": true, "images": [base64 PNG, …], "usage": {"images": n}}; images run one request after
  another on a diffusers pipeline kept loaded per base model (its LoRA loaded for the request).
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
from typing import Any

logger = logging.getLogger(__name__)

REQUESTS_KEY = "lode:generation:requests"
REPLY_TTL_SECONDS = 120


class GenerationServer:
    def __init__(self, *, redis_url: str, max_batch: int = 32, device: str | None = None):
        import redis
        import torch

        self.redis = redis.Redis.from_url(redis_url)
        self.max_batch = max_batch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.engines: dict[str, Any] = {}
        self.pipelines: dict[str, Any] = {}
        self._images: queue.Queue = queue.Queue()
        self.adapters: dict[str, dict[str, Any]] = {}  # adapter name -> where it is stored
        self._stopping = threading.Event()

    def engine_for(self, base: dict[str, Any]):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from workers.model_store import materialize_folder

        from .engine import TextEngine

        key = f"{base.get('tenant_id') or 'catalog'}:{base['prefix']}:{base['manifest'].get('revision', '')}"
        engine = self.engines.get(key)
        if engine is None:
            folder = materialize_folder(tenant_id=base.get("tenant_id"), prefix=base["prefix"],
                                        cache_subdir=f"serving/{base.get('tenant_id') or 'catalog'}/{base['name']}",
                                        manifest=base["manifest"])
            tokenizer = AutoTokenizer.from_pretrained(folder)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            engine = TextEngine(AutoModelForCausalLM.from_pretrained(folder), tokenizer, device=self.device,
                                max_batch=self.max_batch, adapter_folder=self._adapter_folder).start()
            self.engines[key] = engine
            logger.info("engine loaded", extra={"base_model": base["name"], "device": self.device})
        return engine

    def _adapter_folder(self, name: str):
        from workers.model_store import materialize_folder

        where = self.adapters[name]
        return materialize_folder(tenant_id=where["tenant_id"], prefix=where["prefix"], cache_subdir=f"tuned/{name}",
                                  manifest=where["manifest"])

    def handle(self, message: dict[str, Any]) -> None:
        from .engine import Request, SamplingParams

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
            tokenizer = engine.tokenizer
            if message.get("messages") is not None:
                # As the trainer renders conversations: the template's text, tokenized as it stands.
                text = tokenizer.apply_chat_template(message["messages"], tokenize=False, add_generation_prompt=True)
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids = tokenizer(message["prompt"])["input_ids"]
            params = message.get("params") or {}
            request = engine.submit(Request(prompt_ids=ids, adapter=adapter["id"] if adapter else None, params=SamplingParams(
                max_tokens=params.get("max_tokens", 64), temperature=params.get("temperature", 1.0),
                top_p=params.get("top_p", 1.0), top_k=params.get("top_k", 0),
                repetition_penalty=params.get("repetition_penalty", 1.0), stop=tuple(params.get("stop") or ()),
                seed=params.get("seed"))))
        except Exception as exc:  # answered, never left hanging
            self._send(reply, {"done": True, "finish_reason": "error", "error": str(exc),
                               "usage": {"prompt_tokens": 0, "completion_tokens": 0}})
            return
        threading.Thread(target=self._pump, args=(request, reply), daemon=True, name=f"reply-{message['id']}").start()

    # --- images: one diffusers pipeline per base model, requests run one after another ---

    def _image_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._images.get(timeout=1)
            except queue.Empty:
                continue
            try:
                images = self._draw(message)
            except Exception as exc:  # answered, never left hanging
                self._send(message["reply"], {"done": True, "finish_reason": "error", "error": str(exc),
                                              "usage": {"images": 0}})
                continue
            self._send(message["reply"], {"done": True, "finish_reason": "stop", "error": None, "images": images,
                                          "usage": {"images": len(images)}})

    def _pipeline_for(self, base: dict[str, Any]):
        from diffusers import StableDiffusionPipeline

        from workers.model_store import materialize_folder

        key = f"{base.get('tenant_id') or 'catalog'}:{base['prefix']}:{base['manifest'].get('revision', '')}"
        pipeline = self.pipelines.get(key)
        if pipeline is None:
            folder = materialize_folder(tenant_id=base.get("tenant_id"), prefix=base["prefix"],
                                        cache_subdir=f"serving/{base.get('tenant_id') or 'catalog'}/{base['name']}",
                                        manifest=base["manifest"])
            pipeline = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
            pipeline.set_progress_bar_config(disable=True)
            self.pipelines[key] = pipeline.to(self.device)
        return pipeline

    def _draw(self, message: dict[str, Any]) -> list[str]:
        """PNG images as base64 strings."""
        import base64
        import io

        import torch

        from workers.model_store import materialize_folder

        pipeline = self._pipeline_for(message["base"])
        adapter = message.get("adapter")
        params = message.get("params") or {}
        if adapter:
            folder = materialize_folder(tenant_id=message["tenant_id"], prefix=adapter["prefix"],
                                        cache_subdir=f"tuned/{adapter['id']}", manifest=adapter["manifest"])
            pipeline.load_lora_weights(str(folder), adapter_name=f"a{adapter['id'].replace('-', '')}")
        try:
            generator = torch.Generator(device="cpu").manual_seed(params["seed"]) if params.get("seed") is not None else None
            result = pipeline(prompt=[message["prompt"]] * params.get("n", 1),
                              negative_prompt=[params["negative_prompt"]] * params.get("n", 1)
                              if params.get("negative_prompt") else None,
                              num_inference_steps=params.get("steps", 20), guidance_scale=params.get("guidance", 7.5),
                              width=params.get("width"), height=params.get("height"), generator=generator)
        finally:
            if adapter:
                pipeline.unload_lora_weights()
        encoded = []
        for image in result.images:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            encoded.append(base64.b64encode(buffer.getvalue()).decode())
        return encoded

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


def main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lode.settings.dev")
    django.setup()
    from django.conf import settings

    server = GenerationServer(redis_url=settings.REDIS_URL, max_batch=int(os.environ.get("LODE_GENERATION_MAX_BATCH", "32")))
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    server.serve()


if __name__ == "__main__":
    main()
