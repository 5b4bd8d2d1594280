"""`lode_model.json`: the small manifest saved beside every model folder Lode builds or registers.
It names the model, its task and architecture, lists every file with its size and SHA-256, and
carries a `revision` (a digest of that list) that caches key on. It is written last, so a folder
whose manifest lists files that are all present is a complete build."""
from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST_FILENAME = "lode_model.json"
MANIFEST_VERSION = 1

_LIBRARIES = ("torch", "transformers", "tokenizers", "diffusers", "safetensors")


@dataclass(frozen=True)
class BuiltModel:
    """A model folder in Hugging Face format, ready for `from_pretrained(folder)`."""

    name: str
    folder: Path
    manifest: dict[str, Any]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for library in _LIBRARIES:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_files(folder: Path) -> list[dict[str, Any]]:
    """Every file under `folder` except the manifest, as {path, size, sha256}, sorted by path."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative == MANIFEST_FILENAME:
            continue
        files.append({"path": relative, "size": path.stat().st_size, "sha256": _sha256_file(path)})
    return files


def files_revision(files: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for entry in sorted(files, key=lambda e: e["path"]):
        digest.update(f"{entry['path']}\0{entry['sha256']}\n".encode())
    return digest.hexdigest()


def manifest_write(
    *,
    folder: Path,
    name: str,
    task_type: str,
    architecture: str,
    parameter_count: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes `lode_model.json` into `folder` (after everything else is saved) and returns it."""
    files = folder_files(folder)
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        "task_type": task_type,
        "architecture": architecture,
        "parameter_count": int(parameter_count),
        "built_with": library_versions(),
        "built_at": datetime.now(timezone.utc).isoformat(),
        **(extra or {}),
        "files": files,
        "revision": files_revision(files),
    }
    partial = folder / f".{MANIFEST_FILENAME}.part"
    partial.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    # The rename makes the manifest appear whole or not at all: it is the "build finished" mark.
    partial.replace(folder / MANIFEST_FILENAME)
    return manifest


def manifest_read(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST_FILENAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def folder_is_complete(folder: Path, *, manifest: dict[str, Any] | None = None) -> bool:
    """True when `folder` holds a manifest and every file it lists, with the listed size."""
    manifest = manifest if manifest is not None else manifest_read(folder)
    if not manifest or not isinstance(manifest.get("files"), list):
        return False
    for entry in manifest["files"]:
        path = folder / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return False
    return (folder / MANIFEST_FILENAME).is_file()
