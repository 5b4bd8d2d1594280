from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "lode.generation"
    label = "generation"
    verbose_name = "Lode generation"
    default_auto_field = "django.db.models.BigAutoField"
