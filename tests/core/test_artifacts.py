"""The artifact store over the real S3 endpoint (HTTP, boto3), and the artifacts API."""
import hashlib
import io
import os
import time
import uuid

import pytest
import requests
from django.test import override_settings

from lode.core import artifacts
from lode.core.errors import NotFound, ValidationFailed
from lode.core.models import Artifact
from tests.conftest import TRANSACTIONAL_WITH_SYSTEM, rows, system


def _tenant() -> str:
    return str(uuid.uuid4())


def test_round_trip_put_get_stream_list_delete():
    tenant = _tenant()
    stored = artifacts.object_put(tenant_id=tenant, key="reports/a.txt", data=b"hello lode", content_type="text/plain")

    assert stored.size == 10 and stored.content_type == "text/plain"
    assert artifacts.object_get(tenant_id=tenant, key="reports/a.txt") == b"hello lode"
    assert b"".join(artifacts.object_stream(tenant_id=tenant, key="reports/a.txt", chunk_size=3)) == b"hello lode"
    assert [o.key for o in artifacts.object_list(tenant_id=tenant, prefix="reports")] == ["reports/a.txt"]
    artifacts.object_delete(tenant_id=tenant, key="reports/a.txt")
    with pytest.raises(NotFound):
        artifacts.object_get(tenant_id=tenant, key="reports/a.txt")


def test_keys_are_prefixed_by_tenant_and_cannot_escape_it():
    tenant, other = _tenant(), _tenant()
    artifacts.object_put(tenant_id=tenant, key="x.bin", data=b"mine")

    assert artifacts.scoped_key(tenant_id=tenant, key="x.bin") == f"tenants/{tenant}/x.bin"
    assert not artifacts.object_exists(tenant_id=other, key="x.bin")
    for bad in ("../x.bin", "a/../../x.bin", "", "/"):
        with pytest.raises(ValidationFailed):
            artifacts.scoped_key(tenant_id=tenant, key=bad)


def test_multipart_upload_of_a_file_over_16_mb(tmp_path):
    tenant = _tenant()
    source = tmp_path / "big.bin"
    payload = os.urandom(1024 * 1024) * 17  # 17 MiB
    source.write_bytes(payload)
    parts = []
    client = artifacts.s3_client()
    client.meta.events.register("before-parameter-build.s3.UploadPart", lambda **kw: parts.append(kw["params"]["PartNumber"]))
    try:
        stored = artifacts.file_put(tenant_id=tenant, key="big/big.bin", path=source)
    finally:
        client.meta.events.unregister("before-parameter-build.s3.UploadPart")

    assert stored.size == len(payload)
    assert sorted(parts) == [1, 2, 3]  # 8 MiB parts
    fetched = artifacts.file_get(tenant_id=tenant, key="big/big.bin", path=tmp_path / "back.bin")
    assert hashlib.sha256(fetched.read_bytes()).digest() == hashlib.sha256(payload).digest()


def test_client_driven_multipart_upload_through_presigned_part_urls():
    tenant = _tenant()
    upload_id = artifacts.multipart_start(tenant_id=tenant, key="direct/upload.bin")
    part1, part2 = os.urandom(5 * 1024 * 1024), os.urandom(1024)
    etags = []
    for number, part in ((1, part1), (2, part2)):
        url = artifacts.multipart_part_url(tenant_id=tenant, key="direct/upload.bin", upload_id=upload_id, part_number=number)
        response = requests.put(url, data=part, timeout=30)
        assert response.status_code == 200
        etags.append((number, response.headers["ETag"]))

    stored = artifacts.multipart_complete(tenant_id=tenant, key="direct/upload.bin", upload_id=upload_id, parts=etags)

    assert stored.size == len(part1) + len(part2)
    assert artifacts.object_get(tenant_id=tenant, key="direct/upload.bin") == part1 + part2


def test_presigned_url_works_over_http_and_expires():
    tenant = _tenant()
    artifacts.object_put(tenant_id=tenant, key="share/me.txt", data=b"presigned bytes")

    url = artifacts.presigned_get_url(tenant_id=tenant, key="share/me.txt", expires_in=2)

    assert url.startswith("http://127.0.0.1")
    assert requests.get(url, timeout=10).content == b"presigned bytes"
    time.sleep(3)
    expired = requests.get(url, timeout=10)
    assert expired.status_code == 403
    assert b"expired" in expired.content.lower()


@pytest.mark.django_db
def test_artifact_api_upload_download_and_delete(make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    upload = io.BytesIO(b"label,text\npositive,great\n")
    upload.name = "reviews.csv"

    created = client.post("/api/v1/artifacts", {"file": upload}, format="multipart")

    assert created.status_code == 201, created.content
    body = created.json()
    assert body["size"] == 26 and body["sha256"] == hashlib.sha256(b"label,text\npositive,great\n").hexdigest()
    download = client.get(f"/api/v1/artifacts/{body['id']}/download").json()
    assert requests.get(download["url"], timeout=10).content == b"label,text\npositive,great\n"
    redirect = client.get(f"/api/v1/artifacts/{body['id']}/download?redirect=1")
    assert redirect.status_code == 302 and "X-Amz-Expires=" in redirect["Location"]
    assert client.get("/api/v1/artifacts").json()["results"][0]["id"] == body["id"]


@TRANSACTIONAL_WITH_SYSTEM
def test_artifact_delete_removes_record_and_bytes(make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    upload = io.BytesIO(b"bytes")
    upload.name = "x.txt"
    artifact_id = client.post("/api/v1/artifacts", {"file": upload}, format="multipart").json()["id"]
    key = system(Artifact).get(id=artifact_id).key

    assert client.delete(f"/api/v1/artifacts/{artifact_id}").status_code == 204

    assert not system(Artifact).filter(id=artifact_id).exists()
    from tenants.models import AuditEvent

    assert system(AuditEvent).filter(tenant_id=tenant.organization.id, action="artifact.deleted", target_id=artifact_id).exists()
    assert not artifacts.object_exists(tenant_id=tenant.organization.id, key=key)


@pytest.mark.django_db
def test_artifact_of_another_tenant_is_not_found(make_tenant, api_client_for):
    owner, stranger = make_tenant(), make_tenant()
    upload = io.BytesIO(b"secret")
    upload.name = "secret.txt"
    artifact_id = api_client_for(owner.user).post("/api/v1/artifacts", {"file": upload}, format="multipart").json()["id"]
    client = api_client_for(stranger.user)

    assert client.get(f"/api/v1/artifacts/{artifact_id}").status_code == 404
    assert client.get(f"/api/v1/artifacts/{artifact_id}/download").status_code == 404
    assert client.delete(f"/api/v1/artifacts/{artifact_id}").status_code == 404


@pytest.mark.django_db
def test_upload_over_the_limit_is_a_413_and_leaves_nothing_behind(make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    upload = io.BytesIO(b"x" * 2048)
    upload.name = "big.txt"

    with override_settings(ARTIFACT_UPLOAD_MAX_BYTES=1024):
        response = client.post("/api/v1/artifacts", {"file": upload}, format="multipart")

    assert response.status_code == 413
    assert response.json()["error"]["details"]["limit_bytes"] == 1024
    assert rows(Artifact, tenant.organization.id) == []
    assert artifacts.object_list(tenant_id=tenant.organization.id, prefix="artifacts") == []


@pytest.mark.django_db
def test_upload_without_a_file_is_a_400_naming_the_field(make_tenant, api_client_for):
    response = api_client_for(make_tenant().user).post("/api/v1/artifacts", {}, format="multipart")

    assert response.status_code == 400
    assert "file" in response.json()["error"]["details"]["fields"]
