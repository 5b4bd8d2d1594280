"""Many LoRA adapters of one base model in one batch, each row with its own.

peft can run mixed-adapter batches (`adapter_names`), but it splits the batch into one sub-batch
per adapter in every adapted layer; with 8 adapters that was half the throughput of one. Here each
adapted layer keeps every loaded adapter's A and B stacked (slot 0 all zeros: the base model), and
a forward pass gathers each row's pair and applies it with two batched matmuls, whatever the mix:
y = base(x) + scale[row] * (x @ A[row]^T) @ B[row]^T.

Adapters are read from peft's saved format (adapter_config.json, adapter_model.safetensors): the
rank, lora_alpha (and use_rslora) give the scale; ranks may differ (smaller ones are zero-padded).
Plain torch; no Django."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

_A = ".lora_A.weight"
_B = ".lora_B.weight"


class _Adapted(nn.Module):
    """A base projection (nn.Linear, or GPT-2's Conv1D) plus the stacked adapters of its owner."""

    def __init__(self, base: nn.Module, owner: "MultiLoRA"):
        super().__init__()
        self.base = base
        self.owner = owner
        self.pairs: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}  # slot -> (A [r, in], B [out, r], scale)
        self._stacked: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def restack(self) -> None:
        if not self.pairs:
            self._stacked = None
            return
        slots = self.owner.slot_count
        rank = max(a.shape[0] for a, _, _ in self.pairs.values())
        a0, b0, _ = next(iter(self.pairs.values()))
        a_stack = torch.zeros((slots, rank, a0.shape[1]), dtype=a0.dtype, device=a0.device)
        b_stack = torch.zeros((slots, b0.shape[0], rank), dtype=b0.dtype, device=b0.device)
        scales = torch.zeros(slots, dtype=a0.dtype, device=a0.device)
        for slot, (a, b, scale) in self.pairs.items():
            a_stack[slot, : a.shape[0]] = a
            b_stack[slot, :, : b.shape[1]] = b
            scales[slot] = scale
        self._stacked = (a_stack, b_stack, scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        rows = self.owner.rows
        if self._stacked is None or rows is None or not bool(rows.any()):
            return result
        a_stack, b_stack, scales = self._stacked
        a = a_stack.index_select(0, rows)  # [batch, rank, in]
        b = b_stack.index_select(0, rows)  # [batch, out, rank]
        low = torch.bmm(x.to(a.dtype), a.transpose(1, 2))
        delta = torch.bmm(low, b.transpose(1, 2)) * scales.index_select(0, rows)[:, None, None]
        return result + delta.to(result.dtype)


class MultiLoRA:
    """Installs itself on a base model; load(), unload(), and `rows(names)` before each forward."""

    def __init__(self, model: nn.Module, *, max_slots: int = 64):
        self.model = model
        self.max_slots = max_slots
        self.slot_count = 1  # slot 0: the base model (no adapter)
        self.slots: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.layers: dict[str, _Adapted] = {}
        self.rows: torch.Tensor | None = None
        self._free: list[int] = []

    def load(self, name: str, folder: str | Path) -> int:
        """Reads an adapter saved by peft; returns its size in bytes."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        if config.get("peft_type", "LORA") != "LORA":
            raise ValueError(f"adapter {name!r} is {config.get('peft_type')}, not LoRA")
        weights = load_file(str(folder / "adapter_model.safetensors"))
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        slot = self._free.pop() if self._free else self.slot_count
        if slot == self.slot_count:
            if self.slot_count >= self.max_slots:
                raise ValueError("too many adapters loaded at once")
            self.slot_count += 1
        pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for key, tensor in weights.items():
            if key.endswith(_A):
                path = key[: -len(_A)]
                pairs[path] = (tensor, weights[path + _B])
        if not pairs:
            raise ValueError(f"adapter {name!r} holds no LoRA weights")
        size = 0
        for path, (a, b) in pairs.items():
            layer = self._layer(path)
            device, dtype = _weight_of(layer.base)
            layer.pairs[slot] = (a.to(device, dtype), b.to(device, dtype), scale)
            size += (a.numel() + b.numel()) * a.element_size()
        self.slots[name] = slot
        self.sizes[name] = size
        self._restack()
        return size

    def unload(self, name: str) -> None:
        slot = self.slots.pop(name)
        self.sizes.pop(name, None)
        for layer in self.layers.values():
            layer.pairs.pop(slot, None)
        self._free.append(slot)
        self._restack()

    def set_rows(self, names: list[str | None]) -> None:
        device, _ = _weight_of(next(iter(self.layers.values())).base) if self.layers else (torch.device("cpu"), None)
        self.rows = torch.tensor([self.slots[name] if name else 0 for name in names], device=device)

    def _restack(self) -> None:
        for layer in self.layers.values():
            layer.restack()

    def _layer(self, saved_path: str) -> _Adapted:
        """The adapted module for a saved key path (peft prefixes it with base_model.model.)."""
        path = saved_path.removeprefix("base_model.model.")
        if path in self.layers:
            return self.layers[path]
        parent_path, _, child = path.rpartition(".")
        parent = self.model.get_submodule(parent_path) if parent_path else self.model
        base = getattr(parent, child)
        if isinstance(base, _Adapted):
            return base
        adapted = _Adapted(base, self)
        setattr(parent, child, adapted)
        self.layers[path] = adapted
        return adapted


def _weight_of(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(module.parameters())
    return parameter.device, parameter.dtype
