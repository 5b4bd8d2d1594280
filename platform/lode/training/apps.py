from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "lode.training"
    label = "training"
    verbose_name = "Lode training"
    default_auto_field = "django.db.models.BigAutoField"
