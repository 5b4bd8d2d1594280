"""The policy on data: the safety_filter dataset operation (blocked rows dropped, flagged rows
queued, personal data redacted, the policy version in the report), the fine-tune admission check
(data flagged beyond the policy's limit is refused with a report), and the loop from reviewers'
decisions to the tenant's own safety classifier, which then changes a verdict."""
from __future__ import annotations

import random

import pytest

from lode.core.models import Job, JobState
from lode.safety.models import ModerationItem
from tests.conftest import rows, system, wait_for
from tests.training.conftest import base_models, version_built, version_from_rows  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])


def _policy(client, **body):
    response = client.put("/api/v1/safety/policy", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_the_safety_filter_operation_drops_queues_and_redacts(safety_tenant, celery_worker):
    from lode.datasets.models import DatasetVersion
    from lode.datasets.shards import shard_tables

    client = safety_tenant.owner_client
    _policy(client, blocklist=[{"kind": "term", "category": "blocklist", "value": "zorblax"},
                               {"kind": "term", "category": "illegal_goods", "value": "plutonium"}],
            rules={"blocklist": {"threshold": 0.5, "action": "flag"}})
    data = [{"text": "A clean sentence about parcels."}, {"text": "Cheap plutonium for sale."},
            {"text": "The zorblax arrived broken."}, {"text": "Contact ada@example.com for the refund."}]
    source = version_from_rows(safety_tenant, data * 3, modality="text")
    response = client.post(f"/api/v1/dataset-versions/{source.id}/operations",
                           {"operation": "safety_filter", "params": {"flagged": "drop"}}, format="json")
    assert response.status_code in (201, 202), response.content
    version_id = response.json()["id"]
    version = wait_for(lambda: (found := system(DatasetVersion).get(id=version_id)).status != "building" and found,
                       timeout=60, message="the filtered version")
    assert version.status == "ready", version.report
    texts = [row["text"] for table in shard_tables(tenant_id=safety_tenant.id, prefix=version.prefix,
                                                   shard_count=version.shard_count) for row in table.to_pylist()]
    assert texts == ["A clean sentence about parcels.", "Contact [EMAIL] for the refund."] * 3
    report = version.report
    assert report["policy_version"] == 1
    assert report["counts"]["blocked"] == 3 and report["counts"]["flagged"] == 3 and report["counts"]["redacted"] == 3
    queued = rows(ModerationItem, safety_tenant.id, source="dataset_row")
    assert len(queued) == 3 and all(item.content == "The zorblax arrived broken." for item in queued)
    bad = client.post(f"/api/v1/dataset-versions/{source.id}/operations",
                      {"operation": "safety_filter", "params": {"flagged": "sometimes"}}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "params.flagged"


def test_a_fine_tune_on_data_flagged_beyond_the_limit_is_refused_with_a_report(safety_tenant, base_models):
    base_models("tiny-gpt2")
    client = safety_tenant.owner_client
    _policy(client, blocklist=[{"kind": "term", "category": "blocklist", "value": "zorblax"}],
            rules={"blocklist": {"threshold": 0.5, "action": "flag"}}, training_flagged_rate_limit=0.1)
    data = [{"prompt": f"Question {n}?", "response": "A zorblax answer." if n % 3 == 0 else "A fine answer."}
            for n in range(30)]
    version = version_from_rows(safety_tenant, data, modality="instruction")
    refused = client.post("/api/v1/fine-tunes", {"base_model": "tiny-gpt2", "train_version": str(version.id)}, format="json")
    assert refused.status_code == 400, refused.content
    error = refused.json()["error"]
    assert error["details"]["field"] == "train_version"
    report = error["details"]["safety_report"]
    assert report["rows_checked"] == 30 and report["rows_flagged"] == 10 and report["limit"] == 0.1
    assert report["categories"] == {"blocklist": 10} and report["policy_version"] == 1
    assert not system(Job).filter(tenant_id=safety_tenant.id, kind="training.finetune").exists()
    _policy(client, blocklist=[{"kind": "term", "category": "blocklist", "value": "zorblax"}],
            rules={"blocklist": {"threshold": 0.5, "action": "flag"}}, training_flagged_rate_limit=0.5)
    accepted = client.post("/api/v1/fine-tunes", {"base_model": "tiny-gpt2", "train_version": str(version.id)}, format="json")
    assert accepted.status_code == 202, accepted.content
    client.post(f"/api/v1/fine-tunes/{accepted.json()['id']}/cancel")


def test_reviewer_decisions_train_a_tenant_classifier_that_changes_a_verdict(safety_tenant, celery_worker, base_models):
    from lode.safety.checks import texts_check

    base_models("tiny-gpt2-classifier")
    client = safety_tenant.owner_client
    reviewer = safety_tenant.reviewer_clients[0]
    # Reviewers saw flagged outputs (everything is flagged under this policy) and decided: texts
    # about "glorp" are unsafe for this tenant, the rest fine.
    _policy(client, blocklist=[{"kind": "regex", "category": "blocklist", "value": r"[\s\S]"}],
            rules={"blocklist": {"threshold": 0.5, "action": "flag"}})
    rng = random.Random(4)
    words = ["parcel", "refund", "order", "invoice", "delivery", "account", "plan", "card"]
    texts = [f"my {rng.choice(words)} {rng.choice(words)} glorp" if n % 2 else f"my {rng.choice(words)} {rng.choice(words)} today"
             for n in range(80)]
    results = texts_check(tenant_id=safety_tenant.id, texts=texts, source="output", source_ref="history")
    for text, result in zip(texts, results):
        verdict = {"verdict": "reject", "reason": "glorp is off limits"} if "glorp" in text else {"verdict": "approve"}
        assert reviewer.post(f"/api/v1/safety/items/{result.item_id}/decision", verdict, format="json").status_code == 200

    exported = client.post("/api/v1/safety/review-exports", {"name": "glorp-reviews"}, format="json")
    assert exported.status_code == 202, exported.content
    version = version_built(safety_tenant.id, type("V", (), {"id": exported.json()["version_id"],
                                                             "job_id": exported.json()["job_id"]})())
    assert version.row_count == 80 and version.stats["labels"] == {"safe": 40, "unsafe": 40}

    _policy(client)  # back to the default: nothing about glorp
    # Held out: words no training text has, so the classifier must go by "glorp", not recall a row.
    held_out, clean_held_out = "my shipment ticket glorp", "my shipment ticket today"
    assert not {word for text in (held_out, clean_held_out) for word in text.split()[1:3]} & set(words)
    assert held_out not in texts and clean_held_out not in texts
    [before] = texts_check(tenant_id=safety_tenant.id, texts=[held_out], source="output", record="none")
    assert before.action == "allow"

    created = client.post("/api/v1/fine-tunes", {
        "base_model": "tiny-gpt2-classifier", "train_version": str(version.id), "method": "full", "suffix": "safety",
        "hyperparameters": {"epochs": 8, "batch_size": 8, "learning_rate": 3e-3, "validation_fraction": 0.1}},
        format="json")
    assert created.status_code == 202, created.content
    job = wait_for(lambda: (found := system(Job).get(id=created.json()["id"])).state in (
        JobState.SUCCEEDED, JobState.FAILED) and found, timeout=300, interval=0.5, message="the classifier fine-tune")
    assert job.state == JobState.SUCCEEDED, job.error
    model = client.get(f"/api/v1/models/{job.result['model_id']}").json()
    _policy(client, classifier=model["name"])
    [after] = texts_check(tenant_id=safety_tenant.id, texts=[held_out], source="output", record="none")
    assert after.action == "flag" and "classifier" in after.categories, after.scores
    [clean] = texts_check(tenant_id=safety_tenant.id, texts=[clean_held_out], source="output", record="none")
    assert clean.action == "allow", clean.scores


def test_the_review_export_leaves_out_image_items(safety_tenant):
    from lode.datasets.shards import shard_tables
    from lode.safety.hooks import images_review
    from tests.safety.conftest import flag_texts

    client = safety_tenant.owner_client
    reviewer = safety_tenant.reviewer_clients[0]
    _policy(client, blocklist=[{"kind": "term", "category": "blocklist", "value": "zorblax"}],
            rules={"blocklist": {"threshold": 0.5, "action": "flag"}}, image_review="always")

    def decide(item_ids):
        for number, item_id in enumerate(item_ids):
            verdict = {"verdict": "approve"} if number % 2 else {"verdict": "reject", "reason": "not for us"}
            response = reviewer.post(f"/api/v1/safety/items/{item_id}/decision", verdict, format="json")
            assert response.status_code == 200, response.content

    # An image item's text is its prompt; the verdict was on the picture, so it labels no text.
    images = images_review(tenant_id=safety_tenant.id, prompt="a picture of a harbour", prompt_flagged=False,
                           images=[b"not really a png"] * 4, ref="req-images")
    decide([image["item_id"] for image in images])
    only_images = client.post("/api/v1/safety/review-exports", {"name": "images only"}, format="json")
    assert only_images.status_code == 400, only_images.content
    error = only_images.json()["error"]
    assert error["details"]["field"] == "reviews" and "have 0" in error["message"]

    texts = [f"zorblax text {number}" for number in range(4)]
    decide([result.item_id for result in flag_texts(safety_tenant.id, texts)])
    exported = client.post("/api/v1/safety/review-exports", {"name": "texts"}, format="json")
    assert exported.status_code == 202, exported.content
    version = version_built(safety_tenant.id, type("V", (), {"id": exported.json()["version_id"],
                                                             "job_id": exported.json()["job_id"]})())
    exported_rows = [row for table in shard_tables(tenant_id=safety_tenant.id, prefix=version.prefix,
                                                   shard_count=version.shard_count) for row in table.to_pylist()]
    assert sorted(row["text"] for row in exported_rows) == texts
    assert version.stats["labels"] == {"safe": 2, "unsafe": 2}
