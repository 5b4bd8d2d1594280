"""Billing's side of the job mechanism (lode.core.jobs.metering): admission of a job's usage
estimate, compute-time metering per checkpoint, and the hard-limit check that stops a job."""
from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings

from . import services
from .models import UsageEvent


def compute_dimension(queue: str) -> str:
    """The GPU class a queue's worker bills as: this worker's configured class."""
    return settings.GPU_CLASS


class BillingJobMetering:
    def admit(self, *, tenant_id: UUID | str, estimate: list[tuple[str, str, Any]]) -> dict[str, Any]:
        items = [
            services.UsageEstimate(meter=meter, dimension=dimension, quantity=Decimal(str(quantity)))
            for meter, dimension, quantity in estimate if Decimal(str(quantity)) > 0
        ]
        if not items:
            return {}
        admission = services.usage_admit(tenant_id=tenant_id, estimate=items)
        return {
            "usage": admission.usage, "estimated_cost_minor": admission.estimated_cost_minor,
            "remaining_minor": admission.remaining_minor, "currency": admission.currency,
        }

    def record_compute(self, *, tenant_id: UUID | str, job_id: UUID | str, seq: int, seconds: Decimal, queue: str) -> bool:
        result = services.usage_record(tenant_id=tenant_id, events=[services.UsageInput(
            meter="gpu_seconds", dimension=compute_dimension(queue), quantity=seconds,
            idempotency_key=f"job:{job_id}:compute:{seq}", source_type=UsageEvent.Source.JOB, source_id=str(job_id),
        )])
        return result.recorded == 1

    def hard_limit_reached(self, *, tenant_id: UUID | str, queue: str) -> list[dict[str, Any]]:
        state = services.limits_check(tenant_id=tenant_id, meters=["gpu_seconds"])
        dimension = compute_dimension(queue)
        return [item for item in state.hard_reached if item["dimension"] in ("", dimension)]
