"""Runs one job inside a worker: claim it, keep its heartbeat, hand the handler a JobContext,
and record the outcome. Handlers know nothing of Celery."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import close_old_connections, connection

from lode.core.models import Job, JobEvent
from lode.core.observability import job_id_var

from . import services
from .registry import job_kind_get

logger = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a handler (by JobContext.check_cancelled) to stop a cancelled job."""


class JobContext:
    """What a handler may do to its job: report progress and metrics, save a checkpoint, and check
    for cancellation. Progress writes are throttled so a tight loop does not flood the database."""

    def __init__(self, *, job_id: UUID, tenant_id: UUID, worker: str, attempt: int, checkpoint: dict[str, Any]):
        self.job_id = job_id
        self.tenant_id = tenant_id
        self.worker = worker
        self.attempt = attempt
        self.checkpoint = dict(checkpoint)
        self._last_progress_write = 0.0
        # The claim has just checked for a cancel request; the first check can wait its interval.
        self._last_cancel_check = time.monotonic()

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
        self.checkpoint = dict(checkpoint)
        services.job_checkpoint_save(
            tenant_id=self.tenant_id, job_id=self.job_id, worker=self.worker, checkpoint=self.checkpoint
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
        ctx = JobContext(
            job_id=job.id, tenant_id=job.tenant_id, worker=worker, attempt=job.attempts, checkpoint=job.checkpoint
        )
        try:
            handler = job_kind_get(job.kind).load_handler()
            result = handler(ctx, dict(job.params))
        except JobCancelled:
            services.job_cancelled(tenant_id=job.tenant_id, job_id=job.id, worker=worker)
            return "cancelled"
        except Exception as exc:
            from celery.exceptions import SoftTimeLimitExceeded

            if isinstance(exc, SoftTimeLimitExceeded):
                code, message = "time_limit", "The job ran past its time limit."
            else:
                code, message = "handler_error", f"{type(exc).__name__}: {exc}"
                logger.exception("job %s (%s) failed", job.id, job.kind)
            services.job_fail(tenant_id=job.tenant_id, job_id=job.id, worker=worker, error=message, code=code)
            return "failed"
        services.job_succeed(
            tenant_id=job.tenant_id, job_id=job.id, worker=worker, result=result if isinstance(result, dict) else {}
        )
        return "succeeded"
    finally:
        heartbeat.stop()
        job_id_var.reset(token)
