"""The meters Lode bills by. A usage event names a meter and, for meters priced per class, a
dimension (the GPU class of the device, the size class of the model). The set is closed: an
unknown meter or dimension is refused, so nothing can be recorded that no price could ever rate."""
from __future__ import annotations

from dataclasses import dataclass

from lode.core.errors import ValidationFailed

GPU_CLASSES = ("cpu", "t4", "l4", "a10g", "a100", "h100", "h200")
MODEL_SIZE_CLASSES = ("tiny", "small", "medium", "large")
STORAGE_KINDS = ("dataset", "model", "artifact")


@dataclass(frozen=True)
class Meter:
    name: str
    unit: str
    description: str
    dimension_name: str = ""
    dimensions: tuple[str, ...] = ()

    def dimension_check(self, dimension: str) -> str:
        if not self.dimensions:
            if dimension:
                raise ValidationFailed(
                    f"dimension: meter {self.name} has no dimensions", details={"field": "dimension", "meter": self.name}
                )
            return ""
        if dimension not in self.dimensions:
            raise ValidationFailed(
                f"dimension: meter {self.name} needs a {self.dimension_name}, one of {', '.join(self.dimensions)}",
                details={"field": "dimension", "meter": self.name, "allowed": list(self.dimensions)},
            )
        return dimension


METERS: dict[str, Meter] = {
    meter.name: meter
    for meter in (
        Meter("gpu_seconds", "GPU-second", "Accelerator time of training and generation work",
              "gpu_class", GPU_CLASSES),
        Meter("input_tokens", "token", "Prompt tokens read by generation", "model_size", MODEL_SIZE_CLASSES),
        Meter("output_tokens", "token", "Tokens generated", "model_size", MODEL_SIZE_CLASSES),
        Meter("images", "image", "Images generated", "model_size", MODEL_SIZE_CLASSES),
        Meter("storage_byte_hours", "byte-hour", "Bytes of datasets, models and artifacts kept, per hour",
              "storage_kind", STORAGE_KINDS),
        Meter("labeled_tasks", "task", "Labeling tasks completed"),
        Meter("moderation_reviews", "review", "Moderation items reviewed by a person"),
    )
}


def meter_get(name: str) -> Meter:
    try:
        return METERS[name]
    except KeyError:
        raise ValidationFailed(
            f"meter: unknown meter {name!r}", details={"field": "meter", "known": sorted(METERS)}
        ) from None
