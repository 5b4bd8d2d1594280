"""The metering call and the usage ledger on real PostgreSQL: idempotency under concurrency,
validation, append-only rows, tenant isolation, and the periodic close task."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, connections
from django.utils import timezone

from lode.billing import selectors, services
from lode.billing.models import Invoice, PlanVersion, UsageEvent
from lode.billing.tasks import close_periods
from lode.core.errors import ValidationFailed
from tenants.db_context import tenant_atomic
from tests.billing.factories import month, subscriptions_set, usage
from tests.conftest import TRANSACTIONAL_WITH_SYSTEM, rows, system


@TRANSACTIONAL_WITH_SYSTEM
def test_200_concurrent_submissions_of_the_same_usage_event_make_exactly_one_ledger_row(make_tenant):
    tenant_id = make_tenant().organization.id
    services.account_ensure(tenant_id=tenant_id)
    submissions = 200
    start = threading.Barrier(submissions)
    event = usage("output_tokens", 1234, dimension="small", key="request:abc:output")

    def submit(_: int) -> int:
        try:
            start.wait(timeout=60)  # all 200 connections are open and fire together
            return services.usage_record(tenant_id=tenant_id, events=[event]).recorded
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=submissions) as pool:
        recorded = list(pool.map(submit, range(submissions)))

    assert sum(recorded) == 1
    ledger = system(UsageEvent).filter(tenant_id=tenant_id)
    assert ledger.count() == 1
    assert ledger.get().quantity == Decimal("1234")


@pytest.mark.django_db
def test_a_batch_with_repeats_and_retries_records_each_key_once(make_tenant):
    tenant_id = make_tenant().organization.id
    batch = [usage("images", 1, dimension="small", key=f"image:{i % 5}") for i in range(12)]

    first = services.usage_record(tenant_id=tenant_id, events=batch)
    retry = services.usage_record(tenant_id=tenant_id, events=batch)

    assert (first.recorded, first.duplicates) == (5, 7)
    assert (retry.recorded, retry.duplicates) == (0, 12)
    assert len(rows(UsageEvent, tenant_id)) == 5


@pytest.mark.django_db
@pytest.mark.parametrize("event, field", [
    (usage("no_such_meter", 1), "meter"),
    (usage("gpu_seconds", 1, dimension="z80"), "dimension"),
    (usage("labeled_tasks", 1, dimension="small"), "dimension"),
    (usage("output_tokens", 1.5, dimension="small"), "events[0].quantity"),
    (usage("output_tokens", -3, dimension="small"), "events[0].quantity"),
    (usage("output_tokens", 0, dimension="small"), "events[0].quantity"),
    (usage("output_tokens", "1e30", dimension="small"), "events[0].quantity"),
    (usage("output_tokens", "0.0000001", dimension="small"), "events[0].quantity"),
    (usage("output_tokens", "many", dimension="small"), "events[0].quantity"),
    (usage("output_tokens", 1, dimension="small", key="x" * 201), "events[0].idempotency_key"),
    (usage("output_tokens", 1, dimension="small", source_type="gift"), "events[0].source_type"),
    (usage("output_tokens", 1, dimension="small", at=timezone.now().replace(tzinfo=None)), "events[0].occurred_at"),
    (usage("output_tokens", 1, dimension="small", at=timezone.now() + timezone.timedelta(days=1)), "events[0].occurred_at"),
])
def test_bad_usage_is_refused_naming_the_field_and_nothing_of_the_batch_is_written(make_tenant, event, field):
    tenant_id = make_tenant().organization.id
    good = usage("output_tokens", 10, dimension="small")

    with pytest.raises(ValidationFailed) as refused:
        services.usage_record(tenant_id=tenant_id, events=[event, good] if field.startswith("events[0]") else [good, event])

    assert refused.value.details["field"] == field
    assert rows(UsageEvent, tenant_id) == []


@pytest.mark.django_db(transaction=True, databases=["default", "owner"])
def test_the_ledger_is_append_only_even_for_its_owner(make_tenant):
    tenant_id = make_tenant().organization.id
    services.usage_record(tenant_id=tenant_id, events=[usage("labeled_tasks", 3)])

    for statement in ("UPDATE billing_usageevent SET quantity = 1", "DELETE FROM billing_usageevent"):
        with pytest.raises(DatabaseError, match="append-only"):
            with tenant_atomic(tenant_id), connection.cursor() as cursor:
                cursor.execute(statement)
    with pytest.raises(DatabaseError, match="append-only"):
        with connections["owner"].cursor() as cursor, tenant_atomic(tenant_id, using="owner"):
            cursor.execute("UPDATE billing_usageevent SET quantity = 1")
    with connections["owner"].cursor() as cursor:
        cursor.execute("SELECT quantity FROM billing_usageevent WHERE tenant_id = %s", [str(tenant_id)])
        assert cursor.fetchall() == []  # FORCE row-level security: the owner too sees only a tenant's rows in its context
    assert [event.quantity for event in rows(UsageEvent, tenant_id)] == [Decimal("3")]


@pytest.mark.django_db
def test_a_tenant_sees_and_bills_only_its_own_usage(make_tenant):
    a = make_tenant().organization.id
    b = make_tenant().organization.id
    services.usage_record(tenant_id=a, events=[usage("labeled_tasks", 7, key="same-key")])
    services.usage_record(tenant_id=b, events=[usage("labeled_tasks", 2, key="same-key")])  # keys are per tenant

    assert [event.quantity for event in rows(UsageEvent, b)] == [Decimal("2")]
    start, end = selectors.period_bounds(timezone.now())
    assert selectors.usage_totals(tenant_id=b, start=start, end=end) == {("labeled_tasks", ""): Decimal("2")}
    with tenant_atomic(b), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM billing_usageevent WHERE tenant_id = %s", [str(a)])
        assert cursor.fetchone()[0] == 0  # row-level security, not only the ORM's filter


@TRANSACTIONAL_WITH_SYSTEM
def test_the_periodic_close_invoices_every_billed_tenant_once_whatever_it_is_run(make_tenant):
    tenants = [make_tenant().organization.id for _ in range(2)]
    developer = PlanVersion.objects.get(plan__code="developer")
    for tenant_id in tenants:
        subscriptions_set(tenant_id, [(developer, month(2026, 9), None)])
        services.usage_record(tenant_id=tenant_id, events=[usage("output_tokens", 2_000_000, dimension="small", at=month(2026, 10, 4))])

    early = services.periods_close_due(now=month(2026, 11, 1) + timezone.timedelta(minutes=10))  # inside the grace hour
    first = services.periods_close_due(now=month(2026, 11, 2))
    # The Celery task, run in process at the real now: later than November 2nd, so October is closed
    # already; whatever later months are due by now it closes as well, but October never twice.
    second = close_periods.apply().get()
    after_second = system(Invoice).filter(tenant_id__in=tenants).count()
    third = close_periods.apply().get()

    assert early == {"closed": 0, "failed": 0}
    assert first == {"closed": 2, "failed": 0} and second["failed"] == 0 and third["failed"] == 0
    assert system(Invoice).filter(tenant_id__in=tenants).count() == after_second  # a rerun adds nothing
    invoices = system(Invoice).filter(tenant_id__in=tenants, period_start=month(2026, 10))
    assert invoices.count() == 2
    # 2,000,000 output tokens on the default plan: 250,000 included, 1,750,000 x 60 cents / 1,000,000 = 105
    assert sorted(invoices.values_list("total_minor", flat=True)) == [105, 105]


@pytest.mark.django_db
def test_usage_dated_before_billing_began_is_accounted_when_it_began(make_tenant):
    tenant_id = make_tenant().organization.id
    services.usage_record(tenant_id=tenant_id, events=[usage("labeled_tasks", 4, at=month(2025, 1, 5))])

    [event] = rows(UsageEvent, tenant_id)
    billing_began, _ = selectors.period_bounds(timezone.now())
    assert event.occurred_at == month(2025, 1, 5) and event.accounted_at == billing_began


@TRANSACTIONAL_WITH_SYSTEM
def test_stored_bytes_are_billed_as_byte_hours_once_per_hour(make_tenant, api_client_for):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from lode.billing.storage import storage_sample

    tenant = make_tenant()
    client = api_client_for(tenant.user)
    assert client.post("/api/v1/artifacts", {"file": SimpleUploadedFile("a.bin", b"x" * 1000)}, format="multipart").status_code == 201
    assert client.post("/api/v1/artifacts", {"file": SimpleUploadedFile("b.bin", b"y" * 500)}, format="multipart").status_code == 201
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timezone.timedelta(hours=2)

    first = storage_sample(now=hour + timezone.timedelta(minutes=5))
    again = storage_sample(now=hour + timezone.timedelta(minutes=50))  # the same hour: nothing new

    ledger = system(UsageEvent).filter(tenant_id=tenant.organization.id, meter="storage_byte_hours")
    assert first["recorded"] == 24 and again == {"recorded": 0, "duplicates": 24, "failed": 0}
    assert ledger.count() == 24  # the last hour and the day's backfill, each once
    assert set(ledger.values_list("quantity", flat=True)) == {Decimal(1500)}
    assert set(ledger.values_list("dimension", flat=True)) == {"artifact"}


@TRANSACTIONAL_WITH_SYSTEM
def test_concurrent_batches_sharing_keys_in_opposite_orders_neither_deadlock_nor_double_count(make_tenant):
    tenant_id = make_tenant().organization.id
    services.account_ensure(tenant_id=tenant_id)
    keys = [f"shared:{i:04d}" for i in range(2000)]
    orders = [keys, keys[::-1], keys[1::2] + keys[::2], keys[::-1][::2] + keys[::-1][1::2]]
    start = threading.Barrier(len(orders))

    def send(order: list[str]) -> int:
        try:
            start.wait(timeout=30)
            return services.usage_record(tenant_id=tenant_id, events=[usage("labeled_tasks", 1, key=key) for key in order]).recorded
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(orders)) as pool:
        recorded = list(pool.map(send, orders))  # a deadlock would raise here

    assert sum(recorded) == len(keys)
    assert system(UsageEvent).filter(tenant_id=tenant_id).count() == len(keys)
