"""The text models' tokenizer: a byte-level BPE trained with `tokenizers` on the shipped corpus and
wrapped as a transformers fast tokenizer, with a small chat template for SFT on chat data.

Byte-level means any UTF-8 text (Chinese included) encodes without unknown tokens. The trainer
takes no `end_of_word_suffix`: with one, BpeTrainer was not deterministic across runs."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from workers.tiny_models.text import corpus_documents

UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
DEFAULT_VOCAB_SIZE = 1024
# Longer than the pre-training window; GPT-2's position table (n_positions) is the hard limit.
MODEL_MAX_LENGTH = 256

# One turn per message: the role marker, the text, then eos so generation knows where a reply ends.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def build_tokenizer(
    *,
    output_dir: Path | None = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    documents: list[str] | None = None,
) -> PreTrainedTokenizerFast:
    """Trains the tokenizer on `documents` (default: the shipped corpus); saves it when
    `output_dir` is given. The same documents always give the same tokenizer."""
    special_tokens = [UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, *ROLE_TOKENS]
    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=special_tokens,
        # All 256 byte symbols up front, so text unseen in training still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(documents if documents is not None else corpus_documents(), trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=list(ROLE_TOKENS),
        model_max_length=MODEL_MAX_LENGTH,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(output_dir))
    return tokenizer
