"""Fixtures for real services: the test database (migrated as the owner role, used as the
application role), the S3 test bucket, and Celery worker processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings
from django.core.management import call_command
from psycopg2 import sql

ROOT = Path(__file__).resolve().parents[1]


def _owner_connect(dbname: str):
    owner = settings.DATABASES["owner"]
    return psycopg2.connect(
        dbname=dbname, user=owner["USER"], password=owner["PASSWORD"], host=owner["HOST"], port=owner["PORT"]
    )


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker):
    """A fresh test database each run: created and migrated by the owner role; the tests and the
    workers connect as the application role, which does not own the tables."""
    name = settings.DATABASES["default"]["NAME"]
    try:
        admin = _owner_connect("postgres")
    except psycopg2.OperationalError as exc:
        pytest.exit(f"PostgreSQL is not reachable ({exc}); start the stack with `make up`", returncode=2)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cursor.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(settings.DATABASES["owner"]["USER"])
            )
        )
    admin.close()
    with django_db_blocker.unblock():
        call_command("migrate", database="owner", verbosity=0, interactive=False)
        # Transactional tests empty the tables between tests with TRUNCATE; only this throwaway
        # database grants it to the application role.
        from django.db import connections

        app_role = settings.DATABASES["default"]["USER"]
        with connections["owner"].cursor() as cursor:
            for role in (app_role, settings.DATABASES["system"]["USER"]):
                cursor.execute(f"GRANT TRUNCATE ON ALL TABLES IN SCHEMA public TO {connections['owner'].ops.quote_name(role)}")
        connections["owner"].close()


@pytest.fixture(scope="session", autouse=True)
def fresh_cache_counters():
    """Rate-limit and lockout counters outlive a run in Redis; each run starts from zero (only
    its own keys: the prefix names this run's test database)."""
    import redis

    cache = settings.CACHES["default"]
    client = redis.Redis.from_url(cache["LOCATION"])
    for key in client.scan_iter(match=f"{cache['KEY_PREFIX']}:*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session", autouse=True)
def s3_bucket():
    from lode.core.artifacts import bucket_ensure

    try:
        bucket_ensure()
    except Exception as exc:  # botocore raises several kinds for a down endpoint
        pytest.exit(f"The S3 endpoint is not reachable ({exc}); start the stack with `make up`", returncode=2)
    return settings.S3_BUCKET


@pytest.fixture(autouse=True)
def plan_catalog(request):
    """The plan catalogue is data a migration writes; a transactional test's flush empties it, so
    every database test starts with it present again (one query when it is there)."""
    if "django_db" not in request.keywords and not {"db", "transactional_db"} & set(request.fixturenames):
        return
    request.getfixturevalue("_django_db_helper")
    from lode.billing.catalog import plan_catalog_ensure

    plan_catalog_ensure()


# --- Celery workers ------------------------------------------------------------------------------


class WorkerProcess:
    """A real `celery worker` process on the test broker, consuming the given queues."""

    def __init__(self, *, queues: str, name: str, concurrency: int = 2, extra_env: dict | None = None):
        self.queues = queues
        self.name = f"{name}@{uuid.uuid4().hex[:6]}"
        self.log_path = ROOT / ".local" / "test-logs" / f"{self.name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="lode.settings.test",
            PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "platform"), env.get("PYTHONPATH", "")]),
            HF_HUB_OFFLINE="1",
        )
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "lode", "worker", "-Q", queues, "-n", self.name,
                "--concurrency", str(concurrency), "--prefetch-multiplier", "1", "-O", "fair",
                "--without-gossip", "--without-mingle", "--loglevel", "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        from lode.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log_path}:\n{self.log_path.read_text()[-3000:]}")
            replies = app.control.ping(destination=[self.name], timeout=0.5)
            if replies:
                return
        raise RuntimeError(f"worker {self.name} did not become ready; see {self.log_path}")

    def control(self, command: str, **kwargs):
        from lode.celery import app

        return app.control.broadcast(command, arguments=kwargs, destination=[self.name], reply=True, timeout=5)

    def is_idle(self) -> bool:
        replies = self.control("active")
        return bool(replies) and not any(tasks for reply in replies for tasks in reply.values())

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def purge_queues() -> None:
    from lode.celery import app

    with app.connection_for_write() as connection:
        for queue in ("cpu", "gpu"):
            connection.default_channel.queue_purge(queue)


@pytest.fixture(scope="session")
def _celery_worker_process(django_db_setup):
    """One worker process for the session. It consumes only while a test asks for it (the
    celery_worker fixture): jobs that other tests create are never run behind their backs, and
    no job is running when a transactional test empties the tables."""
    purge_queues()
    worker = WorkerProcess(queues="cpu,gpu", name="test")
    for queue in ("cpu", "gpu"):
        worker.control("cancel_consumer", queue=queue)
    yield worker
    worker.stop()


@pytest.fixture
def celery_worker(_celery_worker_process):
    worker = _celery_worker_process
    purge_queues()  # messages left by tests that ran no worker
    for queue in ("cpu", "gpu"):
        worker.control("add_consumer", queue=queue)
    yield worker
    for queue in ("cpu", "gpu"):
        worker.control("cancel_consumer", queue=queue)
    wait_for(worker.is_idle, timeout=30, message="the worker to go idle")
    purge_queues()


def wait_for(predicate, *, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


# --- Tenants and API clients --------------------------------------------------------------------


@pytest.fixture
def make_tenant(db):
    from tenants.services import user_signup

    def make(email: str | None = None, password: str = "a long test password 1", organization_name: str = "Acme AI"):
        result = user_signup(
            email=email or f"user-{uuid.uuid4().hex[:8]}@example.com",
            password=password,
            organization_name=organization_name,
        )
        result.user.raw_password = password
        return result

    return make


def api_key_for(user, *, scopes=None) -> str:
    """A real API key of the user's (first) organization, with the user's rights by default."""
    from django.db import transaction

    from tenants.db_context import db_tenant_set
    from tenants.models import Membership
    from tenants.permissions import ROLE_PERMISSIONS
    from tenants.services import api_key_create

    with transaction.atomic():
        db_tenant_set(tenant_id=None, user_id=user.pk)  # a user may see their own memberships
        membership = Membership.objects.filter(user=user).order_by("created_at").first()
    permissions = ROLE_PERMISSIONS[membership.role]
    created = api_key_create(
        tenant_id=membership.organization_id, created_by=user, creator_permissions=permissions,
        name="test", scopes=sorted(scopes if scopes is not None else permissions),
    )
    return created.secret


@pytest.fixture
def api_client_for():
    from rest_framework.test import APIClient

    def make(user, *, scopes=None) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(user, scopes=scopes)}")
        return client

    return make


# Transactional tests that read across tenants use the RLS-bypassing "system" connection too.
TRANSACTIONAL_WITH_SYSTEM = pytest.mark.django_db(transaction=True, databases=["default", "system"])


def system(model):
    """Reads for assertions across tenants, through the role that bypasses row-level security.
    Only for transactional tests (that connection cannot see another's open transaction)."""
    from tenants.db_context import dangerously_all_tenants

    return dangerously_all_tenants(model)


def rows(model, tenant_id, **filters) -> list:
    """Reads for assertions as one tenant, inside that tenant's context (works in any test)."""
    from tenants.db_context import tenant_atomic

    with tenant_atomic(tenant_id, user_id=""):  # no user: only the tenant's rows, not a user's own
        return list(model.objects.filter(**filters))
