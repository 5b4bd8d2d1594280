"""Writes of jobs: creation, dispatch, the state machine, progress, cancellation.

Every state change goes through `_transition`, which locks the row, checks the state machine and
writes the matching event in the same transaction."""
from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import F

from tenants.db_context import tenant_atomic
from django.utils import timezone

from lode.core.errors import Conflict
from lode.core.models import JOB_TRANSITIONS, Job, JobEvent, JobState
from lode.core.observability import request_id_var

from .metering import job_metering_get
from .registry import job_kind_get

logger = logging.getLogger(__name__)


def job_event_add(*, job: Job, kind: str, message: str = "", data: dict[str, Any] | None = None) -> JobEvent:
    event = JobEvent(tenant_id=job.tenant_id, job_id=job.id, kind=kind, message=message[:1000], data=data or {})
    with tenant_atomic(job.tenant_id):
        event.save()
    return event


def job_create(
    *, tenant_id: UUID | str, created_by: Any, kind: str, params: dict[str, Any] | None = None
) -> Job:
    """Writes the job row and its first event; the Celery message is sent when the caller's
    transaction commits, so a worker never sees a job that does not exist yet."""
    job_kind = job_kind_get(kind)
    clean_params = job_kind.validate_params(dict(params or {})) if job_kind.validate_params else dict(params or {})
    estimate: dict[str, Any] = {}
    metering = job_metering_get()
    if job_kind.estimate_usage is not None and metering is not None:
        # Refused up front (402) when the estimate does not fit the tenant's quotas or credit.
        estimate = metering.admit(tenant_id=tenant_id, estimate=job_kind.estimate_usage(clean_params))
    with tenant_atomic(tenant_id):
        job = Job(
            tenant_id=tenant_id,
            created_by=created_by if getattr(created_by, "pk", None) else None,
            kind=job_kind.name,
            queue=job_kind.queue,
            params=clean_params,
            estimate=estimate,
            request_id=request_id_var.get() or "",
        )
        # The database enforces uniqueness and the check constraints; validating them here would
        # cost a query (and a savepoint) each on the hot submit path.
        job.full_clean(exclude=["tenant", "created_by"], validate_unique=False, validate_constraints=False)
        job.save()
        job_event_add(job=job, kind=JobEvent.Kind.STATE, message="queued", data={"state": JobState.QUEUED})
        # The new row needs no re-read: it is queued and nobody else has seen it yet.
        transaction.on_commit(lambda: _send(job))
    return job


def job_dispatch(*, tenant_id: UUID | str, job_id: UUID | str) -> bool:
    """Sends the Celery message for a job that is still queued (the reconciler's re-send)."""
    with tenant_atomic(tenant_id):
        job = Job.objects.only("id", "tenant_id", "kind", "queue", "state").get(id=job_id)
    if job.state != JobState.QUEUED:
        return False
    return _send(job)


def _send(job: Job) -> bool:
    """Sends the message. A broker outage is logged, not raised: the job stays queued and the
    reconciler sends it again. dispatched_at is when the send began: for a new job, the moment
    its transaction committed."""
    from lode.core.tasks import run_job

    sent_at = timezone.now()
    time_limit = job_kind_get(job.kind).time_limit_seconds
    try:
        run_job.apply_async(
            args=[str(job.tenant_id), str(job.id)],
            queue=job.queue,
            time_limit=time_limit + 60,
            soft_time_limit=time_limit,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except Exception:  # the broker's errors are many (kombu, redis, socket); all mean "not sent"
        logger.exception("could not send job %s to queue %s; the reconciler will retry", job.id, job.queue)
        return False
    with tenant_atomic(job.tenant_id):
        Job.objects.filter(id=job.id).update(dispatched_at=sent_at, dispatch_count=F("dispatch_count") + 1)
    return True


def _transition(job: Job, to: str, *, message: str = "", data: dict[str, Any] | None = None, **fields: Any) -> Job:
    """Moves a locked job to `to`; the caller holds the row lock (select_for_update)."""
    if to not in JOB_TRANSITIONS[job.state]:
        raise Conflict(
            f"A {job.state} job cannot become {to}.", details={"state": job.state, "requested": to}
        )
    now = timezone.now()
    job.state = to
    update = {"state"}
    if to in {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}:
        job.finished_at = now
        update.add("finished_at")
    for name, value in fields.items():
        setattr(job, name, value)
        update.add(name)
    job.save(update_fields=sorted(update))
    job_event_add(job=job, kind=JobEvent.Kind.STATE, message=message or to, data={"state": to, **(data or {})})
    return job


def _locked(job_id: UUID | str, tenant_id: UUID | str) -> Job:
    return Job.objects.select_for_update().filter(tenant_id=tenant_id).get(id=job_id)


def job_claim(*, tenant_id: UUID | str, job_id: UUID | str, worker: str, heartbeat_timeout: float) -> Job | None:
    """Called by the worker as it picks up a message. Returns the job now running for this worker,
    or None when there is nothing to do (a duplicate or late message, a cancelled job). A job still
    marked running whose heartbeat stopped is taken over: its worker died."""
    now = timezone.now()
    with tenant_atomic(tenant_id):
        try:
            job = _locked(job_id, tenant_id)
        except Job.DoesNotExist:
            logger.warning("job %s no longer exists; dropping its message", job_id)
            return None
        if job.state == JobState.RUNNING:
            stale = job.heartbeat_at is None or (now - job.heartbeat_at).total_seconds() > heartbeat_timeout
            if not stale:
                return None
            _transition(job, JobState.QUEUED, message="worker lost; taken over", data={"worker": job.worker})
        if job.state != JobState.QUEUED:
            return None
        if job.cancel_requested_at is not None:
            _transition(job, JobState.CANCELLED, message="cancelled before start")
            return None
        return _transition(
            job,
            JobState.RUNNING,
            message="running",
            data={"worker": worker, "attempt": job.attempts + 1},
            attempts=job.attempts + 1,
            started_at=job.started_at or now,
            heartbeat_at=now,
            worker=worker,
        )


def job_heartbeat(*, tenant_id: UUID | str, job_id: UUID | str, worker: str) -> bool:
    """Marks the job alive; False when the job is no longer this worker's to run."""
    with tenant_atomic(tenant_id):
        return bool(
            Job.objects.filter(id=job_id, state=JobState.RUNNING, worker=worker).update(heartbeat_at=timezone.now())
        )


def job_progress_set(
    *, tenant_id: UUID | str, job_id: UUID | str, worker: str, progress: float, message: str = "", record_event: bool = True
) -> None:
    progress = min(1.0, max(0.0, float(progress)))
    with tenant_atomic(tenant_id):
        updated = Job.objects.filter(id=job_id, state=JobState.RUNNING, worker=worker).update(
            progress=progress, progress_message=message[:500], heartbeat_at=timezone.now()
        )
        if updated and record_event:
            job = Job(id=job_id, tenant_id=tenant_id)
            job_event_add(job=job, kind=JobEvent.Kind.PROGRESS, message=message, data={"progress": progress})


def job_checkpoint_save(*, tenant_id: UUID | str, job_id: UUID | str, worker: str, checkpoint: dict[str, Any]) -> bool:
    """Stores the handler's resume state; False when the job is no longer this worker's."""
    with tenant_atomic(tenant_id):
        return bool(Job.objects.filter(id=job_id, state=JobState.RUNNING, worker=worker).update(
            checkpoint=checkpoint, heartbeat_at=timezone.now()
        ))


def job_succeed(*, tenant_id: UUID | str, job_id: UUID | str, worker: str, result: dict[str, Any]) -> Job | None:
    with tenant_atomic(tenant_id):
        job = _locked(job_id, tenant_id)
        if job.state != JobState.RUNNING or job.worker != worker:
            return None  # taken over or cancelled meanwhile: the other outcome stands
        return _transition(job, JobState.SUCCEEDED, message="succeeded", result=result, progress=1.0)


def job_fail(*, tenant_id: UUID | str, job_id: UUID | str, worker: str | None, error: str, code: str) -> Job | None:
    with tenant_atomic(tenant_id):
        job = _locked(job_id, tenant_id)
        if job.is_terminal or (worker is not None and job.worker != worker):
            return None
        return _transition(
            job, JobState.FAILED, message=f"failed: {error}"[:1000], data={"code": code}, error=error, error_code=code
        )


def job_cancelled(*, tenant_id: UUID | str, job_id: UUID | str, worker: str) -> Job | None:
    """The worker stopped a running job because cancellation was requested."""
    with tenant_atomic(tenant_id):
        job = _locked(job_id, tenant_id)
        if job.state != JobState.RUNNING or job.worker != worker:
            return None
        return _transition(job, JobState.CANCELLED, message="cancelled")


def job_cancel(*, tenant_id: UUID | str, job_id: UUID | str) -> Job:
    """A user's cancel: a queued job is cancelled at once; a running one is asked to stop and its
    worker ends it at its next check (within seconds)."""
    with tenant_atomic(tenant_id):
        try:
            job = _locked(job_id, tenant_id)
        except (Job.DoesNotExist, ValueError):
            from lode.core.errors import NotFound

            raise NotFound("Job not found.") from None
        if job.is_terminal:
            raise Conflict(f"The job already {job.state}.", details={"state": job.state})
        if job.state == JobState.QUEUED:
            return _transition(job, JobState.CANCELLED, message="cancelled", cancel_requested_at=timezone.now())
        if job.cancel_requested_at is None:
            job.cancel_requested_at = timezone.now()
            job.save(update_fields=["cancel_requested_at"])
            job_event_add(job=job, kind=JobEvent.Kind.STATE, message="cancel requested", data={"state": job.state})
        return job


def job_is_cancel_requested(*, tenant_id: UUID | str, job_id: UUID | str) -> bool:
    with tenant_atomic(tenant_id):
        return Job.objects.filter(id=job_id, cancel_requested_at__isnull=False).exists()


def job_requeue_lost(*, tenant_id: UUID | str, job_id: UUID | str, max_attempts: int, heartbeat_timeout: float) -> str | None:
    """The reconciler's verdict on a running job whose heartbeat stopped: requeue it (it resumes
    from its checkpoint) or, past max_attempts, fail it. Returns the new state or None."""
    now = timezone.now()
    with tenant_atomic(tenant_id):
        job = _locked(job_id, tenant_id)
        if job.state != JobState.RUNNING:
            return None
        if job.heartbeat_at and (now - job.heartbeat_at).total_seconds() <= heartbeat_timeout:
            return None  # it came back to life between the scan and the lock
        if job.cancel_requested_at is not None:
            _transition(job, JobState.CANCELLED, message="cancelled (worker lost)")
            return JobState.CANCELLED
        if job.attempts >= max_attempts:
            _transition(
                job,
                JobState.FAILED,
                message=f"worker lost {job.attempts} times",
                error=f"The worker running this job stopped responding ({job.attempts} attempts).",
                error_code="worker_lost",
            )
            return JobState.FAILED
        _transition(job, JobState.QUEUED, message="worker lost; requeued", data={"worker": job.worker})
        transaction.on_commit(lambda: _send(job))
        return JobState.QUEUED
