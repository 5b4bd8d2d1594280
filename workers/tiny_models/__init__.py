"""Tiny offline base models for tests and the demo: a byte-level BPE tokenizer and a small GPT-2
pre-trained on text this package ships, a GPT-2 sequence classifier, and a tiny Stable Diffusion
pipeline from configs. Nothing here touches the network or Django.

This module stays import-light (no torch): the builders live in submodules
(`workers.tiny_models.build.build_all`, `.causal_lm`, `.classifier`, `.diffusion`)."""

TINY_GPT2 = "tiny-gpt2"
TINY_GPT2_CLASSIFIER = "tiny-gpt2-classifier"
TINY_SD = "tiny-sd"
# In build order: the classifier starts from the pre-trained GPT-2's transformer.
TINY_MODEL_NAMES: tuple[str, ...] = (TINY_GPT2, TINY_GPT2_CLASSIFIER, TINY_SD)

# Task types, spelled as the platform's BaseModel.task_type choices.
TASK_CAUSAL_LM = "causal_lm"
TASK_SEQUENCE_CLASSIFICATION = "sequence_classification"
TASK_TEXT_TO_IMAGE = "text_to_image"
