from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "lode.billing"
    label = "billing"
    verbose_name = "Billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The job mechanism meters compute and admits work through billing; core cannot import a
        # domain app, so billing hands it its metering functions here, once.
        from lode.core.jobs.metering import job_metering_set

        from .jobs import BillingJobMetering

        job_metering_set(BillingJobMetering())
