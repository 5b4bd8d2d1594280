from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "lode.datasets"
    label = "datasets"
    verbose_name = "Datasets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery.signals import worker_process_init

        from lode.core.jobs.registry import JobKind, job_kind_register

        # Celery's own start-up hook: each worker process loads the language model once, not
        # inside the first job it runs.
        worker_process_init.connect(_warm_up, dispatch_uid="lode.datasets.warm_up", weak=False)

        job_kind_register(JobKind(
            name="datasets.ingest", queue="cpu", handler="lode.datasets.jobs.ingest_run",
            description="Reads an upload into the dataset's next version (validated rows, Parquet shards).",
            time_limit_seconds=3 * 3600, validate_params=_version_param,
        ))
        job_kind_register(JobKind(
            name="datasets.operation", queue="cpu", handler="lode.datasets.jobs.operation_run",
            description="Builds a version from its parent by an operation (normalise, filter, dedup, PII, split, augment).",
            time_limit_seconds=3 * 3600, validate_params=_version_param,
        ))


def _warm_up(**kwargs) -> None:
    from .jobs import worker_warm_up

    worker_warm_up()


def _version_param(params: dict) -> dict:
    """These jobs are created by the datasets services with the version they build; through the
    jobs API they would only duplicate a build, so they take nothing else."""
    from uuid import UUID

    from lode.core.errors import ValidationFailed

    if set(params) != {"version_id"}:
        raise ValidationFailed("params: only version_id", details={"field": "params"})
    try:
        UUID(str(params["version_id"]))
    except ValueError:
        raise ValidationFailed("params.version_id: a version id", details={"field": "params.version_id"}) from None
    return {"version_id": str(params["version_id"])}
