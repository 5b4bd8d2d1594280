"""Fixtures for fine-tune tests: tiny base models registered in the test catalog (built once per
machine under MODEL_CACHE_DIR, uploaded to the test bucket when the catalog lacks them), and ready
dataset versions made through the real upload and ingest path."""
from __future__ import annotations

import io
import random

import orjson
import pytest

from tests.conftest import wait_for

TRAINING_WORDS = ("refund", "order", "delivery", "invoice", "account", "password", "parcel", "warranty", "plan", "card")


@pytest.fixture
def base_models(db):
    """Registers the named tiny models (all of them by default) and returns their rows by name."""
    from django.core.management import call_command

    from lode.training.selectors import base_model_get

    def register(*names: str) -> dict:
        from workers.tiny_models import TINY_MODEL_NAMES

        wanted = list(names or TINY_MODEL_NAMES)
        call_command("build_tiny_models", "--only", *wanted, stdout=io.StringIO())
        return {name: base_model_get(name=name) for name in wanted}

    return register


def version_from_rows(tenant, rows: list[dict], *, modality: str, name: str | None = None):
    """A ready dataset version holding `rows`, through upload_direct and the ingest job (run here)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from lode.datasets import services as dataset_services

    tenant_id = tenant.organization.id
    dataset = dataset_services.dataset_create(tenant_id=tenant_id, name=name or f"{modality}-{random.random():.8f}",
                                              modality=modality, by=tenant.user)
    data = b"".join(orjson.dumps(row) + b"\n" for row in rows)
    _upload, version = dataset_services.upload_direct(
        tenant_id=tenant_id, dataset_id=dataset.id, file=SimpleUploadedFile("rows.jsonl", data), by=tenant.user)
    return version_built(tenant_id, version)


def version_built(tenant_id, version):
    """Runs the version's ingest job here and returns the version once ready. When a test's worker
    consumes the cpu queue it may take the job first (job_execute then finds nothing to do)."""
    from lode.core.jobs.runner import job_execute
    from lode.datasets.selectors import version_get

    job_execute(tenant_id=tenant_id, job_id=version.job_id)
    version = wait_for(lambda: (found := version_get(tenant_id=tenant_id, version_id=version.id)).status != "building"
                       and found, timeout=60, message="the version to be built")
    assert version.status == "ready", version.report
    return version


def instruction_rows(count: int, *, seed: int = 0) -> list[dict]:
    """Support exchanges with a learnable pattern: the answer repeats the topic word of the question."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        word = rng.choice(TRAINING_WORDS)
        number = rng.randint(1, 99)
        rows.append({"prompt": f"Question about my {word} number {number}?",
                     "response": f"Your {word} {number} is handled. Thank you for asking about the {word}."})
    return rows
