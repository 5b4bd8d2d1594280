"""Datasets through the API on the real stack: uploads ingested by a Celery worker into Parquet
shards in S3, versions browsed and downloaded, operations building new versions with lineage, and
the bad inputs that must leave nothing behind."""
from __future__ import annotations

import io
import json
import random

import pyarrow.parquet as pq
import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError, connection

from lode.core import artifacts
from lode.core.models import Job
from lode.datasets.models import Dataset, DatasetVersion, Upload
from tenants.db_context import tenant_atomic
from tests.conftest import TRANSACTIONAL_WITH_SYSTEM, system, wait_for

pytestmark = TRANSACTIONAL_WITH_SYSTEM


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def _instruction_rows(n: int, *, offset: int = 0) -> list[dict]:
    return [{"prompt": f"How do I reset router model R{i + offset}?", "response": f"Hold the reset button for {i % 30 + 5} seconds."}
            for i in range(n)]


@pytest.fixture
def owner(make_tenant, api_client_for):
    tenant = make_tenant()
    return tenant.organization.id, api_client_for(tenant.user)


def _dataset(client, modality="instruction", name="support") -> dict:
    response = client.post("/api/v1/datasets", {"name": name, "modality": modality}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _upload(client, dataset_id, name: str, content: bytes, **form) -> "requests.Response":
    return client.post(f"/api/v1/datasets/{dataset_id}/uploads",
                       {"file": SimpleUploadedFile(name, content), **form}, format="multipart")


def _ready(version_id, *, timeout=60) -> DatasetVersion:
    return wait_for(lambda: (v := system(DatasetVersion).get(id=version_id)).status != "building" and v,
                    timeout=timeout, message="the version to be built")


def _objects(tenant_id, prefix: str) -> list:
    return artifacts.object_list(tenant_id=tenant_id, prefix=prefix)


def test_an_uploaded_jsonl_file_becomes_a_browsable_downloadable_version(owner, celery_worker):
    tenant_id, client = owner
    dataset = _dataset(client)
    rows = _instruction_rows(120) + [{"prompt": "  ", "response": "no prompt"}, {"prompt": "x", "response": 42}]

    accepted = _upload(client, dataset["id"], "support.jsonl", _jsonl(rows))

    assert accepted.status_code == 202, accepted.content
    version = _ready(accepted.json()["id"])
    assert version.status == "ready" and version.number == 1 and version.operation == "upload"
    assert version.row_count == 120 and version.report["rejected"] == 2
    assert {sample["field"] for sample in version.report["rejected_samples"]} == {"prompt", "response"}
    assert version.stats["rows"] == 120
    shards = _objects(tenant_id, version.prefix)
    assert len(shards) == version.shard_count == 1
    page = client.get(f"/api/v1/dataset-versions/{version.id}/rows?offset=10&limit=5").json()
    assert page["count"] == 120 and [row["prompt"] for row in page["rows"]] == [r["prompt"] for r in rows[10:15]]
    found = client.get(f"/api/v1/dataset-versions/{version.id}/rows", {"q": "model r77?"}).json()
    assert [row["prompt"] for row in found["rows"]] == ["How do I reset router model R77?"]
    jsonl = client.get(f"/api/v1/dataset-versions/{version.id}/download?format=jsonl")
    assert [json.loads(line)["prompt"] for line in b"".join(jsonl.streaming_content).splitlines()] == [r["prompt"] for r in rows[:120]]
    csv_body = b"".join(client.get(f"/api/v1/dataset-versions/{version.id}/download?format=csv").streaming_content).decode()
    assert csv_body.splitlines()[0] == "prompt,response,system" and len(csv_body.splitlines()) == 121
    parquet = client.get(f"/api/v1/dataset-versions/{version.id}/download?format=parquet").json()
    table = pq.read_table(io.BytesIO(requests.get(parquet["shards"][0], timeout=10).content))
    assert table.num_rows == 120


def test_a_file_that_cannot_be_read_is_a_4xx_naming_where_and_leaves_nothing(owner):
    tenant_id, client = owner
    dataset = _dataset(client)
    cases = {
        "broken.csv": (b'prompt,response\n"unterminated,quote\n', 400),
        "empty.jsonl": (b"", 400),
        "wrong.csv": (b"question,answer\nq,a\n", 400),   # no column maps to prompt/response
        "bad.jsonl": (b"{not json}\n{also not\n", 400),
    }
    answers = {name: _upload(client, dataset["id"], name, content) for name, (content, _) in cases.items()}

    for name, (_, expected) in cases.items():
        assert answers[name].status_code == expected, (name, answers[name].content)
        assert answers[name].json()["error"]["message"]
    assert "prompt" in answers["wrong.csv"].json()["error"]["message"]
    assert answers["bad.jsonl"].json()["error"]["details"].get("line") == 1
    with tenant_atomic(tenant_id):
        assert not Upload.objects.exists() and not DatasetVersion.objects.exists()
    assert _objects(tenant_id, f"datasets/{dataset['id']}/") == []


def test_a_column_mapping_maps_file_columns_to_schema_fields(owner, celery_worker):
    _, client = owner
    dataset = _dataset(client)
    content = "question,answer\n问：怎么重置路由器？,按住重置键十秒。\nWhere is my order?,It ships tomorrow.\n".encode("gb18030")

    accepted = _upload(client, dataset["id"], "faq.csv", content,
                       column_mapping=json.dumps({"prompt": "question", "response": "answer"}))

    version = _ready(accepted.json()["id"])
    assert version.status == "ready" and version.report["encoding"] == "gb18030"
    rows = client.get(f"/api/v1/dataset-versions/{version.id}/rows").json()["rows"]
    assert rows[0]["prompt"] == "问：怎么重置路由器？" and rows[1]["response"] == "It ships tomorrow."


def test_a_file_broken_past_its_first_megabyte_fails_its_job_and_leaves_no_version_behind(owner, celery_worker):
    tenant_id, client = owner
    dataset = _dataset(client)
    good = "".join(f'"prompt {i}","response {i} {"x" * 80}"\n' for i in range(15000))
    content = ("prompt,response\n" + good + '"broken,quote\n').encode()
    assert len(content) > 1024 * 1024

    accepted = _upload(client, dataset["id"], "late.csv", content)

    assert accepted.status_code == 202
    version = _ready(accepted.json()["id"])
    assert version.status == "failed" and "line" in json.dumps(version.report)
    job = wait_for(lambda: (j := system(Job).get(id=version.job_id)).is_terminal and j, message="the job to end")
    assert job.state == "failed" and job.error_code == "unparseable"
    assert _objects(tenant_id, version.prefix) == []


def test_presigned_multipart_upload_straight_to_s3_then_complete(owner, celery_worker):
    _, client = owner
    dataset = _dataset(client)
    content = _jsonl(_instruction_rows(50))

    started = client.post(f"/api/v1/datasets/{dataset['id']}/uploads/multipart",
                          {"filename": "big.jsonl", "size": len(content), "part_count": 1}, format="json")
    assert started.status_code == 201, started.content
    body = started.json()
    put = requests.put(body["parts"][0]["url"], data=content, timeout=10)
    assert put.status_code == 200
    completed = client.post(f"/api/v1/dataset-uploads/{body['upload']['id']}/complete",
                            {"parts": [{"part_number": 1, "etag": put.headers["ETag"]}]}, format="json")
    again = client.post(f"/api/v1/dataset-uploads/{body['upload']['id']}/complete",
                        {"parts": [{"part_number": 1, "etag": put.headers["ETag"]}]}, format="json")

    assert completed.status_code == 202, completed.content
    assert _ready(completed.json()["id"]).row_count == 50
    assert again.status_code == 409


@pytest.mark.parametrize("body, field", [
    ({"filename": "x.jsonl", "size": 0, "part_count": 1}, "size"),
    ({"filename": "x.jsonl", "size": 10 * 1024 * 1024, "part_count": 5}, "part_count"),
    ({"filename": "x.jsonl", "size": 10, "part_count": 1, "format": "xlsx"}, "format"),
    ({"filename": "x.jsonl", "size": 10, "part_count": 1, "column_mapping": {"nope": "a"}}, "column_mapping"),
])
def test_bad_multipart_starts_are_400_naming_the_field(owner, body, field):
    _, client = owner
    dataset = _dataset(client)

    response = client.post(f"/api/v1/datasets/{dataset['id']}/uploads/multipart", body, format="json")

    assert response.status_code == 400 and field in response.content.decode()


def test_operations_build_new_versions_with_lineage_back_to_the_upload(owner, celery_worker):
    tenant_id, client = owner
    dataset = _dataset(client, modality="classification", name="tickets")
    rows = []
    for i in range(200):
        label = "billing" if i % 4 == 0 else "tech"
        rows.append({"text": f"Ticket {i}: my  router   number {i} drops the connection every {i % 7 + 2} minutes", "labels": label})
    rows += [dict(rows[3]), {"text": "Contact me at jane.doe@example.com or +1 415 555 2671 please", "labels": "billing"}]
    upload = _upload(client, dataset["id"], "tickets.jsonl", _jsonl(rows)).json()
    base = _ready(upload["id"])

    def run(version_id, operation, params=None):
        response = client.post(f"/api/v1/dataset-versions/{version_id}/operations",
                               {"operation": operation, "params": params or {}}, format="json")
        assert response.status_code == 202, response.content
        built = _ready(response.json()["id"])
        assert built.status == "ready", built.report
        return built

    normalised = run(base.id, "normalise")
    exact = run(normalised.id, "dedup_exact")
    redacted = run(exact.id, "pii_redact")
    split = run(redacted.id, "split", {"ratios": [0.5, 0.25, 0.25], "seed": 7, "stratify": True})

    assert exact.row_count == base.row_count - 1 and exact.report["removed"] == 1
    texts = [row["text"] for row in client.get(f"/api/v1/dataset-versions/{redacted.id}/rows?limit=500").json()["rows"]]
    assert not any("jane.doe@example.com" in text for text in texts) and any("[EMAIL]" in text for text in texts)
    assert "  " not in texts[0]
    assert split.stats["splits"] == split.report["splits"] and sum(split.report["splits"].values()) == redacted.row_count
    lineage = client.get(f"/api/v1/dataset-versions/{split.id}/lineage").json()
    assert [item["operation"] for item in lineage] == ["split", "pii_redact", "dedup_exact", "normalise", "upload"]
    assert [item["number"] for item in lineage] == [5, 4, 3, 2, 1]


def test_a_ready_version_cannot_be_changed_and_has_no_route_that_would(owner, celery_worker):
    tenant_id, client = owner
    dataset = _dataset(client)
    version = _ready(_upload(client, dataset["id"], "a.jsonl", _jsonl(_instruction_rows(3))).json()["id"])

    with pytest.raises(DatabaseError, match="cannot change"):
        with tenant_atomic(tenant_id), connection.cursor() as cursor:
            cursor.execute("UPDATE datasets_datasetversion SET row_count = 99 WHERE id = %s", [str(version.id)])
    for verb in ("put", "patch", "delete"):
        assert getattr(client, verb)(f"/api/v1/dataset-versions/{version.id}", {}, format="json").status_code == 405
    assert system(DatasetVersion).get(id=version.id).row_count == 3


@pytest.mark.parametrize("operation, params, field", [
    ("dedup_near", {"threshold": 2}, "params.threshold"),
    ("split", {"ratios": [0.5, 0.5]}, "params.ratios"),
    ("split", {"stratify": True}, "params.stratify"),
    ("filter", {}, "params"),
    ("filter", {"pattern": "("}, "params.pattern"),
    ("normalise", {"chinese": "x2y"}, "params.chinese"),
    ("pii_redact", {"types": ["ssn"]}, "params.types"),
    ("normalise", {"bogus": 1}, "params.bogus"),
    ("compress", {}, "operation"),
])
def test_bad_operation_parameters_are_400_naming_them_and_build_nothing(owner, celery_worker, operation, params, field):
    tenant_id, client = owner
    dataset = _dataset(client)
    version = _ready(_upload(client, dataset["id"], "a.jsonl", _jsonl(_instruction_rows(3))).json()["id"])

    response = client.post(f"/api/v1/dataset-versions/{version.id}/operations",
                           {"operation": operation, "params": params}, format="json")

    assert response.status_code == 400, response.content
    assert field in response.content.decode()
    assert system(DatasetVersion).filter(dataset_id=dataset["id"]).count() == 1


def test_dataset_names_are_unique_per_tenant_and_modalities_are_checked(owner, make_tenant, api_client_for):
    _, client = owner
    _dataset(client, name="faq")
    other = api_client_for(make_tenant().user)

    assert client.post("/api/v1/datasets", {"name": "faq", "modality": "text"}, format="json").status_code == 409
    assert other.post("/api/v1/datasets", {"name": "faq", "modality": "text"}, format="json").status_code == 201
    assert client.post("/api/v1/datasets", {"name": "x", "modality": "video"}, format="json").status_code == 400
    assert system(Dataset).filter(name="faq").count() == 2


def test_near_dedup_filter_and_augment_versions(owner, celery_worker):
    _, client = owner
    dataset = _dataset(client, modality="text", name="copy")
    words = ["router", "modem", "cable", "signal", "fiber", "invoice", "refund", "account", "password", "screen",
             "battery", "charger", "warranty", "delivery", "parcel", "address", "network", "speed", "outage", "upgrade"]
    chooser = random.Random(5)
    rows = [{"text": " ".join(chooser.choice(words) + str(chooser.randrange(100)) for _ in range(12))} for i in range(60)]
    rows += [{"text": rows[i]["text"].upper() + "!"} for i in range(0, 10)]  # near-copies
    rows += [{"text": "这是一个关于路由器重置的问题，请帮我看看怎么办。"}]
    base = _ready(_upload(client, dataset["id"], "copy.jsonl", _jsonl(rows)).json()["id"])

    def run(version_id, operation, params=None):
        response = client.post(f"/api/v1/dataset-versions/{version_id}/operations",
                               {"operation": operation, "params": params or {}}, format="json")
        assert response.status_code == 202, response.content
        built = _ready(response.json()["id"])
        assert built.status == "ready", built.report
        return built

    near = run(base.id, "dedup_near", {"threshold": 0.7})
    chinese = run(near.id, "filter", {"languages": ["zh"]})
    augmented = run(near.id, "augment", {"ops": ["swap", "char_noise"], "copies": 1, "seed": 3})

    assert near.report["removed"] == 10 and near.report["clusters"] == 10 and near.row_count == 61
    assert chinese.row_count == 1 and chinese.report["removed"] == {"language": 60}
    assert augmented.row_count == 122 and augmented.report["added"] == 61
    page = client.get(f"/api/v1/dataset-versions/{augmented.id}/rows?limit=2").json()["rows"]
    assert [row["augmented"] for row in page] == [False, True] and page[0]["text"] != page[1]["text"]


def test_a_pattern_that_could_backtrack_forever_is_refused_before_any_job(owner, celery_worker):
    _, client = owner
    dataset = _dataset(client, modality="text", name="regex")
    version = _ready(_upload(client, dataset["id"], "a.jsonl", _jsonl([{"text": "aaaa"}])).json()["id"])

    response = client.post(f"/api/v1/dataset-versions/{version.id}/operations",
                           {"operation": "filter", "params": {"pattern": "(a+)+$"}}, format="json")

    assert response.status_code == 400 and "params.pattern" in response.json()["error"]["message"]
