"""Reads of jobs and their events, always within one tenant."""
from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from lode.core.errors import NotFound
from lode.core.models import Job, JobEvent


def job_list(*, tenant_id: UUID | str, limit: int = 50, state: str | None = None) -> QuerySet[Job]:
    jobs = Job.objects.filter(tenant_id=tenant_id)
    if state:
        jobs = jobs.filter(state=state)
    return jobs.order_by("-created_at", "-id")[:limit]


def job_get(*, tenant_id: UUID | str, job_id: UUID | str) -> Job:
    try:
        return Job.objects.get(tenant_id=tenant_id, id=job_id)
    except (Job.DoesNotExist, ValueError):
        raise NotFound("Job not found.") from None


def job_event_list(*, tenant_id: UUID | str, job_id: UUID | str, after_id: int | None = None) -> QuerySet[JobEvent]:
    events = JobEvent.objects.filter(tenant_id=tenant_id, job_id=job_id)
    if after_id is not None:
        events = events.filter(id__gt=after_id)
    return events.order_by("id")
