from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "lode.generation"
    label = "generation"
    verbose_name = "Lode generation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from lode.core.jobs.registry import JobKind, job_kind_register

        from .batch import BATCH_KIND, batch_params_validate, batch_usage_estimate

        job_kind_register(JobKind(
            name=BATCH_KIND, queue="gpu", handler="workers.generation.batch.batch_run",
            description="Generates one output per row of a dataset version with a text model (optionally through a "
                        "prompt template) and writes them as a new, synthetic version.",
            time_limit_seconds=24 * 3600, validate_params=batch_params_validate, estimate_usage=batch_usage_estimate,
            created_through="/api/v1/generation-jobs",
        ))
