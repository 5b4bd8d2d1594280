"""Text-to-image LoRA: a LoRA adapter on a diffusers pipeline's UNet, trained to predict the noise
added to the latents of the dataset's images given their captions (the text encoder and the VAE
stay frozen). The adapter is saved in diffusers' LoRA format, so `pipeline.load_lora_weights(folder)`
loads it."""
from __future__ import annotations

import io
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lode.core import artifacts

from . import loop
from .tasks import _order


class TextToImageRunner:
    def __init__(self, pipeline, *, train: list[tuple[torch.Tensor, str]], validation: list[tuple[torch.Tensor, str]],
                 hp: dict[str, Any], device: torch.device):
        from peft import LoraConfig

        from lode.training.hyperparameters import lora_targets_for

        self.pipeline = pipeline
        self.unet = pipeline.unet
        self.vae = pipeline.vae
        self.text_encoder = pipeline.text_encoder
        self.tokenizer = pipeline.tokenizer
        self.scheduler = pipeline.scheduler
        self.hp = hp
        self.device = device
        self.train = train
        self.validation = validation
        for module in (self.unet, self.vae, self.text_encoder):
            module.requires_grad_(False)
            module.to(device)
        targets = hp.get("lora_target_modules") or lora_targets_for("unet")
        self.unet.add_adapter(LoraConfig(r=hp["lora_rank"], lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"],
                                         init_lora_weights="gaussian", target_modules=targets))
        self.model = self.unet

    def parameters(self) -> list[torch.nn.Parameter]:
        return [parameter for parameter in self.unet.parameters() if parameter.requires_grad]

    def train_mode(self, training: bool) -> None:
        self.unet.train(training)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.unet)

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.unet, state)

    def train_batches(self, epoch: int) -> list[list[int]]:
        return _order(len(self.train), seed=self.hp["seed"], epoch=epoch, batch_size=self.hp["batch_size"])

    def _loss(self, items: list[tuple[torch.Tensor, str]], generator: torch.Generator | None = None) -> torch.Tensor:
        pixels = torch.stack([image for image, _ in items]).to(self.device)
        ids = self.tokenizer([caption for _, caption in items], padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids.to(self.device)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample(generator=generator) * self.vae.config.scaling_factor
            hidden = self.text_encoder(ids)[0]
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        steps = torch.randint(0, self.scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator,
                              device=latents.device)
        noisy = self.scheduler.add_noise(latents, noise, steps)
        target = noise if self.scheduler.config.prediction_type == "epsilon" else self.scheduler.get_velocity(latents, noise, steps)
        predicted = self.unet(noisy, steps, hidden).sample
        return F.mse_loss(predicted.float(), target.float())

    def train_loss(self, batch: list[int]) -> tuple[torch.Tensor, int]:
        items = [self.train[index] for index in batch]
        return self._loss(items), len(items)

    def evaluate(self) -> dict[str, float]:
        if not self.validation:
            return {}
        # The same noise and timesteps at every evaluation, so the losses compare.
        generator = torch.Generator(device=self.device).manual_seed(self.hp["seed"])
        size = self.hp["batch_size"]
        total = 0.0
        for start in range(0, len(self.validation), size):
            items = self.validation[start:start + size]
            total += float(self._loss(items, generator)) * len(items)
        return {"val_loss": total / len(self.validation)}


def _image_tensor(data: bytes, size: int) -> torch.Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
        values = torch.tensor(list(image.getdata()), dtype=torch.float32).view(size, size, 3)
    return values.permute(2, 0, 1) / 127.5 - 1.0


def _items(tenant_id, version_id: str | None, rows: list[dict], size: int) -> list[tuple[torch.Tensor, str]]:
    from lode.datasets.selectors import version_get
    from lode.datasets.shards import image_key

    if not rows:
        return []
    dataset_id = version_get(tenant_id=tenant_id, version_id=version_id).dataset_id
    return [(_image_tensor(artifacts.object_get(tenant_id=tenant_id, key=image_key(dataset_id, row["image"])), size),
             row["caption"]) for row in rows]


def text_to_image_train(ctx, params: dict[str, Any], *, base, folder: Path, train_rows: list[dict],
                        validation_rows: list[dict], device: torch.device, resume: dict | None, started: float) -> dict:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    from lode.training.model_card import model_card_render
    from lode.training.selectors import finetune_model
    from lode.training.services import tuned_model_register

    from .finetune import JobHooks, _json_safe, _model_name

    hp = params["hyperparameters"]
    size = hp["image_size"]
    pipeline = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    validation_source = params.get("validation_version_id") or params["train_version_id"]
    train = _items(ctx.tenant_id, params["train_version_id"], train_rows, size)
    validation = _items(ctx.tenant_id, validation_source, validation_rows, size)
    runner = TextToImageRunner(pipeline, train=train, validation=validation, hp=hp, device=device)
    total = sum(parameter.numel() for module in (pipeline.unet, pipeline.vae, pipeline.text_encoder)
                for parameter in module.parameters())
    trainable = sum(parameter.numel() for parameter in runner.parameters())
    ctx.log("training", task="text_to_image", method="lora", device=str(device), train_examples=len(train),
            validation_examples=len(validation), trainable_parameters=trainable, parameters=total)
    result = loop.train(runner, hp, JobHooks(ctx), resume=resume)
    final_eval = next((entry for entry in reversed(result.history) if entry.get("kind") == "eval"), {})
    metrics = {key: value for key, value in final_eval.items() if key != "kind"}
    metrics.update({"steps": result.steps, "images": result.tokens, "train_seconds": round(result.seconds, 3),
                    "stopped_early": result.stopped_early, "best_val_loss": result.best_val_loss})
    ctx.progress(0.98, "saving and registering the adapter", force=True)
    model = finetune_model(tenant_id=ctx.tenant_id, job_id=ctx.job_id)
    if model is None:
        from peft import get_peft_model_state_dict

        model_id = uuid.uuid4()
        out = Path(tempfile.mkdtemp(prefix="lode-model-"))
        try:
            StableDiffusionPipeline.save_lora_weights(
                save_directory=out, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(runner.unet)),
                safe_serialization=True,
            )
            fields = {
                "name": _model_name(base.name, params, model_id), "base_model": base, "task": "text_to_image",
                "task_type": base.task_type, "method": "lora", "architecture": base.architecture,
                "parameter_count": total, "trainable_parameter_count": trainable, "is_adapter": True, "merged": False,
                "train_version_id": params["train_version_id"], "validation_version_id": params.get("validation_version_id"),
                "hyperparameters": hp, "metrics": _json_safe(metrics), "labels": [],
            }
            fields["model_card"] = model_card_render(tenant_id=ctx.tenant_id, fields=fields, base=base, params=params,
                                                     samples=[], train_rows=len(train), validation_rows=len(validation))
            model = tuned_model_register(tenant_id=ctx.tenant_id, job_id=ctx.job_id, model_id=model_id, local_dir=out,
                                         fields=fields)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return {"model_id": str(model.id), "model": model.name, "steps": result.steps, "metrics": _json_safe(metrics),
            "resumed_from_step": result.resumed_from_step, "seconds": round(time.monotonic() - started, 3)}
