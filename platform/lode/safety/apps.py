from django.apps import AppConfig


class SafetyConfig(AppConfig):
    name = "lode.safety"
    label = "safety"
    verbose_name = "Lode content safety"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from lode.generation.completions import IMAGE_REVIEW_HOOKS, SAFETY_HOOKS

        from .hooks import generation_review, images_review
        from .notify import events_register

        events_register()

        from lode.datasets.jobs import operation_run_register
        from lode.datasets.operations_spec import operation_register

        from .dataset_filter import KNOWN, safety_filter_run, safety_filter_validate

        operation_register("safety_filter", known=KNOWN, validate=safety_filter_validate)
        operation_run_register("safety_filter", safety_filter_run)

        from lode.training.services import ADMISSION_CHECKS

        from .training_data import training_data_check

        if training_data_check not in ADMISSION_CHECKS:
            ADMISSION_CHECKS.append(training_data_check)

        if generation_review not in SAFETY_HOOKS:
            SAFETY_HOOKS.append(generation_review)
        if images_review not in IMAGE_REVIEW_HOOKS:
            IMAGE_REVIEW_HOOKS.append(images_review)
