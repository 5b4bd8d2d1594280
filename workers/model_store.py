"""Model folders pulled from the artifact store into the worker's local cache, so that
`from_pretrained(local_path)` loads them without the network.

A folder is fetched whole into a temporary folder and renamed into place, so a folder under its
final name is always complete; it is keyed by the model's revision (a digest of its files), so
re-registering a model with new weights never serves the old ones from the cache."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

from django.conf import settings

from lode.core import artifacts
from lode.core.errors import NotFound
from workers.tiny_models.manifest import MANIFEST_FILENAME, folder_is_complete

logger = logging.getLogger(__name__)

BASE_MODELS_CACHE = "base-models"


def _cache_root(cache_dir: Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else Path(settings.MODEL_CACHE_DIR)


def _listed_manifest(*, tenant_id: UUID | str | None, prefix: str) -> dict[str, Any]:
    """A manifest made from the store's listing, for folders registered without one."""
    manifest_key = f"{prefix}/{MANIFEST_FILENAME}"
    objects = [o for o in artifacts.object_list(tenant_id=tenant_id, prefix=prefix) if o.key != manifest_key]
    files = [{"path": o.key[len(prefix) + 1 :], "size": o.size, "etag": o.etag} for o in objects]
    digest = hashlib.sha256("".join(f"{f['path']}\0{f['etag']}\n" for f in files).encode()).hexdigest()
    return {"files": files, "revision": digest}


def materialize_folder(
    *,
    tenant_id: UUID | str | None,
    prefix: str,
    cache_subdir: str,
    manifest: dict[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """Downloads the model folder stored under `prefix` (every file the manifest lists) into
    `<cache>/<cache_subdir>/<revision>` and returns that folder; reuses it when already complete."""
    prefix = prefix.strip("/")
    manifest = manifest if manifest and isinstance(manifest.get("files"), list) else _listed_manifest(
        tenant_id=tenant_id, prefix=prefix
    )
    if not manifest["files"]:
        raise NotFound(f"No stored files under {prefix!r}", details={"prefix": prefix})
    revision = str(manifest.get("revision") or "unversioned")
    root = _cache_root(cache_dir)
    target = root / cache_subdir / revision[:16]
    if folder_is_complete(target):
        return target

    partial = root / ".partial" / f"{cache_subdir.replace('/', '_')}-{uuid.uuid4().hex}"
    try:
        for entry in manifest["files"]:
            relative = Path(entry["path"])
            # The manifest comes from our own catalog, but a path must still stay inside the folder.
            if relative.is_absolute() or ".." in relative.parts:
                raise NotFound(f"Invalid file path {entry['path']!r} in the manifest of {prefix!r}")
            local = partial / relative
            artifacts.file_get(tenant_id=tenant_id, key=f"{prefix}/{entry['path']}", path=local)
            if local.stat().st_size != entry["size"]:
                raise NotFound(
                    f"Stored file {entry['path']!r} of {prefix!r} has {local.stat().st_size} bytes, "
                    f"the manifest says {entry['size']}",
                    details={"prefix": prefix, "path": entry["path"]},
                )
        # Written last: folder_is_complete() reads it to check the other files.
        (partial / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(partial, target)
        except OSError:
            # Another process finished the same download first (or an incomplete leftover sits
            # there): keep a complete folder, replace an incomplete one.
            if not folder_is_complete(target):
                shutil.rmtree(target, ignore_errors=True)
                os.rename(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("model folder materialized", extra={"prefix": prefix, "folder": str(target)})
    return target


def materialize_base_model(name: str, *, tenant_id: UUID | str | None = None, cache_dir: Path | None = None) -> Path:
    """The local folder of the registered base model `name` (a catalog model, or with tenant_id one
    of that tenant's uploads), downloaded from the artifact store if the cache (settings.MODEL_CACHE_DIR
    unless `cache_dir`) lacks it. Pass the result to `from_pretrained`. Raises NotFound for an
    unknown model or files the store has lost."""
    from lode.training.selectors import base_model_get

    base_model = base_model_get(name=name, tenant_id=tenant_id)
    owner = base_model.tenant_id
    return materialize_folder(
        tenant_id=owner,
        prefix=base_model.artifact_prefix,
        cache_subdir=f"{BASE_MODELS_CACHE}/{base_model.name}" if owner is None else f"tenants/{owner}/base-models/{base_model.id}",
        manifest=base_model.manifest,
        cache_dir=cache_dir,
    )
