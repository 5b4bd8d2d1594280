from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "lode.core"
    label = "core"
    verbose_name = "Lode core"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from .db import on_post_migrate

        post_migrate.connect(on_post_migrate, dispatch_uid="lode.core.grant_application_role")
        from .jobs.diagnostics import ping_params_validate, ping_usage_estimate
        from .jobs.registry import JobKind, job_kind_register

        for queue in ("cpu", "gpu"):
            job_kind_register(
                JobKind(
                    name="core.ping" if queue == "cpu" else "core.ping.gpu",
                    queue=queue,
                    handler="lode.core.jobs.diagnostics.ping_run",
                    description=f"Diagnostics: checks the {queue} queue end to end.",
                    time_limit_seconds=600,
                    validate_params=ping_params_validate,
                    estimate_usage=ping_usage_estimate if queue == "gpu" else None,
                )
            )
