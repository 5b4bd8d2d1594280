"""The job mechanism against a real Celery worker process, Redis and PostgreSQL."""
from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from lode.core.jobs import services
from lode.core.jobs.reconciler import jobs_reconcile
from lode.core.models import Job, JobEvent, JobState
from tests.conftest import TRANSACTIONAL_WITH_SYSTEM, system, wait_for

pytestmark = TRANSACTIONAL_WITH_SYSTEM


def _job(job_id) -> Job:
    return system(Job).get(id=job_id)


def _wait_state(job_id, *states, timeout=30) -> Job:
    return wait_for(
        lambda: (job := _job(job_id)).state in states and job, timeout=timeout, message=f"job to reach {states}"
    )


def _create_undelivered_job(worker, tenant, **params) -> Job:
    """A job whose Celery message never reaches a worker, so a test can play the worker."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    worker.control("cancel_consumer", queue="cpu")
    try:
        job = services.job_create(tenant_id=tenant.organization.id, created_by=tenant.user, kind="core.ping", params=params)
        wait_for(lambda: broker.llen("cpu") > 0, message="the message to reach the broker")
        broker.delete("cpu")
    finally:
        worker.control("add_consumer", queue="cpu")
    return job


def test_job_submitted_through_the_api_runs_on_a_worker_and_succeeds(celery_worker, make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)

    response = client.post("/api/v1/jobs", {"kind": "core.ping", "params": {"steps": 3}}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["state"] == "queued"
    job = _wait_state(response.json()["id"], JobState.SUCCEEDED)
    assert job.result["steps"] == 3
    assert job.worker.split(":")[0]  # a real worker process claimed it
    assert job.attempts == 1 and job.progress == 1.0
    assert job.started_at >= job.created_at and job.finished_at >= job.started_at
    detail = client.get(f"/api/v1/jobs/{job.id}").json()
    assert detail["state"] == "succeeded"
    events = client.get(f"/api/v1/jobs/{job.id}/events").json()["results"]
    states = [e["data"]["state"] for e in events if e["kind"] == "state"]
    assert states == ["queued", "running", "succeeded"]
    assert [e["data"]["progress"] for e in events if e["kind"] == "progress"][-1] == 1.0


def test_job_whose_task_raises_fails_with_the_error(celery_worker, make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)

    response = client.post("/api/v1/jobs", {"kind": "core.ping", "params": {"fail_with": "disk on fire"}}, format="json")

    job = _wait_state(response.json()["id"], JobState.FAILED)
    assert job.error == "PingFailure: disk on fire"
    assert job.error_code == "handler_error"
    body = client.get(f"/api/v1/jobs/{job.id}").json()
    assert body["state"] == "failed" and body["error"] == "PingFailure: disk on fire"


def test_job_on_the_gpu_queue_runs(celery_worker, make_tenant, api_client_for):
    tenant = make_tenant()
    response = api_client_for(tenant.user).post("/api/v1/jobs", {"kind": "core.ping.gpu"}, format="json")

    assert response.json()["queue"] == "gpu"
    _wait_state(response.json()["id"], JobState.SUCCEEDED)


def test_job_whose_message_was_dropped_is_resent_by_the_reconciler(celery_worker, make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    celery_worker.control("cancel_consumer", queue="cpu")
    try:
        response = client.post("/api/v1/jobs", {"kind": "core.ping"}, format="json")
        job_id = response.json()["id"]
        wait_for(lambda: broker.llen("cpu") > 0, message="the message to reach the broker")
        broker.delete("cpu")  # the message is lost, as when Redis restarts without persistence
        assert _job(job_id).state == JobState.QUEUED

        report = jobs_reconcile(redispatch_after_seconds=0)

        assert report.redispatched == [job_id]
    finally:
        celery_worker.control("add_consumer", queue="cpu")
    job = _wait_state(job_id, JobState.SUCCEEDED)
    assert job.dispatch_count == 2 and job.attempts == 1


def test_reconciler_requeues_a_job_whose_worker_died_and_it_resumes_from_its_checkpoint(celery_worker, make_tenant):
    tenant = make_tenant()
    job = _create_undelivered_job(celery_worker, tenant, steps=4)
    # Claim it as a worker that then dies after its second step: the heartbeat stops.
    claimed = services.job_claim(tenant_id=tenant.organization.id, job_id=job.id, worker="dead-host:1", heartbeat_timeout=60)
    assert claimed is not None
    services.job_checkpoint_save(tenant_id=tenant.organization.id, job_id=job.id, worker="dead-host:1", checkpoint={"step": 2})
    system(Job).filter(id=job.id).update(heartbeat_at=timezone.now() - timezone.timedelta(minutes=5))

    report = jobs_reconcile(heartbeat_timeout_seconds=30)

    assert report.requeued == [str(job.id)]
    finished = _wait_state(job.id, JobState.SUCCEEDED)
    assert finished.attempts == 2
    assert finished.result["resumed_from_step"] == 2
    assert finished.worker != "dead-host:1"
    messages = list(system(JobEvent).filter(job_id=job.id, kind="state").values_list("message", flat=True))
    assert "worker lost; requeued" in messages


def test_reconciler_fails_a_lost_job_that_used_its_attempts(celery_worker, make_tenant):
    tenant = make_tenant()
    job = _create_undelivered_job(celery_worker, tenant)
    services.job_claim(tenant_id=tenant.organization.id, job_id=job.id, worker="dead-host:1", heartbeat_timeout=60)
    system(Job).filter(id=job.id).update(heartbeat_at=timezone.now() - timezone.timedelta(minutes=5), attempts=3)

    report = jobs_reconcile(heartbeat_timeout_seconds=30, max_attempts=3)

    assert report.failed == [str(job.id)]
    failed = _job(job.id)
    assert failed.state == JobState.FAILED and failed.error_code == "worker_lost"


def test_running_job_cancelled_through_the_api_stops_within_seconds(celery_worker, make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    job_id = client.post(
        "/api/v1/jobs", {"kind": "core.ping", "params": {"steps": 200, "sleep_seconds": 0.1}}, format="json"
    ).json()["id"]
    _wait_state(job_id, JobState.RUNNING)

    response = client.post(f"/api/v1/jobs/{job_id}/cancel")

    assert response.status_code == 202
    job = _wait_state(job_id, JobState.CANCELLED, timeout=10)
    assert job.checkpoint["step"] < 200
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 409


def test_duplicate_delivery_of_a_finished_job_does_nothing(celery_worker, make_tenant):
    from lode.core.jobs.runner import job_execute

    tenant = make_tenant()
    job = services.job_create(tenant_id=tenant.organization.id, created_by=tenant.user, kind="core.ping")
    done = _wait_state(job.id, JobState.SUCCEEDED)

    assert job_execute(tenant_id=tenant.organization.id, job_id=job.id) is None
    again = _job(job.id)
    assert again.attempts == done.attempts == 1 and again.finished_at == done.finished_at


def test_queued_job_cancelled_before_start_never_runs(celery_worker, make_tenant):
    from lode.core.jobs.runner import job_execute

    tenant = make_tenant()
    job = _create_undelivered_job(celery_worker, tenant)
    services.job_cancel(tenant_id=tenant.organization.id, job_id=job.id)

    assert job_execute(tenant_id=tenant.organization.id, job_id=job.id) is None
    assert _job(job.id).state == JobState.CANCELLED and _job(job.id).attempts == 0


def test_job_whose_worker_is_killed_mid_run_is_requeued_and_resumes_from_its_checkpoint(celery_worker, make_tenant):
    import os
    import signal
    import time

    from tests.conftest import WorkerProcess

    tenant = make_tenant()
    celery_worker.control("cancel_consumer", queue="cpu")
    doomed = WorkerProcess(queues="cpu", name="doomed", concurrency=1)
    try:
        job = services.job_create(
            tenant_id=tenant.organization.id, created_by=tenant.user, kind="core.ping",
            params={"steps": 60, "sleep_seconds": 0.05},
        )
        wait_for(lambda: _job(job.id).checkpoint.get("step", 0) >= 5, message="the doomed worker to make progress")
        os.killpg(doomed.process.pid, signal.SIGKILL)  # the whole worker, as when a node disappears
        doomed.process.wait(timeout=10)
        reached = _job(job.id).checkpoint["step"]
    finally:
        doomed.stop()
        celery_worker.control("add_consumer", queue="cpu")
    assert _job(job.id).state == JobState.RUNNING  # nobody told the database
    time.sleep(2.5)

    report = jobs_reconcile(heartbeat_timeout_seconds=2)

    assert report.requeued == [str(job.id)]
    finished = _wait_state(job.id, JobState.SUCCEEDED)
    assert finished.attempts == 2
    assert finished.result["resumed_from_step"] >= reached
    first_run = system(JobEvent).filter(job_id=job.id, kind="state", message="running").order_by("id").first()
    assert finished.worker.split(":")[0] and finished.worker != first_run.data["worker"]
