"""Job kinds: what a job of each kind runs, on which queue, under which limits.

The web tier validates parameters and enqueues; only the worker imports the handler, so heavy
modules (torch, diffusers) never load in the web process."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.module_loading import import_string

from lode.core.errors import ValidationFailed

QUEUES = ("cpu", "gpu")


@dataclass(frozen=True)
class JobKind:
    name: str
    queue: str
    handler: str  # dotted path to `handler(ctx: JobContext, params: dict) -> dict`
    description: str
    time_limit_seconds: int = 3600
    # Validates and normalises the parameters; raises ValidationFailed naming the field.
    validate_params: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Billing: whether the job's compute time is metered (by default, everything on the gpu
    # queue), and its usage estimate from its (validated) parameters: [(meter, dimension, quantity)],
    # checked against the tenant's quotas before the job is written (see jobs/metering.py).
    metered: bool | None = None
    estimate_usage: Callable[[dict[str, Any]], list[tuple[str, str, Any]]] | None = None
    # Where a job of this kind is created: through the generic jobs API, or only through its app's
    # own endpoint (which checks what the kind's parameters refer to), named here.
    created_through: str = ""

    @property
    def is_metered(self) -> bool:
        return self.queue == "gpu" if self.metered is None else self.metered

    def load_handler(self) -> Callable:
        return import_string(self.handler)


_KINDS: dict[str, JobKind] = {}


def job_kind_register(kind: JobKind) -> JobKind:
    if kind.queue not in QUEUES:
        raise ValueError(f"job kind {kind.name}: unknown queue {kind.queue!r}")
    existing = _KINDS.get(kind.name)
    if existing is not None and existing != kind:
        raise ValueError(f"job kind {kind.name} registered twice")
    _KINDS[kind.name] = kind
    return kind


def job_kind_get(name: str) -> JobKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ValidationFailed(
            f"kind: unknown job kind {name!r}", details={"field": "kind", "known": sorted(_KINDS)}
        ) from None


def job_kind_list() -> list[JobKind]:
    return [_KINDS[name] for name in sorted(_KINDS)]
