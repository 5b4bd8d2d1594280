"""The trainer's parts without the job around them: hyperparameter checks, chat examples with the
loss on the response only, padding-free packing, the schedule, exact resumption from a checkpoint,
early stopping, and the estimate. Real tiny models (built once under MODEL_CACHE_DIR), no database."""
from __future__ import annotations

import math

import pytest
import torch

from lode.core.errors import ValidationFailed
from lode.training.hyperparameters import compute_estimate, hyperparameters_validate
from tests.training.conftest import instruction_rows
from workers.training import loop
from workers.training.finetune import build_text_runner, split_rows
from workers.training.tasks import _sequence_batch, _token_log_probs
from workers.training.text import IGNORE, chat_example, row_messages


@pytest.fixture(scope="module")
def gpt2_folder():
    from django.conf import settings

    from workers.tiny_models import TINY_GPT2
    from workers.tiny_models.build import build_all

    [built] = [model for model in build_all(root=settings.MODEL_CACHE_DIR / "build", names=[TINY_GPT2])
               if model.name == TINY_GPT2]
    return built.folder


class _Quiet:
    def __init__(self):
        self.checkpoints: list[tuple[int, bytes]] = []
        self.evaluations: list[dict] = []

    def metrics(self, values): ...

    def evaluation(self, values):
        self.evaluations.append(values)

    def checkpoint(self, step, data, summary):
        self.checkpoints.append((step, data))

    def progress(self, fraction, message): ...

    def check_cancelled(self): ...


def _hp(**given):
    return hyperparameters_validate("sft", "lora", {"learning_rate": 1e-3, "batch_size": 4, "log_every_steps": 1,
                                                    "eval_every_steps": 1000, "checkpoint_every_steps": 1000, **given})


# --- Hyperparameters --------------------------------------------------------------------------


def test_hyperparameters_fill_defaults_per_task_and_method():
    lora = hyperparameters_validate("sft", "lora", {})
    full = hyperparameters_validate("classification", "full", {"epochs": 2})

    assert (lora["learning_rate"], lora["lora_rank"], lora["packing"], lora["epochs"]) == (2e-4, 8, True, 3)
    assert full["epochs"] == 2 and "lora_rank" not in full and "packing" not in full


@pytest.mark.parametrize("given, field, words", [
    ({"epochz": 1}, "hyperparameters.epochz", "unknown"),
    ({"epochs": 0}, "hyperparameters.epochs", "at least 1"),
    ({"epochs": 1.5}, "hyperparameters.epochs", "an integer"),
    ({"epochs": True}, "hyperparameters.epochs", "an integer"),
    ({"learning_rate": "fast"}, "hyperparameters.learning_rate", "a number"),
    ({"learning_rate": 2.0}, "hyperparameters.learning_rate", "at most 1"),
    ({"lr_scheduler": "exponential"}, "hyperparameters.lr_scheduler", "one of linear"),
    ({"dpo_beta": 0.1}, "hyperparameters.dpo_beta", "applies to dpo"),
    ({"lora_target_modules": []}, "hyperparameters.lora_target_modules", "non-empty"),
    ({"packing": "yes"}, "hyperparameters.packing", "true or false"),
])
def test_bad_hyperparameters_are_refused_naming_the_key(given, field, words):
    with pytest.raises(ValidationFailed) as raised:
        hyperparameters_validate("sft", "lora", given)

    assert raised.value.details["field"] == field
    assert words in raised.value.message


def test_lora_keys_are_refused_for_a_full_fine_tune():
    with pytest.raises(ValidationFailed) as raised:
        hyperparameters_validate("sft", "full", {"lora_rank": 4})

    assert raised.value.details["field"] == "hyperparameters.lora_rank"


def test_estimate_scales_with_tokens_epochs_and_devices():
    one = compute_estimate(gpu_class="h100", parameter_count=500_000_000, train_chars=4_000_000, epochs=1, method="lora")
    three = compute_estimate(gpu_class="h100", parameter_count=500_000_000, train_chars=4_000_000, epochs=3, method="lora")
    split = compute_estimate(gpu_class="h100", parameter_count=500_000_000, train_chars=4_000_000, epochs=3, method="lora",
                             gpus=2)

    assert one["tokens"] == 1_000_000 and three["tokens"] == 3_000_000
    assert three["seconds"] - 30 == pytest.approx(3 * (one["seconds"] - 30), rel=1e-3)
    assert split["seconds"] < three["seconds"] and split["gpu_seconds"] == pytest.approx(2 * split["seconds"], rel=1e-6)


# --- Examples and batches -------------------------------------------------------------------------


def test_chat_example_puts_the_loss_on_the_response_and_its_end_of_turn_only(gpt2_folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gpt2_folder)
    row = {"system": "Be brief.", "prompt": "Where is my parcel?", "response": "It left the depot today."}

    example = chat_example(tokenizer, row_messages(row), max_length=256)
    labeled = [token for token in example.labels if token != IGNORE]

    assert len(example.input_ids) == len(example.labels)
    assert tokenizer.decode(labeled).startswith("It left the depot today.")
    assert tokenizer.eos_token in tokenizer.decode(labeled)
    assert "Where is my parcel" not in tokenizer.decode(labeled)
    assert example.input_ids[-len(labeled):] == labeled


def test_chat_example_trains_on_every_assistant_turn_of_a_conversation(gpt2_folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gpt2_folder)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."},
                {"role": "user", "content": "Refund?"}, {"role": "assistant", "content": "Sent yesterday."}]

    example = chat_example(tokenizer, messages, max_length=256)
    text = tokenizer.decode([token for token in example.labels if token != IGNORE])

    assert "Hello there." in text and "Sent yesterday." in text and "Refund?" not in text


def test_example_truncated_before_its_response_is_dropped(gpt2_folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gpt2_folder)
    row = {"prompt": "word " * 200, "response": "the answer"}

    assert chat_example(tokenizer, row_messages(row), max_length=16) is None


@pytest.mark.parametrize("rows_of", ["longest", 256])
def test_packed_batch_gives_the_same_loss_as_padded_examples(gpt2_folder, rows_of):
    """Packing attends within each example only: the loss of packed rows equals the loss of the
    same examples padded side by side, with far fewer padding tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gpt2_folder)
    model = AutoModelForCausalLM.from_pretrained(gpt2_folder).eval()
    examples = [chat_example(tokenizer, row_messages(row), max_length=256) for row in instruction_rows(9, seed=3)]
    examples[0].input_ids, examples[0].labels = examples[0].input_ids * 2, examples[0].labels * 2  # one long one
    pad = tokenizer.pad_token_id
    limit = max(len(e.input_ids) for e in examples) if rows_of == "longest" else rows_of
    cpu = torch.device("cpu")

    packed_batch = _sequence_batch(examples, packing=True, pad_id=pad, device=cpu, max_length=limit)
    padded_batch = _sequence_batch(examples, packing=False, pad_id=pad, device=cpu)
    with torch.no_grad():
        packed, packed_mask = _token_log_probs(model, packed_batch)
        padded, padded_mask = _token_log_probs(model, padded_batch)

    assert int(packed_mask.sum()) == int(padded_mask.sum()) > 0
    assert float(packed.sum()) == pytest.approx(float(padded.sum()), rel=1e-4)
    rows, width = packed_batch["input_ids"].shape
    assert width <= limit and rows < len(examples)
    assert packed_batch["input_ids"].numel() < padded_batch["input_ids"].numel()
    assert int((packed_batch["input_ids"] != pad).sum()) == sum(len(e.input_ids) for e in examples)


def test_split_is_seeded_and_keeps_at_least_one_row_each_side():
    rows = list(range(50))

    train, held = split_rows(rows, fraction=0.1, seed=7)
    again = split_rows(rows, fraction=0.1, seed=7)

    assert (train, held) == again and len(held) == 5 and sorted(train + held) == rows
    assert split_rows([1, 2], fraction=0.01, seed=0)[1] and split_rows([1, 2], fraction=0.0, seed=0) == ([1, 2], [])


@pytest.mark.parametrize("schedule, expected", [
    ("linear", [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]),
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
])
def test_schedule_warms_up_then_decays(schedule, expected):
    factor = loop.lr_lambda(schedule, warmup_steps=2, total_steps=6)

    assert [round(factor(step), 6) for step in range(6)] == expected


def test_cosine_schedule_ends_at_zero():
    factor = loop.lr_lambda("cosine", warmup_steps=0, total_steps=10)

    assert factor(0) == 1.0 and factor(5) == pytest.approx(0.5) and factor(10) == pytest.approx(0.0, abs=1e-12)


# --- The loop ------------------------------------------------------------------------------------------


def _runner(folder, hp, rows):
    from workers.training.finetune import _seed_everything

    _seed_everything(hp["seed"])
    train, validation = split_rows(rows, fraction=0.2, seed=hp["seed"])
    return build_text_runner(task="sft", method="lora", folder=folder, hp=hp, device=torch.device("cpu"),
                             train_rows=train, validation_rows=validation).runner


def test_resuming_from_a_checkpoint_ends_with_the_same_weights_as_an_uninterrupted_run(gpt2_folder):
    """Weights, optimizer, scheduler, RNG (dropout) and data position all come back: the resumed
    run's last step and weights are those of the run that never stopped."""
    rows = instruction_rows(40, seed=1)
    hp = _hp(epochs=2, checkpoint_every_steps=5, lora_dropout=0.1)

    straight = _runner(gpt2_folder, hp, rows)
    straight_hooks = _Quiet()
    straight_result = loop.train(straight, hp, straight_hooks)

    step, data = straight_hooks.checkpoints[1]
    resumed = _runner(gpt2_folder, hp, rows)
    resumed_result = loop.train(resumed, hp, _Quiet(), resume=loop.checkpoint_load(data))

    assert step == 10 and resumed_result.resumed_from_step == 10
    assert resumed_result.steps == straight_result.steps == 2 * math.ceil(32 / 4)
    assert resumed_result.tokens == straight_result.tokens
    for name, tensor in straight.trainable_state().items():
        assert torch.allclose(tensor, resumed.trainable_state()[name], atol=1e-6), name


def test_early_stopping_stops_and_keeps_the_best_weights(gpt2_folder):
    rows = instruction_rows(40, seed=2)
    # A learning rate this high makes validation loss climb after the first steps.
    hp = _hp(epochs=5, learning_rate=0.5, eval_every_steps=1, early_stopping_patience=2, warmup_ratio=0.0)
    runner = _runner(gpt2_folder, hp, rows)
    hooks = _Quiet()

    result = loop.train(runner, hp, hooks)

    assert result.stopped_early and result.steps < 5 * 8
    best = min(entry["val_loss"] for entry in hooks.evaluations)
    assert result.best_val_loss == best
    runner.train_mode(False)
    with torch.no_grad():
        assert runner.evaluate()["val_loss"] == pytest.approx(best, rel=1e-5)
