"""The optional Stripe side of billing: issued invoices pushed to Stripe (customer, items, a
finalized send_invoice invoice) and Stripe's webhook events applied back to ours. Without
STRIPE_SECRET_KEY nothing here runs and staff mark invoices paid.

    invoice_close ──on commit──▶ stripe_push_invoice (Celery, retried) ──▶ Stripe
    Stripe ──POST /api/v1/billing/stripe/webhook──▶ webhook_process ──▶ invoice_mark_paid / invoice_void
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any
from uuid import UUID

import stripe
from celery import shared_task
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from lode.core.errors import ServiceUnavailable, ValidationFailed
from tenants.db_context import dangerously_all_tenants, tenant_atomic
from tenants.models import Organization
from tenants.selectors import organization_owner_emails
from tenants.services import audit_record

from . import services
from .models import BillingAccount, Invoice, InvoiceLine, StripeEvent

logger = logging.getLogger(__name__)

# Stripe refuses an invoice with more than 250 items; the tail of a longer one is summed into one.
MAX_ITEMS = 250
# Stripe forgets idempotency keys after 24 hours; the task's retries all fall well inside that.
RETRY_BACKOFF_MAX_SECONDS = 600
MAX_RETRIES = 10
# Errors worth trying again: the network, Stripe's rate limit and its 5xx answers. A 4xx
# (InvalidRequestError, AuthenticationError…) would fail the same way again.
RETRYABLE = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)
# The sweep re-sends pushes whose message was lost once they have waited this long, and only
# while Stripe still remembers the idempotency keys of any earlier attempt (24 hours): a retry
# can then never make a second Stripe invoice. Older ones are left to staff (logged); so are
# invoices issued while Stripe was off.
PUSH_SWEEP_AFTER = timedelta(minutes=15)
PUSH_SWEEP_UNTIL = timedelta(hours=20)


def is_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def _client() -> stripe.StripeClient:
    base = settings.STRIPE_API_BASE
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY, base_addresses={"api": base} if base else None, max_network_retries=2,
    )


# --- pushing an issued invoice -------------------------------------------------------------------


@dataclass(frozen=True)
class StripeItem:
    """One Stripe InvoiceItem: `amount` in minor units, negative for credits."""

    key: str  # stable within the invoice: part of the idempotency key
    amount: int
    description: str


def invoice_items(invoice: Invoice, lines: list[InvoiceLine]) -> list[StripeItem]:
    """Our invoice as Stripe items whose sum is exactly its total: one per charged line, then the
    credit drawn (negative) and the tax as amounts of their own, so Stripe computes neither."""
    items = [StripeItem(f"line-{line.position}", line.amount_minor, line.description)
             for line in lines if line.amount_minor]
    # Each line's amount is the one on our invoice, so their sum is the subtotal.
    if len(items) > MAX_ITEMS - 2:
        kept = items[: MAX_ITEMS - 3]
        rest = items[MAX_ITEMS - 3:]
        items = [*kept, StripeItem("rest", sum(item.amount for item in rest), f"Other usage ({len(rest)} lines)")]
    if invoice.credits_applied_minor:
        items.append(StripeItem("credit", -invoice.credits_applied_minor, "Credit applied"))
    if invoice.tax_minor:
        rate = (invoice.tax_rate * 100).normalize()
        items.append(StripeItem("tax", invoice.tax_minor, f"{invoice.tax_label or 'Tax'} ({rate:f}%)"))
    if sum(item.amount for item in items) != invoice.total_minor:
        # The close computes total = subtotal - credits + tax; anything else is a bug upstream.
        raise ValueError(f"invoice {invoice.id}: items sum to {sum(i.amount for i in items)}, total is {invoice.total_minor}")
    return items


def invoice_push_on_commit(*, tenant_id: UUID | str, invoice_id: UUID | str) -> None:
    """Called inside the close's transaction: the push is sent once it commits. A lost message
    (broker down) is found again by stripe_push_pending."""
    if not is_enabled():
        return
    args = [str(tenant_id), str(invoice_id)]

    def send() -> None:
        try:
            stripe_push_invoice.apply_async(args=args, retry=True, retry_policy={"max_retries": 2})
        except Exception:  # the broker's errors are many (kombu, redis, socket); all mean "not sent"
            logger.exception("could not enqueue the Stripe push of invoice %s; the sweep will retry", invoice_id)

    transaction.on_commit(send)


def invoice_push(*, tenant_id: UUID | str, invoice_id: UUID | str) -> str | None:
    """Pushes one issued invoice to Stripe and returns its Stripe id (None when there is nothing
    to do: Stripe off, the invoice not open, or already pushed). Safe to repeat: each request
    carries an idempotency key derived from our ids, so a retry after a failure part-way gets
    Stripe's earlier objects back rather than making new ones."""
    if not is_enabled():
        return None
    with tenant_atomic(tenant_id):
        invoice = Invoice.objects.filter(id=invoice_id).first()
        if invoice is None or invoice.status != Invoice.Status.OPEN or invoice.stripe_invoice_id:
            return None
        lines = list(InvoiceLine.objects.filter(invoice=invoice).order_by("position"))
    items = invoice_items(invoice, lines)
    client = _client()
    customer_id = _customer_ensure(client, tenant_id=tenant_id)
    currency = invoice.currency.lower()
    metadata = {"lode_tenant_id": str(tenant_id), "lode_invoice_id": str(invoice.id), "lode_invoice_number": invoice.number or ""}
    key = f"lode-invoice-{invoice.id}"

    draft = client.v1.invoices.create(params={
        "customer": customer_id, "currency": currency, "collection_method": "send_invoice",
        "days_until_due": settings.STRIPE_DAYS_UNTIL_DUE,
        # Only the items below: nothing pending on the customer slips in.
        "pending_invoice_items_behavior": "exclude", "auto_advance": False,
        "description": f"Lode invoice {invoice.number}, {invoice.period_start:%B %Y}",
        "metadata": metadata,
    }, options={"idempotency_key": key})
    for item in items:
        client.v1.invoice_items.create(params={
            "customer": customer_id, "invoice": draft.id, "currency": currency, "amount": item.amount,
            "description": item.description[:500], "metadata": {**metadata, "lode_item": item.key},
        }, options={"idempotency_key": f"{key}-{item.key}"})
    # auto_advance: Stripe emails the invoice and its reminders from here on.
    final = client.v1.invoices.finalize_invoice(draft.id, params={"auto_advance": True},
                                                options={"idempotency_key": f"{key}-finalize"})
    stripe_total = getattr(final, "total", None)
    if stripe_total is not None and stripe_total != invoice.total_minor:
        logger.error("Stripe invoice %s totals %s, Lode invoice %s totals %s", final.id, stripe_total,
                     invoice.number, invoice.total_minor)

    with tenant_atomic(tenant_id):
        stored = Invoice.objects.filter(id=invoice.id, stripe_invoice_id="").update(stripe_invoice_id=final.id)
        if stored:
            audit_record(tenant_id=tenant_id, action="billing.invoice_sent_to_stripe", actor_label="stripe",
                         target=invoice, data={"number": invoice.number, "stripe_invoice_id": final.id,
                                               "stripe_customer_id": customer_id})
    return final.id


def _customer_ensure(client: stripe.StripeClient, *, tenant_id: UUID | str) -> str:
    """The tenant's Stripe customer, created on its first pushed invoice."""
    services.account_ensure(tenant_id=tenant_id)
    with tenant_atomic(tenant_id):
        account = BillingAccount.objects.get(tenant_id=tenant_id)
        if account.stripe_customer_id:
            return account.stripe_customer_id
        name = Organization.objects.filter(id=tenant_id).values_list("name", flat=True).first() or ""
    emails = [account.billing_email] if account.billing_email else organization_owner_emails(tenant_id=tenant_id)
    params: dict[str, Any] = {"name": name, "metadata": {"lode_tenant_id": str(tenant_id)}}
    if emails:
        params["email"] = emails[0]
    customer = client.v1.customers.create(params=params, options={"idempotency_key": f"lode-customer-{tenant_id}"})
    with tenant_atomic(tenant_id):
        # Two pushes racing get the same customer (same idempotency key); the first write stands.
        BillingAccount.objects.filter(tenant_id=tenant_id, stripe_customer_id="").update(stripe_customer_id=customer.id)
        return BillingAccount.objects.get(tenant_id=tenant_id).stripe_customer_id


@shared_task(name="lode.billing.stripe_push_invoice", acks_late=True, autoretry_for=RETRYABLE, retry_backoff=True,
             retry_backoff_max=RETRY_BACKOFF_MAX_SECONDS, retry_jitter=True, max_retries=MAX_RETRIES,
             time_limit=120, soft_time_limit=100)
def stripe_push_invoice(tenant_id: str, invoice_id: str) -> str | None:
    """Idempotent: an invoice already pushed (or no longer open) is left alone."""
    return invoice_push(tenant_id=tenant_id, invoice_id=invoice_id)


def invoices_push_pending(*, now: datetime | None = None) -> int:
    """Re-sends the push of open invoices issued a while ago and still not in Stripe (a message
    lost to a broker outage, or a push that ran out of retries). Returns how many were sent."""
    if not is_enabled():
        return 0
    now = now or timezone.now()
    unpushed = dangerously_all_tenants(Invoice).filter(status=Invoice.Status.OPEN, stripe_invoice_id="")
    pending = list(
        unpushed.filter(issued_at__lt=now - PUSH_SWEEP_AFTER, issued_at__gte=now - PUSH_SWEEP_UNTIL)
        .order_by("issued_at").values_list("tenant_id", "id")[:500]
    )
    for tenant_id, invoice_id in pending:
        stripe_push_invoice.apply_async(args=[str(tenant_id), str(invoice_id)])
    stuck = unpushed.filter(issued_at__lt=now - PUSH_SWEEP_UNTIL).count()
    if stuck:
        logger.warning("%s open invoices were never pushed to Stripe and are past the safe retry window", stuck)
    return len(pending)


@shared_task(name="lode.billing.stripe_push_pending", acks_late=True, time_limit=300, soft_time_limit=280)
def stripe_push_pending() -> int:
    return invoices_push_pending()


# --- the webhook ------------------------------------------------------------------------------------

INVOICE_EVENTS = {"invoice.paid", "invoice.voided", "invoice.marked_uncollectible", "invoice.payment_failed"}


def webhook_process(*, payload: bytes, signature: str | None) -> dict[str, Any]:
    """Verifies a Stripe webhook delivery and applies it once. The event id is recorded in the
    same transaction as its effect, so a replay (Stripe re-delivers until it gets a 2xx, and
    anyone can resend a captured body within the tolerance) finds it and does nothing."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise ServiceUnavailable("Stripe webhooks are not configured")
    if not signature:
        raise ValidationFailed("Stripe-Signature: the header is missing", details={"header": "Stripe-Signature"})
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret).to_dict()
    except stripe.SignatureVerificationError as exc:
        # The library's reason: no signature matches, or the timestamp is outside the tolerance.
        raise ValidationFailed(f"Stripe-Signature: the signature does not verify ({exc.user_message})",
                               details={"header": "Stripe-Signature"}) from None
    except (ValueError, TypeError, AttributeError):  # not UTF-8, not JSON, or not an event object
        raise ValidationFailed("payload: not a Stripe event (a JSON object)", details={"field": "payload"}) from None
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 100 or not isinstance(event_type, str) \
            or not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise ValidationFailed("payload: a Stripe event needs id, type and data.object", details={"field": "payload"})
    obj = data["object"]

    target = _invoice_target(event_type, obj)
    if target is None:
        with transaction.atomic():
            if not _event_claim(event_id, event_type[:100], tenant_id=None):
                return {"received": True, "duplicate": True}
            outcome = "ignored"
            _event_outcome(event_id, outcome)
        return {"received": True, "duplicate": False, "outcome": outcome}

    tenant_id, invoice_id = target
    with tenant_atomic(tenant_id):
        if not _event_claim(event_id, event_type[:100], tenant_id=tenant_id):
            return {"received": True, "duplicate": True}
        outcome = _invoice_event_apply(event_type, obj, event, tenant_id=tenant_id, invoice_id=invoice_id)
        _event_outcome(event_id, outcome)
    return {"received": True, "duplicate": False, "outcome": outcome}


def _invoice_target(event_type: str, obj: dict[str, Any]) -> tuple[UUID, UUID] | None:
    """Which of our invoices an event is about, from the metadata the push set; None for events
    we do not act on or invoices Lode did not create."""
    if event_type not in INVOICE_EVENTS or obj.get("object") != "invoice":
        return None
    metadata = obj.get("metadata") or {}
    try:
        return UUID(str(metadata.get("lode_tenant_id"))), UUID(str(metadata.get("lode_invoice_id")))
    except ValueError:
        return None


def _event_claim(event_id: str, event_type: str, *, tenant_id: UUID | None) -> bool:
    """Records the event; False when it already was (by an earlier delivery, or one running
    now: the unique key makes this insert wait for it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO billing_stripeevent (id, type, received_at, lode_tenant_ref, outcome) VALUES (%s, %s, now(), %s, '')"
            " ON CONFLICT (id) DO NOTHING",
            [event_id, event_type, str(tenant_id) if tenant_id else None],
        )
        return cursor.rowcount == 1


def _event_outcome(event_id: str, outcome: str) -> None:
    StripeEvent.objects.filter(id=event_id).update(outcome=outcome[:200])


def _invoice_event_apply(event_type: str, obj: dict[str, Any], event: dict[str, Any], *, tenant_id: UUID,
                         invoice_id: UUID) -> str:
    """Inside the tenant's transaction, holding the invoice's row lock."""
    stripe_id = str(obj.get("id") or "")
    invoice = Invoice.objects.select_for_update().filter(id=invoice_id).first()
    if invoice is None:
        return "unknown_invoice"
    if not stripe_id or invoice.stripe_invoice_id != stripe_id:
        # Not the Stripe invoice we pushed it as (a copy made by hand, another environment's
        # account): it says nothing about ours.
        logger.warning("Stripe event %s names invoice %s but is about %s, pushed as %r", event.get("id"), invoice.number,
                       stripe_id, invoice.stripe_invoice_id)
        return "mismatch"
    audit_data = {"number": invoice.number, "stripe_invoice_id": stripe_id, "stripe_event_id": event.get("id")}

    if event_type == "invoice.paid":
        if invoice.status == Invoice.Status.PAID:
            return "already_paid"
        if invoice.status != Invoice.Status.OPEN:
            return _conflict(tenant_id, invoice, f"paid in Stripe, {invoice.status} in Lode", audit_data)
        paid_at = _timestamp((obj.get("status_transitions") or {}).get("paid_at")) or _timestamp(event.get("created"))
        services.invoice_mark_paid(tenant_id=tenant_id, invoice_id=invoice.id, reference=f"stripe:{stripe_id}",
                                   paid_at=paid_at)
        return "paid"
    if event_type == "invoice.voided":
        if invoice.status == Invoice.Status.VOID:
            return "already_void"
        if invoice.status != Invoice.Status.OPEN:
            return _conflict(tenant_id, invoice, f"voided in Stripe, {invoice.status} in Lode", audit_data)
        services.invoice_void(tenant_id=tenant_id, invoice_id=invoice.id, reason=f"voided in Stripe ({stripe_id})")
        return "voided"
    if event_type == "invoice.marked_uncollectible":
        # Staff decide what follows (void, retry, a payment plan); the invoice stays open.
        audit_record(tenant_id=tenant_id, action="billing.invoice_uncollectible", actor_label="stripe", target=invoice,
                     data=audit_data)
        return "uncollectible"
    # invoice.payment_failed: Stripe retries the payment and emails the customer itself.
    audit_record(tenant_id=tenant_id, action="billing.invoice_payment_failed", actor_label="stripe", target=invoice,
                 data={**audit_data, "attempt_count": obj.get("attempt_count"),
                       "next_payment_attempt": obj.get("next_payment_attempt")})
    return "payment_failed"


def _conflict(tenant_id: UUID, invoice: Invoice, what: str, audit_data: dict[str, Any]) -> str:
    """Stripe and Lode disagree in a way only a person can settle: recorded and acknowledged
    (a retry by Stripe would not change it)."""
    logger.error("Stripe and Lode disagree on invoice %s: %s", invoice.number, what)
    audit_record(tenant_id=tenant_id, action="billing.stripe_conflict", actor_label="stripe", target=invoice,
                 data={**audit_data, "conflict": what})
    return f"conflict: {what}"


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, tz=dt_timezone.utc)
    return None
