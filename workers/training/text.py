"""Turning dataset rows into training examples for text tasks: chat-templated token ids with the
loss on the response tokens only (SFT, DPO), and labeled texts (classification). Plain
transformers tokenizers; no Django."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE where the loss does not look


def row_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """An instruction row or a chat row as a list of messages."""
    if row.get("messages"):
        return [{"role": message["role"], "content": message["content"]} for message in row["messages"]]
    messages = []
    if row.get("system"):
        messages.append({"role": "system", "content": row["system"]})
    messages.append({"role": "user", "content": row["prompt"]})
    if row.get("response") is not None:
        messages.append({"role": "assistant", "content": row["response"]})
    return messages


def _render(tokenizer, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    # A tokenizer without a chat template: plain role-prefixed turns.
    text = "".join(f"{message['role']}: {message['content']}\n" for message in messages)
    return text + ("assistant: " if generation_prompt else "")


def prompt_text(tokenizer, messages: list[dict[str, str]]) -> str:
    """The text a model continues to answer the last user turn."""
    return _render(tokenizer, messages, generation_prompt=True)


def chat_example(tokenizer, messages: list[dict[str, str]], *, max_length: int) -> Example | None:
    """Token ids of the whole conversation with labels on the assistant turns only (each turn's
    text and its end-of-turn tokens as the template writes them). The conversation is rendered in
    segments (everything before an assistant turn, then the turn), each tokenized on its own, so a
    label never straddles a prompt token. Truncated to max_length; None when no label is left."""
    input_ids: list[int] = []
    labels: list[int] = []
    rendered_to = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], generation_prompt=True)
        through = _render(tokenizer, messages[:index + 1], generation_prompt=False)
        if not before.startswith(rendered_to) or not through.startswith(before):
            return None  # a template that rewrites earlier turns: cannot align labels
        prompt_part = before[len(rendered_to):]
        answer_part = through[len(before):]
        prompt_ids = tokenizer(prompt_part, add_special_tokens=False)["input_ids"] if prompt_part else []
        answer_ids = tokenizer(answer_part, add_special_tokens=False)["input_ids"]
        input_ids += prompt_ids + answer_ids
        labels += [IGNORE] * len(prompt_ids) + answer_ids
        rendered_to = through
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if not any(label != IGNORE for label in labels[1:]):
        return None
    return Example(input_ids=input_ids, labels=labels)


def classification_texts(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    texts, labels = [], []
    for row in rows:
        value = row.get("labels")
        names = [str(label) for label in (value if isinstance(value, list) else [value] if value is not None else [])]
        if row.get("text") and names:
            texts.append(row["text"])
            labels.append(names)
    return texts, labels
