"""Loading what generation runs on, from the artifact store (through workers.model_store): a
TextEngine for a stored causal LM (a catalog model, a tenant's upload or a fully fine-tuned model),
and the folders of LoRA adapters it serves. Shared by the generation server and batch jobs."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def base_key(base: dict[str, Any]) -> str:
    return f"{base.get('tenant_id') or 'catalog'}:{base['prefix']}:{base['manifest'].get('revision', '')}"


def base_folder(base: dict[str, Any]) -> Path:
    from workers.model_store import materialize_folder

    return materialize_folder(tenant_id=base.get("tenant_id"), prefix=base["prefix"],
                              cache_subdir=f"serving/{base.get('tenant_id') or 'catalog'}/{base['name']}",
                              manifest=base["manifest"])


def adapter_folder(*, tenant_id: str, adapter: dict[str, Any]) -> Path:
    from workers.model_store import materialize_folder

    return materialize_folder(tenant_id=tenant_id, prefix=adapter["prefix"], cache_subdir=f"tuned/{adapter['id']}",
                              manifest=adapter["manifest"])


def text_engine_load(base: dict[str, Any], *, device: str, max_batch: int, adapter_folder=None):
    """A started TextEngine on the base model (the caller stops it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .engine import TextEngine

    folder = base_folder(base)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return TextEngine(AutoModelForCausalLM.from_pretrained(folder), tokenizer, device=device, max_batch=max_batch,
                      adapter_folder=adapter_folder).start()


def prompt_ids(tokenizer, *, messages: list[dict[str, str]] | None = None, prompt: str | None = None) -> list[int]:
    """Token ids of a conversation (rendered by the model's chat template, as the trainer renders
    it, then tokenized as it stands) or of a plain prompt."""
    if messages is not None:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def sampling(params: dict[str, Any], *, seed: int | None = None):
    from .engine import SamplingParams

    return SamplingParams(max_tokens=params.get("max_tokens", 64), temperature=params.get("temperature", 1.0),
                          top_p=params.get("top_p", 1.0), top_k=params.get("top_k", 0),
                          repetition_penalty=params.get("repetition_penalty", 1.0), stop=tuple(params.get("stop") or ()),
                          seed=params.get("seed") if seed is None else seed)
