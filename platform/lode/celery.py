"""The Celery application. Workers: `infra/worker.sh cpu` and `infra/worker.sh gpu`."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lode.settings.dev")

app = Celery("lode")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
