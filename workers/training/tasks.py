"""The text fine-tune tasks as TaskRunners for the shared loop: causal LM SFT (padding-free packed
batches), sequence classification, and DPO. Each owns its model (plain or wrapped by peft) and its
examples; batches are lists of example indexes, shuffled per epoch from the seed."""
from __future__ import annotations

import math
import random
from typing import Any

import torch
import torch.nn.functional as F

from .text import IGNORE, Example


def _order(count: int, *, seed: int, epoch: int, batch_size: int) -> list[list[int]]:
    indexes = list(range(count))
    random.Random(seed * 1_000_003 + epoch).shuffle(indexes)
    return [indexes[start:start + batch_size] for start in range(0, count, batch_size)]


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


class _Base:
    def __init__(self, model: torch.nn.Module, *, hp: dict[str, Any], device: torch.device):
        self.model = model
        self.hp = hp
        self.device = device

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def train_mode(self, training: bool) -> None:
        self.model.train(training)

    @property
    def module(self) -> torch.nn.Module:
        """The model itself, unwrapped from DistributedDataParallel when training on several devices."""
        from torch.nn.parallel import DistributedDataParallel

        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def trainable_state(self) -> dict[str, torch.Tensor]:
        if _is_peft(self.module):
            from peft import get_peft_model_state_dict

            return get_peft_model_state_dict(self.module)
        return self.module.state_dict()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        if _is_peft(self.module):
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.module, state)
        else:
            self.module.load_state_dict(state)


def _sequence_batch(examples: list[Example], *, packing: bool, pad_id: int, device: torch.device,
                    max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Packing: the examples are packed first-fit (longest first) into rows of at most max_length
    tokens, positions restarting at each example; with no attention mask, transformers reads the
    restarts as sequence boundaries and attends within each example only. Rows are then padded to
    the longest row (the padding is a sequence of its own, never a label). Attention then costs
    rows x max_length^2, not (batch x max_length)^2 as one long row would. Without packing: each
    example in its own row, right-padded to the longest example."""
    if packing:
        limit = max(max_length or 0, max(len(example.input_ids) for example in examples))
        rows: list[list[Example]] = []
        room: list[int] = []
        for example in sorted(examples, key=lambda item: -len(item.input_ids)):
            size = len(example.input_ids)
            for index, free in enumerate(room):
                if size <= free:
                    rows[index].append(example)
                    room[index] -= size
                    break
            else:
                rows.append([example])
                room.append(limit - size)
        width = max(limit - free for free in room)
        ids_rows, label_rows, position_rows = [], [], []
        for row in rows:
            ids: list[int] = []
            labels: list[int] = []
            positions: list[int] = []
            for example in row:
                ids += example.input_ids
                labels += [IGNORE] + example.labels[1:]  # the first token is never predicted across examples
                positions += range(len(example.input_ids))
            tail = width - len(ids)
            ids_rows.append(ids + [pad_id] * tail)
            label_rows.append(labels + [IGNORE] * tail)
            position_rows.append(positions + list(range(tail)))
        return {
            "input_ids": torch.tensor(ids_rows, device=device),
            "labels": torch.tensor(label_rows, device=device),
            "position_ids": torch.tensor(position_rows, device=device),
        }
    width = max(len(example.input_ids) for example in examples)
    ids = [example.input_ids + [pad_id] * (width - len(example.input_ids)) for example in examples]
    labels = [example.labels + [IGNORE] * (width - len(example.labels)) for example in examples]
    mask = [[1] * len(example.input_ids) + [0] * (width - len(example.input_ids)) for example in examples]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }


def _token_log_probs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position log-probability of each labeled next token, and the mask of labeled positions."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE
    log_probs = torch.gather(F.log_softmax(logits.float(), dim=-1), 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return log_probs * mask, mask


class SFTRunner(_Base):
    """Causal LM supervised fine-tuning: mean cross-entropy over the response tokens."""

    def __init__(self, model, tokenizer, *, train: list[Example], validation: list[Example], hp: dict[str, Any],
                 device: torch.device):
        super().__init__(model, hp=hp, device=device)
        self.tokenizer = tokenizer
        self.train = train
        self.validation = validation
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.packing = hp.get("packing", True)
        self.max_length = max((len(example.input_ids) for example in train), default=hp["max_seq_length"])

    def train_batches(self, epoch: int) -> list[list[int]]:
        return _order(len(self.train), seed=self.hp["seed"], epoch=epoch, batch_size=self.hp["batch_size"])

    def _loss(self, examples: list[Example]) -> tuple[torch.Tensor, int, int]:
        batch = _sequence_batch(examples, packing=self.packing, pad_id=self.pad_id, device=self.device,
                                max_length=self.max_length)
        log_probs, mask = _token_log_probs(self.model, batch)
        labeled = int(mask.sum())
        return -log_probs.sum() / max(labeled, 1), labeled, sum(len(example.input_ids) for example in examples)

    def train_loss(self, batch: list[int]) -> tuple[torch.Tensor, int]:
        loss, _labeled, tokens = self._loss([self.train[index] for index in batch])
        return loss, tokens

    def evaluate(self) -> dict[str, float]:
        if not self.validation:
            return {}
        total, count = 0.0, 0
        size = self.hp["batch_size"]
        for start in range(0, len(self.validation), size):
            loss, labeled, _ = self._loss(self.validation[start:start + size])
            total += float(loss) * labeled
            count += labeled
        val_loss = total / max(count, 1)
        return {"val_loss": val_loss, "perplexity": math.exp(min(val_loss, 50.0))}


class ClassificationRunner(_Base):
    """Sequence classification: single-label (cross-entropy) or multi-label (binary cross-entropy)."""

    def __init__(self, model, tokenizer, *, train: tuple[list[str], list[list[str]]],
                 validation: tuple[list[str], list[list[str]]], label_names: list[str], hp: dict[str, Any],
                 device: torch.device):
        super().__init__(model, hp=hp, device=device)
        self.tokenizer = tokenizer
        self.label_names = label_names
        self.index = {name: number for number, name in enumerate(label_names)}
        self.multi_label = any(len(labels) != 1 for labels in train[1])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.train = self._encode(*train)
        self.validation = self._encode(*validation)
        counts = [0] * len(label_names)
        for _ids, labels in self.train:
            for label in labels:
                counts[label] += 1
        self.majority = max(range(len(counts)), key=counts.__getitem__)

    def _encode(self, texts: list[str], labels: list[list[str]]) -> list[tuple[list[int], list[int]]]:
        encoded = []
        ids = self.tokenizer(texts, truncation=True, max_length=self.hp["max_seq_length"], add_special_tokens=True)["input_ids"] if texts else []
        for token_ids, names in zip(ids, labels):
            known = [self.index[name] for name in names if name in self.index]
            if token_ids and known:
                encoded.append((token_ids, known))
        return encoded

    def train_batches(self, epoch: int) -> list[list[int]]:
        return _order(len(self.train), seed=self.hp["seed"], epoch=epoch, batch_size=self.hp["batch_size"])

    def _forward(self, items: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids, _ in items)
        input_ids = torch.tensor([ids + [self.pad_id] * (width - len(ids)) for ids, _ in items], device=self.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in items], device=self.device)
        logits = self.model(input_ids=input_ids, attention_mask=mask).logits.float()
        if self.multi_label:
            target = torch.zeros(len(items), len(self.label_names), device=self.device)
            for row, (_ids, labels) in enumerate(items):
                target[row, labels] = 1.0
            loss = F.binary_cross_entropy_with_logits(logits, target)
        else:
            target = torch.tensor([labels[0] for _ids, labels in items], device=self.device)
            loss = F.cross_entropy(logits, target)
        return loss, logits

    def train_loss(self, batch: list[int]) -> tuple[torch.Tensor, int]:
        items = [self.train[index] for index in batch]
        loss, _ = self._forward(items)
        return loss, sum(len(ids) for ids, _ in items)

    def predict(self, texts: list[str]) -> list[list[str]]:
        encoded = self.tokenizer(texts, truncation=True, max_length=self.hp["max_seq_length"])["input_ids"]
        items = [(ids or [self.pad_id], [0]) for ids in encoded]
        predictions = []
        for start in range(0, len(items), self.hp["batch_size"]):
            _, logits = self._forward(items[start:start + self.hp["batch_size"]])
            for row in logits:
                if self.multi_label:
                    predictions.append([self.label_names[i] for i in range(len(row)) if row[i] > 0])
                else:
                    predictions.append([self.label_names[int(row.argmax())]])
        return predictions

    def evaluate(self) -> dict[str, float]:
        if not self.validation:
            return {}
        total, predicted, gold = 0.0, [], []
        size = self.hp["batch_size"]
        for start in range(0, len(self.validation), size):
            items = self.validation[start:start + size]
            loss, logits = self._forward(items)
            total += float(loss) * len(items)
            for row, (_ids, labels) in zip(logits, items):
                predicted.append({i for i in range(len(row)) if row[i] > 0} if self.multi_label else {int(row.argmax())})
                gold.append(set(labels))
        accuracy = sum(p == g for p, g in zip(predicted, gold)) / len(gold)
        majority = sum(g == {self.majority} for g in gold) / len(gold)
        f1s = []
        for label in range(len(self.label_names)):
            tp = sum(label in p and label in g for p, g in zip(predicted, gold))
            fp = sum(label in p and label not in g for p, g in zip(predicted, gold))
            fn = sum(label not in p and label in g for p, g in zip(predicted, gold))
            if tp + fp + fn:
                f1s.append(2 * tp / (2 * tp + fp + fn))
        return {"val_loss": total / len(gold), "accuracy": accuracy, "f1_macro": sum(f1s) / max(len(f1s), 1),
                "majority_baseline_accuracy": majority}


class DPORunner(_Base):
    """Direct preference optimisation: -log sigmoid(beta x (policy margin - reference margin)).
    The reference is the model before training; its log-probabilities are computed once, up front
    (with the LoRA adapter disabled, or before the first step for a full fine-tune)."""

    def __init__(self, model, tokenizer, *, train: list[tuple[Example, Example]], validation: list[tuple[Example, Example]],
                 hp: dict[str, Any], device: torch.device):
        super().__init__(model, hp=hp, device=device)
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.train = train
        self.validation = validation
        self.beta = hp["dpo_beta"]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self.reference_train = self._reference(train)
            self.reference_validation = self._reference(validation)
        model.train(was_training)

    def _reference(self, pairs: list[tuple[Example, Example]]) -> torch.Tensor:
        values = []
        size = self.hp["batch_size"]
        for start in range(0, len(pairs), size):
            chunk = pairs[start:start + size]
            if _is_peft(self.model):
                with self.model.disable_adapter():
                    values.append(self._sequence_log_probs(chunk))
            else:
                values.append(self._sequence_log_probs(chunk))
        return torch.cat(values) if values else torch.empty(0, 2)

    def _sequence_log_probs(self, pairs: list[tuple[Example, Example]]) -> torch.Tensor:
        """[pairs, 2]: summed log-probability of the chosen and of the rejected response."""
        examples = [example for pair in pairs for example in pair]
        batch = _sequence_batch(examples, packing=False, pad_id=self.pad_id, device=self.device)
        log_probs, _mask = _token_log_probs(self.model, batch)
        return log_probs.sum(-1).view(len(pairs), 2)

    def _loss(self, pairs, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        policy = self._sequence_log_probs(pairs)
        reference = reference.to(policy.device)
        margin = self.beta * ((policy[:, 0] - reference[:, 0]) - (policy[:, 1] - reference[:, 1]))
        return -F.logsigmoid(margin).mean(), margin.detach()

    def train_batches(self, epoch: int) -> list[list[int]]:
        return _order(len(self.train), seed=self.hp["seed"], epoch=epoch, batch_size=self.hp["batch_size"])

    def train_loss(self, batch: list[int]) -> tuple[torch.Tensor, int]:
        pairs = [self.train[index] for index in batch]
        loss, _ = self._loss(pairs, self.reference_train[batch])
        return loss, sum(len(chosen.input_ids) + len(rejected.input_ids) for chosen, rejected in pairs)

    def evaluate(self) -> dict[str, float]:
        if not self.validation:
            return {}
        losses, margins = [], []
        size = self.hp["batch_size"]
        for start in range(0, len(self.validation), size):
            loss, margin = self._loss(self.validation[start:start + size], self.reference_validation[start:start + size])
            losses.append(float(loss) * len(margin))
            margins.append(margin)
        margin = torch.cat(margins)
        return {"val_loss": sum(losses) / len(margin), "reward_margin": float(margin.mean()) / self.beta,
                "reward_accuracy": float((margin > 0).float().mean())}
