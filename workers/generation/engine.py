"""The text generation engine of a long-lived GPU worker: one base model kept loaded, requests
batched on the device with continuous batching, and LoRA fine-tunes of that base served side by
side in the same batch.

- Continuous batching: requests wait in a queue; each engine step first admits waiting requests
  (up to max_batch running) with one prefill forward pass for all of them (left-padded), then runs
  one decode forward pass for every running request. A request that finishes (end of sequence, a
  stop sequence, max_tokens) leaves the batch at once; its rows are dropped from the KV cache and
  columns no running request needs any more are trimmed.
- The KV cache is transformers' DynamicCache, edited in place between passes: new requests' caches
  are left-padded to the batch's length and concatenated; an attention mask marks the padding and
  each row carries its own position ids, so a row's computation is the one it would have alone.
- Several adapters, one batch: LoRA adapters of the base are applied per row by lora.MultiLoRA
  (each row's A and B gathered from stacks, two batched matmuls a layer, whatever the mix), so
  requests for different fine-tunes share the base weights and one pass. Adapters load on demand
  and the least recently used one not in use is evicted when the loaded adapters pass
  max_adapter_bytes.
- Sampling per row with the request's own seeded generator: repetition penalty, temperature
  (0 = greedy), top-k, top-p. The same request with the same seed gives the same tokens whether it
  runs alone or in a batch.

Plain torch and transformers: no Django. transformers' own continuous batching (generate_batch,
ContinuousBatchingManager) was measured first: on this CPU it ran 16 requests of 32 tokens in
17-29 s against 4.4 s for one model.generate call after another, and it has no per-row adapters;
hence this scheduler. peft's own mixed-adapter batches (adapter_names) were tried first: 8 adapters
ran at half the throughput of one; hence lora.py."""
from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

@dataclass
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def check(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens: at least 1")
        if self.temperature < 0:
            raise ValueError("temperature: at least 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p: above 0 and at most 1")
        if self.top_k < 0:
            raise ValueError("top_k: at least 0")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty: above 0")


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    adapter: str | None = None
    id: int = 0
    # What the engine fills in:
    output_ids: list[int] = field(default_factory=list)
    generated: int = 0  # tokens sampled, the end-of-sequence token included
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    submitted_at: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None
    # Text deltas as they are produced (None marks the end), for streaming.
    deltas: "queue.Queue[str | None]" = field(default_factory=queue.Queue)
    done: threading.Event = field(default_factory=threading.Event)
    _generator: torch.Generator | None = None
    _emitted: int = 0  # characters of text already sent as deltas

    def wait(self, timeout: float | None = None) -> "Request":
        if not self.done.wait(timeout):
            raise TimeoutError("generation did not finish in time")
        return self


@dataclass
class EngineStats:
    forward_passes: int = 0
    prefill_passes: int = 0
    decode_passes: int = 0
    tokens: int = 0
    max_running: int = 0


class TextEngine:
    def __init__(self, model, tokenizer, *, device: torch.device | str = "cpu", max_batch: int = 32,
                 adapter_folder: Callable[[str], Path] | None = None, max_adapter_bytes: int = 512 * 1024**2):
        self.model = model.to(device).eval()
        self.lora = None  # MultiLoRA, once an adapter is asked for
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.context = int(getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 2048))
        self.eos = set(filter(lambda token: token is not None, [tokenizer.eos_token_id]))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.adapter_folder = adapter_folder
        self.max_adapter_bytes = max_adapter_bytes
        self.adapters: collections.OrderedDict[str, int] = collections.OrderedDict()  # name -> bytes, LRU order
        self.stats = EngineStats()
        self._ids = itertools.count(1)
        self._waiting: collections.deque[Request] = collections.deque()
        self._running: list[Request] = []
        self._cache = None
        self._mask: torch.Tensor | None = None  # [rows, cache length]: 1 real, 0 padding
        self._positions: torch.Tensor | None = None  # [rows]: the next position of each row
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # --- submitting ---

    def submit(self, request: Request) -> Request:
        return self.submit_many([request])[0]

    def submit_many(self, requests: list[Request]) -> list[Request]:
        """Queues requests together (they arrive in the same step); each is checked first, and
        none is queued when one is refused."""
        for request in requests:
            self._check(request)
        for request in requests:
            request.id = next(self._ids)
            request.submitted_at = time.monotonic()
            seed = request.params.seed if request.params.seed is not None else torch.seed() % 2**63
            request._generator = torch.Generator(device="cpu").manual_seed(seed)
        with self._lock:
            self._waiting.extend(requests)
            self._lock.notify()
        return requests

    def _check(self, request: Request) -> None:
        request.params.check()
        if not request.prompt_ids:
            raise ValueError("prompt: empty")
        if len(request.prompt_ids) + request.params.max_tokens > self.context:
            raise ValueError(f"prompt and max_tokens: {len(request.prompt_ids)} + {request.params.max_tokens} tokens "
                             f"exceed the model's context of {self.context}")
        if request.adapter is not None and request.adapter not in self.adapters and self.adapter_folder is None:
            raise ValueError(f"model: no adapter {request.adapter!r} is loaded and none can be")

    def generate(self, prompt_ids: list[int], params: SamplingParams | None = None, adapter: str | None = None,
                 timeout: float | None = 300) -> Request:
        """Submits and waits (the engine must be running: start())."""
        return self.submit(Request(prompt_ids=list(prompt_ids), params=params or SamplingParams(),
                                   adapter=adapter)).wait(timeout)

    # --- the loop ---

    def start(self) -> "TextEngine":
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="text-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._waiting and not self._running:
                    self._lock.wait()
                if self._stopping:
                    return
            self.step()

    @torch.inference_mode()
    def step(self) -> None:
        """One scheduling step: admit waiting requests (one prefill pass), then one decode pass."""
        with self._lock:
            room = self.max_batch - len(self._running)
            admitted = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        if admitted:
            try:
                self._admit(admitted)
            except Exception as exc:  # e.g. an adapter that cannot load: those requests fail, not the engine
                for request in admitted:
                    if not request.done.is_set():
                        self._finish(request, "error", error=f"{type(exc).__name__}: {exc}")
        if self._running:
            try:
                self._decode()
            except Exception as exc:  # the batch is lost; its requests fail with the reason, the engine goes on
                for request in self._running:
                    self._finish(request, "error", error=f"{type(exc).__name__}: {exc}")
                self._running, self._cache, self._mask, self._positions = [], None, None, None
        self.stats.max_running = max(self.stats.max_running, len(self._running))

    # --- adapters ---

    def _ensure_adapters(self, names: set[str]) -> None:
        from .lora import MultiLoRA

        for name in names:
            if name in self.adapters:
                self.adapters.move_to_end(name)
                continue
            if self.lora is None:
                self.lora = MultiLoRA(self.model)
            self.adapters[name] = self.lora.load(name, self.adapter_folder(name))
            self._evict(keep=names)

    def _evict(self, keep: set[str]) -> None:
        in_use = keep | {request.adapter for request in self._running if request.adapter}
        while sum(self.adapters.values()) > self.max_adapter_bytes:
            victim = next((name for name in self.adapters if name not in in_use), None)
            if victim is None:
                return
            self.lora.unload(victim)
            del self.adapters[victim]

    def _rows(self, requests: list[Request]) -> None:
        """Tells the adapted layers which adapter each row of the next pass uses."""
        if self.lora is not None:
            self.lora.set_rows([request.adapter for request in requests])

    # --- passes ---

    def _forward(self, **inputs: Any):
        self.stats.forward_passes += 1
        return self.model(**inputs, use_cache=True)

    def _admit(self, requests: list[Request]) -> None:
        from transformers import DynamicCache

        wanted = {request.adapter for request in requests if request.adapter}
        if wanted:
            self._ensure_adapters(wanted)
        width = max(len(request.prompt_ids) for request in requests)
        ids = torch.tensor([[self.pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids for r in requests],
                           device=self.device)
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in requests],
                            device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self._rows(requests)
        output = self._forward(input_ids=ids, attention_mask=mask, position_ids=positions,
                               past_key_values=DynamicCache(config=self.model.config))
        self.stats.prefill_passes += 1
        logits = output.logits[:, -1, :]
        tokens = [self._sample(request, logits[row]) for row, request in enumerate(requests)]
        self._join(requests, output.past_key_values, mask, torch.tensor([len(r.prompt_ids) for r in requests],
                                                                       device=self.device))
        self._record(requests, tokens)

    def _join(self, requests: list[Request], cache, mask: torch.Tensor, positions: torch.Tensor) -> None:
        """New rows (their cache, mask and positions) into the running batch."""
        if self._cache is None:
            self._cache, self._mask, self._positions = cache, mask, positions
        else:
            old, new = self._mask.shape[1], mask.shape[1]
            length = max(old, new)
            for running_layer, new_layer in zip(self._cache.layers, cache.layers):
                running_layer.keys = torch.cat([_left_pad(running_layer.keys, length), _left_pad(new_layer.keys, length)])
                running_layer.values = torch.cat([_left_pad(running_layer.values, length),
                                                  _left_pad(new_layer.values, length)])
            self._mask = torch.cat([_left_pad(self._mask, length, dim=1), _left_pad(mask, length, dim=1)])
            self._positions = torch.cat([self._positions, positions])
        self._running.extend(requests)

    def _decode(self) -> None:
        requests = self._running
        last = torch.tensor([[request.output_ids[-1]] for request in requests], device=self.device)
        self._mask = torch.cat([self._mask, torch.ones((len(requests), 1), dtype=self._mask.dtype, device=self.device)], 1)
        self._rows(requests)
        output = self._forward(input_ids=last, attention_mask=self._mask, position_ids=self._positions.unsqueeze(1),
                               past_key_values=self._cache)
        self.stats.decode_passes += 1
        self._cache = output.past_key_values
        self._positions = self._positions + 1
        logits = output.logits[:, -1, :]
        tokens = [self._sample(request, logits[row]) for row, request in enumerate(requests)]
        self._record(requests, tokens)

    def _record(self, requests: list[Request], tokens: list[int]) -> None:
        now = time.monotonic()
        finished_rows = []
        for row, (request, token) in enumerate(zip(requests, tokens)):
            if request.first_token_at is None:
                request.first_token_at = now
            self.stats.tokens += 1
            request.generated += 1
            if token in self.eos:
                self._flush_text(request, final=True)
                self._finish(request, "stop")
                finished_rows.append(request)
                continue
            request.output_ids.append(token)
            stopped = self._flush_text(request, final=False)
            if stopped:
                self._finish(request, "stop")
                finished_rows.append(request)
            elif len(request.output_ids) >= request.params.max_tokens:
                self._flush_text(request, final=True)
                self._finish(request, "length")
                finished_rows.append(request)
        if finished_rows:
            self._drop(finished_rows)

    def _drop(self, finished: list[Request]) -> None:
        gone = {request.id for request in finished}
        keep = [row for row, request in enumerate(self._running) if request.id not in gone]
        self._running = [self._running[row] for row in keep]
        if not keep:
            self._cache = self._mask = self._positions = None
            return
        index = torch.tensor(keep, device=self.device)
        self._mask = self._mask.index_select(0, index)
        # Columns that are padding in every remaining row are no longer needed.
        used = self._mask.any(0).nonzero()
        start = int(used[0]) if len(used) else 0
        self._mask = self._mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]
        self._positions = self._positions.index_select(0, index)

    # --- tokens and text ---

    def _sample(self, request: Request, logits: torch.Tensor) -> int:
        params = request.params
        logits = logits.float()
        if params.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(request.prompt_ids + request.output_ids)), device=logits.device)
            values = logits.index_select(0, seen)
            values = torch.where(values > 0, values / params.repetition_penalty, values * params.repetition_penalty)
            logits = logits.index_copy(0, seen, values)
        if params.temperature == 0:
            return int(logits.argmax())
        logits = logits / params.temperature
        if params.top_k:
            threshold = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < threshold, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if params.top_p < 1.0:
            ordered, order = probs.sort(descending=True)
            cumulative = ordered.cumsum(0)
            cut = cumulative - ordered > params.top_p  # keep the smallest set reaching top_p
            ordered = ordered.masked_fill(cut, 0.0)
            probs = torch.zeros_like(probs).scatter(0, order, ordered)
        return int(torch.multinomial(probs.cpu(), 1, generator=request._generator))

    def _flush_text(self, request: Request, *, final: bool) -> bool:
        """Decodes the output so far; sends what is settled as a delta. True when a stop sequence
        appeared (the text is cut before it)."""
        text = self.tokenizer.decode(request.output_ids, skip_special_tokens=True)
        stopped = False
        for stop in request.params.stop:
            at = text.find(stop)
            if at >= 0:
                text, stopped = text[:at], True
        settled = len(text)
        if not final and not stopped:
            if text.endswith("\ufffd"):  # a character cut between tokens
                settled = len(text.rstrip("\ufffd"))
            for stop in request.params.stop:  # hold back what may be the start of a stop sequence
                for size in range(min(len(stop) - 1, settled), 0, -1):
                    if text[:settled].endswith(stop[:size]):
                        settled -= size
                        break
        request.text = text
        if settled > request._emitted:
            request.deltas.put(text[request._emitted:settled])
            request._emitted = settled
        return stopped

    def _finish(self, request: Request, reason: str, *, error: str | None = None) -> None:
        if request._emitted < len(request.text) and error is None:
            request.deltas.put(request.text[request._emitted:])
            request._emitted = len(request.text)
        request.finish_reason = reason
        request.error = error
        request.finished_at = time.monotonic()
        request.deltas.put(None)
        request.done.set()


def _left_pad(tensor: torch.Tensor, length: int, *, dim: int = -2) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=tensor.dtype, device=tensor.device), tensor], dim=dim)
