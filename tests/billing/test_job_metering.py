"""Compute metering of jobs on real Celery worker processes: each checkpoint bills the time since
the last one, in the checkpoint's own transaction; a killed and resumed job re-sends its last
report and bills every unit exactly once; a hard limit stops a running job at its next checkpoint."""
from __future__ import annotations

import os
import signal
import time
from decimal import Decimal

import pytest

from lode.billing import services
from lode.billing.models import UsageEvent
from lode.core.jobs import services as job_services
from lode.core.jobs.reconciler import jobs_reconcile
from lode.core.models import Job, JobEvent, JobState
from tests.conftest import TRANSACTIONAL_WITH_SYSTEM, WorkerProcess, system, wait_for

pytestmark = TRANSACTIONAL_WITH_SYSTEM


def _job(job_id) -> Job:
    return system(Job).get(id=job_id)


def _reports(job_id) -> list[UsageEvent]:
    return list(system(UsageEvent).filter(source_type="job", source_id=str(job_id)).order_by("id"))


def _seq(event: UsageEvent) -> int:
    return int(event.idempotency_key.rsplit(":", 1)[1])


def test_a_job_killed_and_resumed_bills_each_checkpointed_unit_exactly_once(celery_worker, make_tenant):
    tenant = make_tenant()
    steps, sleep = 40, 0.1
    celery_worker.control("cancel_consumer", queue="gpu")
    doomed = WorkerProcess(queues="gpu", name="doomed-gpu", concurrency=1)
    try:
        job = job_services.job_create(tenant_id=tenant.organization.id, created_by=tenant.user, kind="core.ping.gpu",
                                      params={"steps": steps, "sleep_seconds": sleep})
        wait_for(lambda: _job(job.id).checkpoint.get("step", 0) >= 8, message="the doomed worker to checkpoint")
        os.killpg(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait(timeout=10)
        killed_at = _job(job.id).checkpoint
    finally:
        doomed.stop()
        celery_worker.control("add_consumer", queue="gpu")
    before_resume = _reports(job.id)
    # What was checkpointed was billed with it, one report per checkpoint, and nothing after.
    assert [_seq(event) for event in before_resume] == list(range(1, killed_at["step"] + 1))
    assert killed_at["_usage"]["seq"] == killed_at["step"]
    time.sleep(2.5)

    assert jobs_reconcile(heartbeat_timeout_seconds=2).requeued == [str(job.id)]
    finished = wait_for(lambda: (j := _job(job.id)).state == JobState.SUCCEEDED and j, timeout=60, message="the resumed job")

    reports = _reports(job.id)
    seqs = [_seq(event) for event in reports]
    assert seqs == sorted(set(seqs)), "a report was billed twice"
    resumed_from = finished.result["resumed_from_step"]
    # Steps 1..resumed_from were billed by the first attempt; the second billed its own
    # checkpoints and the tail after the last one: one report each, numbered on without a gap.
    assert resumed_from >= killed_at["step"]
    assert seqs == list(range(1, steps + 2))
    assert reports[: len(before_resume)] == before_resume  # the first attempt's rows are untouched
    resend = system(JobEvent).filter(job_id=job.id, message="compute usage report re-sent on resume").get()
    assert resend.data == {"seq": killed_at["_usage"]["seq"], "already_recorded": True}
    # Every checkpoint's report covers at least its step's sleep: no step went unbilled.
    assert all(event.quantity >= Decimal(str(sleep)) for event in reports[:-1])
    assert {(event.meter, event.dimension) for event in reports} == {("gpu_seconds", "cpu")}
    total = sum(event.quantity for event in reports)
    assert total >= Decimal(str(steps * sleep))


def test_a_hard_limit_stops_a_running_job_at_its_next_checkpoint(celery_worker, make_tenant):
    tenant = make_tenant()
    tenant_id = tenant.organization.id
    # Admitted: the estimate (20 x 0.2 s = 4 s) fits the limit of 5 GPU-seconds...
    services.quota_set(tenant_id=tenant_id, meter="gpu_seconds", kind="hard", limit=5)
    job = job_services.job_create(tenant_id=tenant_id, created_by=tenant.user, kind="core.ping.gpu",
                                  params={"steps": 20, "sleep_seconds": 0.2})
    # ...but meanwhile other work spends the quota.
    services.usage_record(tenant_id=tenant_id, events=[services.UsageInput(
        meter="gpu_seconds", dimension="cpu", quantity=4, idempotency_key="other-work", source_type="request", source_id="x")])

    stopped = wait_for(lambda: (j := _job(job.id)).is_terminal and j, timeout=60, message="the job to stop")

    assert stopped.state == JobState.FAILED and stopped.error_code == "quota_exceeded"
    assert "hard limit on gpu_seconds" in stopped.error
    assert 0 < stopped.checkpoint["step"] < 20  # stopped part-way, at a checkpoint it kept
    reports = _reports(job.id)  # its checkpoints' reports, then the tail billed as it stopped
    other = Decimal(4)
    # It ran on while under the limit and stopped at the first checkpoint that reached it.
    assert other + sum(event.quantity for event in reports[:-2]) < 5 <= other + sum(event.quantity for event in reports[:-1])


def test_a_job_that_finishes_bills_its_time_in_the_same_transaction_as_its_result(celery_worker, make_tenant):
    tenant = make_tenant()
    job = job_services.job_create(tenant_id=tenant.organization.id, created_by=tenant.user, kind="core.ping.gpu",
                                  params={"steps": 1, "sleep_seconds": 0.3})

    wait_for(lambda: _job(job.id).state == JobState.SUCCEEDED, timeout=30, message="the job")

    [report] = _reports(job.id)
    assert report.idempotency_key == f"job:{job.id}:compute:1" and report.quantity >= Decimal("0.3")
    cpu_job = job_services.job_create(tenant_id=tenant.organization.id, created_by=tenant.user, kind="core.ping")
    wait_for(lambda: _job(cpu_job.id).state == JobState.SUCCEEDED, timeout=30, message="the cpu job")
    assert _reports(cpu_job.id) == []  # diagnostics on the cpu queue are not metered
