"""The reconciler: the database is the source of truth, so it repairs what the broker lost.

- a queued job whose message was never sent, or was lost (Redis restarted, purged), is sent again,
  with back-off so a long but healthy queue is not flooded with copies (duplicates are harmless:
  only one delivery can claim the job);
- a running job whose heartbeat stopped lost its worker: it is requeued to resume from its
  checkpoint, or failed once it has used its attempts."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from lode.core.models import Job, JobState
from tenants.db_context import dangerously_all_tenants

from . import services

logger = logging.getLogger(__name__)

MAX_REDISPATCH_INTERVAL = timedelta(hours=1)


@dataclass
class ReconcileReport:
    redispatched: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def _redispatch_due(job: Job, now: datetime, after: timedelta) -> bool:
    if job.dispatched_at is None:
        return True
    interval = min(after * (2 ** max(0, job.dispatch_count - 1)), MAX_REDISPATCH_INTERVAL)
    return now - job.dispatched_at >= interval


def jobs_reconcile(
    *,
    redispatch_after_seconds: float | None = None,
    heartbeat_timeout_seconds: float | None = None,
    max_attempts: int | None = None,
    limit: int = 500,
) -> ReconcileReport:
    now = timezone.now()
    after = timedelta(
        seconds=settings.JOB_REDISPATCH_AFTER_SECONDS if redispatch_after_seconds is None else redispatch_after_seconds
    )
    timeout = settings.JOB_HEARTBEAT_TIMEOUT_SECONDS if heartbeat_timeout_seconds is None else heartbeat_timeout_seconds
    attempts = settings.JOB_MAX_ATTEMPTS if max_attempts is None else max_attempts
    report = ReconcileReport()

    # Jobs created in the last few seconds are left alone: their on-commit send may be in flight.
    # The scans span tenants; each repair then runs inside its job's own tenant context.
    queued = dangerously_all_tenants(Job).filter(state=JobState.QUEUED, created_at__lte=now - timedelta(seconds=min(5, after.total_seconds())))
    queued = queued.filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lte=now - after))
    for job in queued.only("id", "tenant_id", "dispatched_at", "dispatch_count").order_by("created_at")[:limit]:
        if _redispatch_due(job, now, after) and services.job_dispatch(tenant_id=job.tenant_id, job_id=job.id):
            report.redispatched.append(str(job.id))

    stale = dangerously_all_tenants(Job).filter(state=JobState.RUNNING).filter(
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - timedelta(seconds=timeout))
    )
    for tenant_id, job_id in stale.values_list("tenant_id", "id")[:limit]:
        outcome = services.job_requeue_lost(
            tenant_id=tenant_id, job_id=job_id, max_attempts=attempts, heartbeat_timeout=timeout
        )
        if outcome == JobState.QUEUED:
            report.requeued.append(str(job_id))
        elif outcome == JobState.FAILED:
            report.failed.append(str(job_id))
        elif outcome == JobState.CANCELLED:
            report.cancelled.append(str(job_id))

    if report.redispatched or report.requeued or report.failed or report.cancelled:
        logger.info(
            "reconciled jobs",
            extra={
                "redispatched": len(report.redispatched),
                "requeued": len(report.requeued),
                "failed": len(report.failed),
                "cancelled": len(report.cancelled),
            },
        )
    return report
