"""The artifact store: the one module that talks to S3 (boto3). Every tenant object lives under
`tenants/<tenant_id>/`; platform-wide objects (the base-model catalog) under `platform/`.

Keys given to this module are relative ("datasets/<id>/part-0.parquet"); it adds the prefix, so a
caller cannot reach outside its tenant by building a key by hand."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO
from uuid import UUID

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.client import Config
from botocore.exceptions import ClientError
from django.conf import settings

from lode.core.errors import NotFound, ValidationFailed

PLATFORM_SCOPE = "platform"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    etag: str
    content_type: str | None = None


@lru_cache(maxsize=None)
def _client_for(endpoint: str | None, region: str, access_key: str, secret_key: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def s3_client():
    # Cached per configuration: boto3 clients are thread-safe, sessions are not.
    return _client_for(
        settings.S3_ENDPOINT_URL,
        settings.S3_REGION,
        settings.S3_ACCESS_KEY_ID,
        settings.S3_SECRET_ACCESS_KEY,
    )


def _transfer_config() -> TransferConfig:
    return TransferConfig(
        multipart_threshold=settings.S3_MULTIPART_THRESHOLD_BYTES,
        multipart_chunksize=settings.S3_MULTIPART_CHUNK_BYTES,
        max_concurrency=4,
    )


def _clean_relative_key(key: str) -> str:
    parts = key.strip("/").split("/")
    if not key.strip("/") or any(part in {"", ".", ".."} for part in parts):
        raise ValidationFailed(f"Invalid object key {key!r}", details={"key": key})
    return "/".join(parts)


def scoped_key(*, tenant_id: UUID | str | None, key: str) -> str:
    """The full S3 key for a tenant's (or, with tenant_id=None, the platform's) relative key."""
    relative = _clean_relative_key(key)
    if tenant_id is None:
        return f"{PLATFORM_SCOPE}/{relative}"
    return f"tenants/{UUID(str(tenant_id))}/{relative}"


def bucket_ensure() -> None:
    client = s3_client()
    try:
        client.head_bucket(Bucket=settings.S3_BUCKET)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        client.create_bucket(Bucket=settings.S3_BUCKET)


def object_put(
    *, tenant_id: UUID | str | None, key: str, data: bytes | BinaryIO, content_type: str | None = None
) -> StoredObject:
    """Stores bytes or a readable file object; large files go up as a multipart upload."""
    full_key = scoped_key(tenant_id=tenant_id, key=key)
    extra = {"ContentType": content_type} if content_type else {}
    client = s3_client()
    if isinstance(data, (bytes, bytearray)):
        client.put_object(Bucket=settings.S3_BUCKET, Key=full_key, Body=bytes(data), **extra)
    else:
        client.upload_fileobj(data, settings.S3_BUCKET, full_key, ExtraArgs=extra or None, Config=_transfer_config())
    return object_head(tenant_id=tenant_id, key=key)


def file_put(*, tenant_id: UUID | str | None, key: str, path: Path | str, content_type: str | None = None) -> StoredObject:
    with open(path, "rb") as handle:
        return object_put(tenant_id=tenant_id, key=key, data=handle, content_type=content_type)


def object_head(*, tenant_id: UUID | str | None, key: str) -> StoredObject:
    full_key = scoped_key(tenant_id=tenant_id, key=key)
    try:
        head = s3_client().head_object(Bucket=settings.S3_BUCKET, Key=full_key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            raise NotFound(f"No stored object {key!r}") from None
        raise
    return StoredObject(
        key=key, size=head["ContentLength"], etag=head["ETag"].strip('"'), content_type=head.get("ContentType")
    )


def object_exists(*, tenant_id: UUID | str | None, key: str) -> bool:
    try:
        object_head(tenant_id=tenant_id, key=key)
    except NotFound:
        return False
    return True


def object_get(*, tenant_id: UUID | str | None, key: str) -> bytes:
    return b"".join(object_stream(tenant_id=tenant_id, key=key))


def object_stream(*, tenant_id: UUID | str | None, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """Yields the object's bytes in chunks, never holding the whole object in memory."""
    full_key = scoped_key(tenant_id=tenant_id, key=key)
    try:
        response = s3_client().get_object(Bucket=settings.S3_BUCKET, Key=full_key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            raise NotFound(f"No stored object {key!r}") from None
        raise
    body = response["Body"]
    try:
        yield from body.iter_chunks(chunk_size)
    finally:
        body.close()


def object_get_head(*, tenant_id: UUID | str | None, key: str, length: int) -> bytes:
    """The first `length` bytes of an object (a ranged GET), e.g. to sniff a file's format."""
    try:
        response = s3_client().get_object(
            Bucket=settings.S3_BUCKET, Key=scoped_key(tenant_id=tenant_id, key=key), Range=f"bytes=0-{max(0, length - 1)}"
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            raise NotFound(f"No stored object {key!r}") from None
        raise
    return response["Body"].read()


def file_get(*, tenant_id: UUID | str | None, key: str, path: Path | str) -> Path:
    """Downloads to `path` atomically (a partial download never appears under the final name)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        s3_client().download_file(
            settings.S3_BUCKET, scoped_key(tenant_id=tenant_id, key=key), str(partial), Config=_transfer_config()
        )
    except ClientError as exc:
        partial.unlink(missing_ok=True)
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            raise NotFound(f"No stored object {key!r}") from None
        raise
    partial.replace(target)
    return target


def object_list(*, tenant_id: UUID | str | None, prefix: str) -> list[StoredObject]:
    full_prefix = scoped_key(tenant_id=tenant_id, key=prefix).rstrip("/") + "/"
    strip = len(scoped_key(tenant_id=tenant_id, key="x")) - 1
    objects: list[StoredObject] = []
    paginator = s3_client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.S3_BUCKET, Prefix=full_prefix):
        for item in page.get("Contents", []):
            objects.append(StoredObject(key=item["Key"][strip:], size=item["Size"], etag=item["ETag"].strip('"')))
    return objects


def object_delete(*, tenant_id: UUID | str | None, key: str) -> None:
    s3_client().delete_object(Bucket=settings.S3_BUCKET, Key=scoped_key(tenant_id=tenant_id, key=key))


def prefix_delete(*, tenant_id: UUID | str | None, prefix: str) -> int:
    objects = object_list(tenant_id=tenant_id, prefix=prefix)
    client = s3_client()
    for start in range(0, len(objects), 1000):
        batch = objects[start : start + 1000]
        client.delete_objects(
            Bucket=settings.S3_BUCKET,
            Delete={"Objects": [{"Key": scoped_key(tenant_id=tenant_id, key=o.key)} for o in batch], "Quiet": True},
        )
    return len(objects)


def presigned_get_url(
    *, tenant_id: UUID | str | None, key: str, expires_in: int | None = None, filename: str | None = None
) -> str:
    """A short-lived URL that lets a client download one object straight from S3."""
    ttl = expires_in if expires_in is not None else settings.S3_PRESIGN_TTL_SECONDS
    params = {"Bucket": settings.S3_BUCKET, "Key": scoped_key(tenant_id=tenant_id, key=key)}
    if filename:
        params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
    return s3_client().generate_presigned_url("get_object", Params=params, ExpiresIn=ttl)


# --- Multipart upload driven by a client (large uploads straight to S3) ------------------------

def multipart_start(*, tenant_id: UUID | str | None, key: str, content_type: str | None = None) -> str:
    extra = {"ContentType": content_type} if content_type else {}
    response = s3_client().create_multipart_upload(
        Bucket=settings.S3_BUCKET, Key=scoped_key(tenant_id=tenant_id, key=key), **extra
    )
    return response["UploadId"]


def multipart_part_url(
    *, tenant_id: UUID | str | None, key: str, upload_id: str, part_number: int, expires_in: int | None = None
) -> str:
    ttl = expires_in if expires_in is not None else settings.S3_PRESIGN_TTL_SECONDS
    return s3_client().generate_presigned_url(
        "upload_part",
        Params={
            "Bucket": settings.S3_BUCKET,
            "Key": scoped_key(tenant_id=tenant_id, key=key),
            "UploadId": upload_id,
            "PartNumber": part_number,
        },
        ExpiresIn=ttl,
    )


def multipart_upload_part(
    *, tenant_id: UUID | str | None, key: str, upload_id: str, part_number: int, data: bytes
) -> str:
    response = s3_client().upload_part(
        Bucket=settings.S3_BUCKET,
        Key=scoped_key(tenant_id=tenant_id, key=key),
        UploadId=upload_id,
        PartNumber=part_number,
        Body=data,
    )
    return response["ETag"]


def multipart_complete(
    *, tenant_id: UUID | str | None, key: str, upload_id: str, parts: list[tuple[int, str]]
) -> StoredObject:
    s3_client().complete_multipart_upload(
        Bucket=settings.S3_BUCKET,
        Key=scoped_key(tenant_id=tenant_id, key=key),
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in sorted(parts)]},
    )
    return object_head(tenant_id=tenant_id, key=key)


def multipart_abort(*, tenant_id: UUID | str | None, key: str, upload_id: str) -> None:
    s3_client().abort_multipart_upload(
        Bucket=settings.S3_BUCKET, Key=scoped_key(tenant_id=tenant_id, key=key), UploadId=upload_id
    )


def sha256_of_stream(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def store_ping() -> None:
    """Raises unless the bucket answers within a couple of seconds (readiness probe: no retries)."""
    client = boto3.client(
        "s3",
        endpoint_url=settings.S3_ENDPOINT_URL,
        region_name=settings.S3_REGION,
        aws_access_key_id=settings.S3_ACCESS_KEY_ID,
        aws_secret_access_key=settings.S3_SECRET_ACCESS_KEY,
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=2
        ),
    )
    client.head_bucket(Bucket=settings.S3_BUCKET)
