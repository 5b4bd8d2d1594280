"""Storage metering: once an hour, each tenant's stored bytes become byte-hours in the ledger.

The sample for hour H is keyed `storage:<kind>:<H>`, so a sampler that runs twice, or late, or on
two beat schedulers at once, bills each hour once. Missed hours are filled in up to a day back."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Sum
from django.utils import timezone

from lode.core.models import Artifact
from tenants.db_context import dangerously_all_tenants

from .models import UsageEvent
from .services import UsageInput, usage_record

logger = logging.getLogger(__name__)

BACKFILL_HOURS = 24


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def stored_bytes_by_tenant() -> dict[tuple[str, str], int]:
    """{(tenant_id, storage kind): bytes} across tenants (the platform's own reading): stored
    artifacts and dataset versions (fine-tuned models add theirs when that capability lands)."""
    from lode.datasets.selectors import stored_bytes_by_tenant as dataset_bytes

    totals: dict[tuple[str, str], int] = {}
    for tenant_id, size in dangerously_all_tenants(Artifact).values_list("tenant_id").annotate(total=Sum("size")):
        if size:
            totals[(str(tenant_id), "artifact")] = int(size)
    for tenant_id, size in dataset_bytes().items():
        if size:
            totals[(tenant_id, "dataset")] = size
    return totals


def storage_sample(*, now: datetime | None = None) -> dict[str, int]:
    """Records the last finished hour (and any missed hour of the last day) for every tenant that
    stores something. Current bytes stand for each missed hour: the backfill is an estimate, but
    never a double charge."""
    now = now or timezone.now()
    last_hour = _hour(now) - timedelta(hours=1)
    recorded = duplicates = failed = 0
    for (tenant_id, kind), size in stored_bytes_by_tenant().items():
        events = [
            UsageInput(
                meter="storage_byte_hours", dimension=kind, quantity=size,
                idempotency_key=f"storage:{kind}:{hour:%Y%m%d%H}", source_type=UsageEvent.Source.SYSTEM,
                source_id=f"storage-sampler:{kind}", occurred_at=hour,
            )
            for hour in (last_hour - timedelta(hours=back) for back in range(BACKFILL_HOURS))
        ]
        try:
            result = usage_record(tenant_id=tenant_id, events=events)
        except Exception:  # one tenant's failure must not stop the others' metering
            failed += 1
            logger.exception("storage sampling for tenant %s failed", tenant_id)
            continue
        recorded += result.recorded
        duplicates += result.duplicates
    return {"recorded": recorded, "duplicates": duplicates, "failed": failed}
