"""`tiny-sd`: a Stable Diffusion pipeline built from configs with random weights, small enough that
a 2-step generation takes a fraction of a second on CPU. Its images are noise; it exists so the
diffusion fine-tune and image-generation paths run end to end offline.

The CLIP tokenizer is character-level: a vocabulary written here by hand (every byte-level symbol,
alone and as a word end) with an empty merges file. diffusers is imported inside the builder: it
costs seconds to import and only this path needs it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import pre_tokenizers

from workers.tiny_models import TASK_TEXT_TO_IMAGE, TINY_SD
from workers.tiny_models.manifest import BuiltModel, manifest_write

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
# CLIP's position table has 77 entries; the pipeline pads prompts to model_max_length, so the
# tokenizer must say 77 or prompts overflow the text encoder.
CLIP_MAX_LENGTH = 77
DEFAULT_IMAGE_SIZE = 64
# Two VAE blocks: latents are half the image size in each direction.
_VAE_BLOCKS = (32, 64)
_CROSS_ATTENTION_DIM = 32


def write_character_vocab(*, folder: Path) -> None:
    """Writes CLIP's vocab.json (specials, then each byte-level symbol, then each as a word end;
    CLIP's BPE marks the last piece of a word with `</w>`) and an empty merges.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {CLIP_BOS: 0, CLIP_EOS: 1}
    for token in [*symbols, *(symbol + "</w>" for symbol in symbols)]:
        vocab.setdefault(token, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def text_to_image_recipe(*, seed: int, image_size: int) -> dict[str, Any]:
    """What determines the build: a cached folder with a different recipe is rebuilt."""
    return {"seed": seed, "image_size": image_size}


def build_text_to_image(
    *,
    output_dir: Path,
    name: str = TINY_SD,
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> BuiltModel:
    """Saves a tiny StableDiffusionPipeline whose default output is `image_size` x `image_size`."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vae_scale_factor = 2 ** (len(_VAE_BLOCKS) - 1)
    # The UNet halves the latent once per down block (two blocks here).
    if image_size <= 0 or image_size % (vae_scale_factor * 2) != 0:
        raise ValueError(f"image_size must be a positive multiple of {vae_scale_factor * 2}.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    vocab_dir = output_dir / "tokenizer"
    write_character_vocab(folder=vocab_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(vocab_dir), model_max_length=CLIP_MAX_LENGTH)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=image_size // vae_scale_factor,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=_CROSS_ATTENTION_DIM,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(_VAE_BLOCKS),
            up_block_types=("UpDecoderBlock2D",) * len(_VAE_BLOCKS),
            block_out_channels=_VAE_BLOCKS,
            layers_per_block=1,
            latent_channels=4,
            sample_size=image_size,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=_CROSS_ATTENTION_DIM,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=CLIP_MAX_LENGTH,
                projection_dim=_CROSS_ATTENTION_DIM,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    # Stable Diffusion v1's noise schedule.
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(output_dir))
    manifest = manifest_write(
        folder=output_dir,
        name=name,
        task_type=TASK_TEXT_TO_IMAGE,
        architecture=type(pipeline).__name__,
        parameter_count=sum(
            p.numel() for module in (unet, vae, text_encoder) for p in module.parameters()
        ),
        extra={
            "recipe": text_to_image_recipe(seed=seed, image_size=image_size),
            "image_size": image_size,
            "components": {
                "unet": type(unet).__name__,
                "vae": type(vae).__name__,
                "text_encoder": type(text_encoder).__name__,
                "tokenizer": type(tokenizer).__name__,
                "scheduler": type(scheduler).__name__,
            },
        },
    )
    return BuiltModel(name=name, folder=output_dir, manifest=manifest)
