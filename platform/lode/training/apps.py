from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "lode.training"
    label = "training"
    verbose_name = "Lode training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from lode.core.jobs.registry import JobKind, job_kind_register

        from .services import FINETUNE_KIND, finetune_params_validate, finetune_usage_estimate

        job_kind_register(JobKind(
            name=FINETUNE_KIND, queue="gpu", handler="workers.training.finetune.finetune_run",
            description="Fine-tunes a base model on a dataset version (LoRA or full; SFT, classification, DPO, "
                        "text-to-image LoRA) and registers the result.",
            time_limit_seconds=24 * 3600, validate_params=finetune_params_validate,
            estimate_usage=finetune_usage_estimate, created_through="/api/v1/fine-tunes",
        ))
