"""Runs one job inside a worker: claim it, keep its heartbeat, hand the handler a JobContext,
and record the outcome. Handlers know nothing of Celery."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import close_old_connections, connection

from lode.core.models import Job, JobEvent
from lode.core.observability import job_id_var
from tenants.db_context import tenant_atomic

from . import services
from .metering import job_metering_get
from .registry import job_kind_get

logger = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a handler (by JobContext.check_cancelled) to stop a cancelled job."""


class JobStopped(Exception):
    """Ends a job as failed with a given code (e.g. quota_exceeded) instead of handler_error."""

    def __init__(self, *, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# Where the job mechanism keeps its own bookkeeping inside the stored checkpoint: the last compute
# report ({"seq": n, "seconds": "12.5"}), re-sent on resume (and dropped there as a duplicate).
USAGE_KEY = "_usage"


class JobContext:
    """What a handler may do to its job: report progress and metrics, save a checkpoint, and check
    for cancellation. Progress writes are throttled so a tight loop does not flood the database."""

    def __init__(
        self, *, job_id: UUID, tenant_id: UUID, worker: str, attempt: int, checkpoint: dict[str, Any],
        queue: str = "", metered: bool = False,
    ):
        self.job_id = job_id
        self.tenant_id = tenant_id
        self.worker = worker
        self.attempt = attempt
        self.queue = queue
        stored = dict(checkpoint)
        self._last_usage: dict[str, Any] | None = stored.pop(USAGE_KEY, None)
        self.checkpoint = stored
        self._metering = job_metering_get() if metered else None
        self._usage_seq = int(self._last_usage["seq"]) if self._last_usage else 0
        self._segment_started = time.monotonic()
        self._last_progress_write = 0.0
        # The claim has just checked for a cancel request; the first check can wait its interval.
        self._last_cancel_check = time.monotonic()
        # Devices the handler keeps busy: metered compute is wall time x this (a job on 4 GPUs
        # uses 4 GPU-seconds a second). The handler sets it once it knows.
        self.compute_units = 1

    def progress(self, fraction: float, message: str = "", *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress_write < 0.5 and fraction < 1:
            return
        self._last_progress_write = now
        services.job_progress_set(
            tenant_id=self.tenant_id, job_id=self.job_id, worker=self.worker, progress=fraction, message=message
        )

    def metric(self, message: str = "", **values: Any) -> None:
        self._event(JobEvent.Kind.METRIC, message, values)

    def log(self, message: str, **data: Any) -> None:
        self._event(JobEvent.Kind.LOG, message, data)

    def _event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        services.job_event_add(job=Job(id=self.job_id, tenant_id=self.tenant_id), kind=kind, message=message, data=data)

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Stores the handler's resume state and, for a metered job, the compute time since the
        last checkpoint, in one transaction; then stops the job if a hard limit is now reached."""
        self.checkpoint = dict(checkpoint)
        stored = dict(self.checkpoint)
        report = self._usage_report()
        if report is not None:
            stored[USAGE_KEY] = report
        with tenant_atomic(self.tenant_id):
            saved = services.job_checkpoint_save(
                tenant_id=self.tenant_id, job_id=self.job_id, worker=self.worker, checkpoint=stored
            )
            if saved and report is not None:
                self._usage_send(report)
        if saved and report is not None:
            self._last_usage = report
            self._hard_limits_check()

    # --- compute metering (see jobs/metering.py) ---

    def _usage_report(self) -> dict[str, Any] | None:
        if self._metering is None:
            return None
        now = time.monotonic()
        seconds = (Decimal(str(now - self._segment_started)) * self.compute_units).quantize(Decimal("0.000001"))
        self._segment_started = now
        if seconds <= 0:
            return None
        self._usage_seq += 1
        return {"seq": self._usage_seq, "seconds": str(seconds)}

    def _usage_send(self, report: dict[str, Any]) -> bool:
        return self._metering.record_compute(
            tenant_id=self.tenant_id, job_id=self.job_id, seq=int(report["seq"]), seconds=Decimal(report["seconds"]),
            queue=self.queue,
        )

    def usage_resend_last(self) -> None:
        """On resume: the previous attempt's last report again. It was committed with its
        checkpoint, so the ledger drops it as a duplicate; this makes "was it sent?" moot."""
        if self._metering is None or not self._last_usage:
            return
        with tenant_atomic(self.tenant_id):
            new = self._usage_send(self._last_usage)
        self.log("compute usage report re-sent on resume", seq=self._last_usage["seq"], already_recorded=not new)

    def usage_flush(self) -> None:
        """The compute since the last checkpoint, at the job's end (inside the caller's
        transaction with the final state)."""
        report = self._usage_report()
        if report is not None:
            self._usage_send(report)
            self._last_usage = report

    def _hard_limits_check(self) -> None:
        reached = self._metering.hard_limit_reached(tenant_id=self.tenant_id, queue=self.queue)
        if reached:
            names = ", ".join(f"{item['meter']}{':' + item['dimension'] if item['dimension'] else ''}" for item in reached)
            raise JobStopped(
                code="quota_exceeded",
                message=f"Stopped at a checkpoint: the hard limit on {names} is reached. The last checkpoint is kept.",
            )

    def check_cancelled(self, *, every_seconds: float = 1.0) -> None:
        now = time.monotonic()
        if now - self._last_cancel_check < every_seconds:
            return
        self._last_cancel_check = now
        if services.job_is_cancel_requested(tenant_id=self.tenant_id, job_id=self.job_id):
            raise JobCancelled()


class _Heartbeat(threading.Thread):
    """Keeps heartbeat_at fresh while a handler runs, even inside one long step."""

    def __init__(self, *, tenant_id: UUID, job_id: UUID, worker: str, every_seconds: float):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.tenant_id = tenant_id
        self.job_id = job_id
        self.worker = worker
        self.every_seconds = every_seconds
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.every_seconds):
                try:
                    services.job_heartbeat(tenant_id=self.tenant_id, job_id=self.job_id, worker=self.worker)
                except Exception:  # a database blip must not kill the job; the next beat retries
                    logger.warning("heartbeat for job %s failed", self.job_id, exc_info=True)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def job_execute(*, tenant_id: UUID | str, job_id: UUID | str) -> str | None:
    """Entry point used by the Celery task. Idempotent: a second delivery of the same message
    finds the job running elsewhere or finished and does nothing. Returns the final state."""
    close_old_connections()
    worker = worker_name()
    job = services.job_claim(
        tenant_id=tenant_id, job_id=job_id, worker=worker, heartbeat_timeout=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS
    )
    if job is None:
        return None
    token = job_id_var.set(str(job.id))
    heartbeat = _Heartbeat(
        tenant_id=job.tenant_id, job_id=job.id, worker=worker, every_seconds=settings.JOB_HEARTBEAT_SECONDS
    )
    heartbeat.start()
    try:
        kind = job_kind_get(job.kind)
        ctx = JobContext(
            job_id=job.id, tenant_id=job.tenant_id, worker=worker, attempt=job.attempts, checkpoint=job.checkpoint,
            queue=job.queue, metered=kind.is_metered,
        )
        try:
            ctx.usage_resend_last()
            handler = kind.load_handler()
            result = handler(ctx, dict(job.params))
        except JobCancelled:
            with tenant_atomic(job.tenant_id):
                if services.job_cancelled(tenant_id=job.tenant_id, job_id=job.id, worker=worker):
                    ctx.usage_flush()
            return "cancelled"
        except Exception as exc:
            from celery.exceptions import SoftTimeLimitExceeded

            if isinstance(exc, JobStopped):
                code, message = exc.code, exc.message
            elif isinstance(exc, SoftTimeLimitExceeded):
                code, message = "time_limit", "The job ran past its time limit."
            else:
                code, message = "handler_error", f"{type(exc).__name__}: {exc}"
                logger.exception("job %s (%s) failed", job.id, job.kind)
            with tenant_atomic(job.tenant_id):
                if services.job_fail(tenant_id=job.tenant_id, job_id=job.id, worker=worker, error=message, code=code):
                    ctx.usage_flush()
            return "failed"
        with tenant_atomic(job.tenant_id):
            if services.job_succeed(
                tenant_id=job.tenant_id, job_id=job.id, worker=worker, result=result if isinstance(result, dict) else {}
            ):
                ctx.usage_flush()
        return "succeeded"
    finally:
        heartbeat.stop()
        job_id_var.reset(token)
