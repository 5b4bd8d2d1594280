"""Celery entry points of the core: run one job, reconcile jobs. Thin: ids in, services out."""
from celery import shared_task

from .jobs.reconciler import jobs_reconcile
from .jobs.runner import job_execute


@shared_task(name="lode.core.run_job", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(tenant_id: str, job_id: str) -> str | None:
    # Queue and time limits come from the job's kind at dispatch (jobs.services.job_dispatch).
    return job_execute(tenant_id=tenant_id, job_id=job_id)


@shared_task(
    name="lode.core.reconcile_jobs", acks_late=True, ignore_result=True, time_limit=120, soft_time_limit=100, expires=60
)
def reconcile_jobs() -> dict:
    report = jobs_reconcile()
    return {"redispatched": len(report.redispatched), "requeued": len(report.requeued), "failed": len(report.failed)}
