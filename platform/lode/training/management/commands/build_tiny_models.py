"""`manage.py build_tiny_models`: builds the tiny offline base models (no network) into
`MODEL_CACHE_DIR/build/<name>` and registers them in the base-model catalog with their files in the
artifact store. Repeated runs reuse the builds and skip uploads whose files are already stored;
files an S3 endpoint lost (the local one may keep objects in memory only) are uploaded again."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from lode.core import artifacts
from lode.core.errors import NotFound
from lode.training.selectors import base_model_get, base_model_missing_files
from lode.training.services import base_model_register
from workers.tiny_models import TINY_GPT2, TINY_GPT2_CLASSIFIER, TINY_MODEL_NAMES, TINY_SD

DISPLAY_NAMES = {
    TINY_GPT2: "Tiny GPT-2 (offline demo model)",
    TINY_GPT2_CLASSIFIER: "Tiny GPT-2 classifier (offline demo model)",
    TINY_SD: "Tiny Stable Diffusion (offline demo model)",
}


class Command(BaseCommand):
    help = "Build the tiny offline base models and register them in the base-model catalog."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="Rebuild and re-upload even when cached.")
        parser.add_argument(
            "--pretrain-steps",
            type=int,
            default=None,
            help="Pre-training steps for tiny-gpt2 (default: the full pre-training, about half a minute).",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--only", nargs="+", choices=TINY_MODEL_NAMES, help="Build and register only these.")

    def handle(self, *args, **options) -> None:
        # Imported here: torch and transformers cost seconds, and other commands need neither.
        from transformers.utils import logging as transformers_logging

        from workers.tiny_models.build import build_all

        if options["pretrain_steps"] is not None and options["pretrain_steps"] < 1:
            raise CommandError("--pretrain-steps must be at least 1")
        # This command prints its own progress; the libraries' bars would interleave with it.
        transformers_logging.disable_progress_bar()
        # Fail before half a minute of building, not after, when the S3 endpoint is down.
        artifacts.bucket_ensure()
        build_root = Path(settings.MODEL_CACHE_DIR) / "build"
        force = options["force"]
        names = options["only"] or list(TINY_MODEL_NAMES)

        last_tenth = -1

        def on_step(step: int, total: int, loss: float) -> None:
            nonlocal last_tenth
            tenth = step * 10 // total
            if tenth != last_tenth:
                last_tenth = tenth
                self.stdout.write(f"  pre-training step {step}/{total}, loss {loss:.3f}")

        built = build_all(
            root=build_root,
            seed=options["seed"],
            pretrain_steps=options["pretrain_steps"],
            force=force,
            names=names,
            log=self.stdout.write,
            on_step=on_step,
        )
        for model in built:
            manifest = model.manifest
            training = manifest.get("training")
            if training:
                self.stdout.write(
                    f"{model.name}: pre-training loss {training['loss_start']:.3f} -> {training['loss_end']:.3f} "
                    f"({training['steps']} steps)"
                )
            if not force and self._is_registered(name=model.name, revision=manifest["revision"]):
                self.stdout.write(f"{model.name}: already registered, files present in the artifact store")
                continue
            base_model = base_model_register(
                name=model.name,
                display_name=DISPLAY_NAMES[model.name],
                task_type=manifest["task_type"],
                architecture=manifest["architecture"],
                parameter_count=manifest["parameter_count"],
                local_dir=model.folder,
                manifest=manifest,
            )
            self.stdout.write(
                f"{model.name}: registered ({base_model.parameter_count:,} parameters, "
                f"{len(manifest['files'])} files under platform/{base_model.artifact_prefix}/)"
            )
        self.stdout.write(self.style.SUCCESS(f"Tiny models ready: {', '.join(m.name for m in built)}"))

    def _is_registered(self, *, name: str, revision: str) -> bool:
        try:
            base_model = base_model_get(name=name)
        except NotFound:
            return False
        if base_model.revision != revision:
            return False
        missing = base_model_missing_files(base_model=base_model)
        if missing:
            self.stdout.write(f"{name}: the artifact store lacks {len(missing)} file(s); uploading again")
        return not missing
