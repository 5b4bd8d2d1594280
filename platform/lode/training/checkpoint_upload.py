"""A tenant's own base model, uploaded as a zip of a Hugging Face-format folder: checked before
anything is stored. Plain Python (no Django): the service hands over a local zip and gets back the
extracted folder and what it is.

What is accepted:
- transformers checkpoints (config.json with `architectures` and `model_type`, a tokenizer, weights
  as .safetensors) of a causal LM (`...ForCausalLM`, `...LMHeadModel`) or a sequence classifier
  (`...ForSequenceClassification`); diffusers pipelines (model_index.json, a unet/ with .safetensors
  weights) for text-to-image.
- Only data files: .json, .safetensors, .txt, .model (SentencePiece), .jinja, .md. Pickle-based
  weights (.bin, .pt, .pth, .ckpt, .pkl) are refused, since loading them can run code; so is code.
- Zip safety: no absolute paths, '..', backslashes, drive letters, symlinks or duplicate names; a
  member count and total size limit; a compression ratio limit per member; each member is inflated
  to at most the size its header declares.
- The parameter count comes from the safetensors headers (8-byte length, then JSON with each
  tensor's shape and offsets), which are checked against the file sizes."""
from __future__ import annotations

import json
import math
import posixpath
import shutil
import stat
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ALLOWED_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".jinja", ".md")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".h5", ".msgpack")
MAX_MEMBERS = 2000
MAX_RATIO = 200
RATIO_FLOOR_BYTES = 64 * 1024
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_CHUNK = 1024 * 1024


class CheckpointRefused(Exception):
    def __init__(self, message: str, *, code: str = "invalid_checkpoint", path: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.path = path


@dataclass
class Checkpoint:
    folder: Path
    task_type: str
    architecture: str
    model_type: str
    parameter_count: int
    files: list[str] = field(default_factory=list)


def _member_names(archive: zipfile.ZipFile, *, max_bytes: int) -> list[zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise CheckpointRefused(f"the zip has {len(infos)} members; at most {MAX_MEMBERS}", code="zip_bomb")
    seen: set[str] = set()
    total = 0
    files = []
    for info in infos:
        name = info.filename
        mode = info.external_attr >> 16
        if (name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":")
                or ".." in name.split("/") or stat.S_ISLNK(mode)):
            raise CheckpointRefused(f"unsafe member name {name!r}", code="zip_unsafe", path=name)
        if name in seen:
            raise CheckpointRefused(f"member {name!r} appears twice", code="zip_unsafe", path=name)
        seen.add(name)
        if info.is_dir():
            continue
        total += info.file_size
        if total > max_bytes:
            raise CheckpointRefused(f"the checkpoint inflates past {max_bytes} bytes", code="too_large")
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise CheckpointRefused(f"member {name!r} compresses more than {MAX_RATIO}:1", code="zip_bomb", path=name)
        files.append(info)
    return files


def _common_root(names: list[str]) -> str:
    """A single top-level folder every member sits in ("my-model/"), else ""."""
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1 and all("/" in name for name in names):
        return tops.pop() + "/"
    return ""


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(info) as source, open(target, "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise CheckpointRefused(f"member {info.filename!r} inflates past its declared size", code="zip_bomb",
                                        path=info.filename)
            out.write(chunk)


def safetensors_parameters(path: Path) -> int:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointRefused(f"{path.name} is not a safetensors file", path=path.name)
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_SAFETENSORS_HEADER, size - 8):
            raise CheckpointRefused(f"{path.name} has a broken safetensors header", path=path.name)
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            raise CheckpointRefused(f"{path.name} has a broken safetensors header", path=path.name) from None
    if not isinstance(header, dict):
        raise CheckpointRefused(f"{path.name} has a broken safetensors header", path=path.name)
    count = 0
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            shape, (start, end) = entry["shape"], entry["data_offsets"]
            if not (0 <= start <= end <= data_size) or any(int(dim) < 0 for dim in shape):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise CheckpointRefused(f"{path.name}: tensor {name!r} is described wrongly", path=path.name) from None
        count += math.prod(int(dim) for dim in shape)
    return count


def _task_of(architecture: str) -> str | None:
    if architecture.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal_lm"
    if architecture.endswith("ForSequenceClassification"):
        return "sequence_classification"
    return None


def checkpoint_read(zip_path: str | Path, *, max_bytes: int) -> Checkpoint:
    """Checks and extracts the zip into a new temporary folder (the caller removes it)."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError):
        raise CheckpointRefused("the file is not a zip of a model folder", code="format") from None
    folder = Path(tempfile.mkdtemp(prefix="lode-checkpoint-"))
    try:
        with archive:
            infos = _member_names(archive, max_bytes=max_bytes)
            if not infos:
                raise CheckpointRefused("the zip holds no files", code="empty")
            root = _common_root([info.filename for info in infos])
            relative: list[str] = []
            for info in infos:
                name = info.filename[len(root):]
                base = posixpath.basename(name).lower()
                if base.startswith(".") or base in ("readme", "license"):
                    continue
                if base.endswith(PICKLE_SUFFIXES):
                    raise CheckpointRefused(f"{name}: pickle-based weights can run code when loaded; convert them to "
                                            ".safetensors", code="unsafe_format", path=name)
                if not base.endswith(ALLOWED_SUFFIXES):
                    raise CheckpointRefused(f"{name}: only {', '.join(ALLOWED_SUFFIXES)} files are accepted",
                                            code="unsafe_format", path=name)
                _extract(archive, info, folder / name)
                relative.append(name)
        return _describe(folder, relative)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise CheckpointRefused(f"{path.name} is not valid JSON", path=path.name) from None
    if not isinstance(value, dict):
        raise CheckpointRefused(f"{path.name} is not a JSON object", path=path.name)
    return value


def _describe(folder: Path, files: list[str]) -> Checkpoint:
    weights = [name for name in files if name.endswith(".safetensors")]
    if (folder / "model_index.json").is_file():
        index = _read_json(folder / "model_index.json")
        if not any(name.startswith("unet/") for name in weights):
            raise CheckpointRefused("a diffusers pipeline needs unet/ weights in .safetensors", path="unet/")
        architecture = str(index.get("_class_name") or "DiffusionPipeline")
        return Checkpoint(folder=folder, task_type="text_to_image", architecture=architecture, model_type="diffusers",
                          parameter_count=sum(safetensors_parameters(folder / name) for name in weights), files=files)
    if not (folder / "config.json").is_file():
        raise CheckpointRefused("no config.json (or model_index.json) in the folder", path="config.json")
    config = _read_json(folder / "config.json")
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        raise CheckpointRefused("config.json names no architectures", path="config.json")
    architecture = architectures[0]
    task_type = _task_of(architecture)
    if task_type is None:
        raise CheckpointRefused(f"{architecture} is neither a causal LM nor a sequence classifier", path="config.json")
    if not isinstance(config.get("model_type"), str):
        raise CheckpointRefused("config.json has no model_type", path="config.json")
    if not weights:
        raise CheckpointRefused("no .safetensors weights in the folder", path="model.safetensors")
    if not any(name in files for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise CheckpointRefused("no tokenizer (tokenizer.json or tokenizer_config.json)", path="tokenizer.json")
    return Checkpoint(folder=folder, task_type=task_type, architecture=architecture, model_type=config["model_type"],
                      parameter_count=sum(safetensors_parameters(folder / name) for name in weights), files=files)
