"""The optional Stripe integration: pushing issued invoices to Stripe, and the webhook that
applies Stripe's events back, with signatures built and checked exactly as Stripe does them."""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest
import stripe
from django.test import Client, override_settings
from django.utils import timezone

from lode.billing import selectors, services, stripe_sync
from lode.billing.models import BillingAccount, Invoice, InvoiceLine, StripeEvent
from lode.core.errors import ServiceUnavailable, ValidationFailed
from tenants.db_context import tenant_atomic
from tenants.models import AuditEvent, Organization
from tests.conftest import TRANSACTIONAL_WITH_SYSTEM, rows

pytestmark = pytest.mark.django_db

WEBHOOK_SECRET = "whsec_test_local"
WEBHOOK_URL = "/api/v1/billing/stripe/webhook"


# --- a stand-in for Stripe's API -------------------------------------------------------------------


class FakeStripe:
    """Stands in for Stripe's servers (api.stripe.com, outside this machine): a tiny HTTP server
    answering the four endpoints the push calls with JSON shaped like Stripe's objects, and
    honouring Idempotency-Key the way Stripe does (same key: the first answer again)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.customers: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.items: dict[str, dict] = {}
        self.fail_next: set[str] = set()  # paths answered once with a 400
        self._answers: dict[str, tuple[int, dict]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.__init__()

    def handle(self, method: str, path: str, params: dict, idempotency_key: str | None) -> tuple[int, dict]:
        with self._lock:
            self.requests.append({"method": method, "path": path, "params": params, "idempotency_key": idempotency_key})
            if idempotency_key and idempotency_key in self._answers:
                return self._answers[idempotency_key]
            if path in self.fail_next:
                self.fail_next.discard(path)
                return 400, {"error": {"type": "invalid_request_error", "message": "refused once by the test"}}
            answer = self._route(method, path, params)
            if idempotency_key:
                self._answers[idempotency_key] = answer
            return answer

    def _metadata(self, params: dict) -> dict:
        return {key[len("metadata["):-1]: value for key, value in params.items() if key.startswith("metadata[")}

    def _route(self, method: str, path: str, params: dict) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["v1", "customers"]:
            customer = {"id": f"cus_fake{next(self._ids)}", "object": "customer", "name": params.get("name"),
                        "email": params.get("email"), "metadata": self._metadata(params)}
            self.customers[customer["id"]] = customer
            return 200, customer
        if method == "POST" and parts == ["v1", "invoices"]:
            invoice = {"id": f"in_fake{next(self._ids)}", "object": "invoice", "status": "draft",
                       "customer": params["customer"], "currency": params["currency"],
                       "collection_method": params.get("collection_method"),
                       "days_until_due": int(params["days_until_due"]) if "days_until_due" in params else None,
                       "metadata": self._metadata(params), "total": 0, "amount_due": 0}
            self.invoices[invoice["id"]] = invoice
            return 200, invoice
        if method == "POST" and parts == ["v1", "invoiceitems"]:
            invoice = self.invoices.get(params.get("invoice", ""))
            if invoice is None or invoice["status"] != "draft" or params["currency"] != invoice["currency"]:
                return 400, {"error": {"type": "invalid_request_error", "message": "no such draft invoice"}}
            item = {"id": f"ii_fake{next(self._ids)}", "object": "invoiceitem", "amount": int(params["amount"]),
                    "currency": params["currency"], "customer": params["customer"], "invoice": invoice["id"],
                    "description": params.get("description"), "metadata": self._metadata(params)}
            self.items[item["id"]] = item
            return 200, item
        if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "invoices"] and parts[3] == "finalize":
            invoice = self.invoices.get(parts[2])
            if invoice is None or invoice["status"] != "draft":
                return 400, {"error": {"type": "invalid_request_error", "message": "not a draft invoice"}}
            total = sum(item["amount"] for item in self.items.values() if item["invoice"] == invoice["id"])
            invoice.update(status="open", total=total, amount_due=total, number=f"FAKE-{next(self._ids):04d}")
            return 200, dict(invoice)
        return 404, {"error": {"type": "invalid_request_error", "message": f"unknown endpoint {method} {path}"}}

    def posted(self, path: str) -> list[dict]:
        return [request for request in self.requests if request["path"] == path]


@pytest.fixture(scope="module")
def _fake_stripe_server():
    fake = FakeStripe()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            status, answer = fake.handle("POST", self.path.split("?")[0], dict(parse_qsl(body)), self.headers.get("Idempotency-Key"))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_stripe(_fake_stripe_server):
    fake, base = _fake_stripe_server
    fake.reset()
    with override_settings(STRIPE_SECRET_KEY="sk_test_local", STRIPE_API_BASE=base):
        yield fake


# --- invoices made by the real services --------------------------------------------------------------


def _last_month() -> tuple:
    this_month, _ = selectors.period_bounds(timezone.now())
    return selectors.period_bounds(this_month - timedelta(seconds=1))


@pytest.fixture
def issued_invoice(make_tenant):
    """An open invoice for last month: 10M input tokens on the developer plan (1M included, 20
    cents a million) with 20% tax: 180 + 36 = 216 cents. Stripe is off while it is issued."""

    def make(*, tokens: int = 10_000_000, months_ago: int = 1, issued_at=None) -> Invoice:
        tenant = make_tenant()
        tenant_id = tenant.organization.id
        start, _ = _last_month()
        for _ in range(months_ago - 1):
            start, _ = selectors.period_bounds(start - timedelta(seconds=1))
        # The organization existed last month, so its default subscription covers the period.
        with tenant_atomic(tenant_id):
            Organization.objects.filter(id=tenant_id).update(created_at=start)
        with override_settings(BILLING_DEFAULT_TAX_RATE="0.2000", STRIPE_SECRET_KEY=""):
            services.account_ensure(tenant_id=tenant_id)
            services.usage_record(tenant_id=tenant_id, events=[services.UsageInput(
                meter="input_tokens", dimension="small", quantity=tokens, idempotency_key="tokens-1",
                source_type="request", source_id="req-1", occurred_at=start + timedelta(days=2),
            )])
            invoice = services.invoice_close(tenant_id=tenant_id, period_start=start, now=issued_at)
        assert invoice.status == Invoice.Status.OPEN and invoice.total_minor > 0
        return invoice

    return make


@pytest.fixture
def pushed_invoice(issued_invoice, fake_stripe) -> Invoice:
    invoice = issued_invoice()
    stripe_sync.invoice_push(tenant_id=invoice.tenant_id, invoice_id=invoice.id)
    return _reload(invoice)


def _reload(invoice: Invoice) -> Invoice:
    return rows(Invoice, invoice.tenant_id, id=invoice.id)[0]


def _audit(invoice: Invoice, action: str) -> list[AuditEvent]:
    return rows(AuditEvent, invoice.tenant_id, action=action, target_id=str(invoice.id))


# --- the push -----------------------------------------------------------------------------------


def test_invoice_items_sum_to_the_total_with_credit_and_tax():
    invoice = Invoice(total_minor=10_000 - 2_500 + 1_500, subtotal_minor=10_000, credits_applied_minor=2_500,
                      tax_minor=1_500, tax_rate=Decimal("0.2000"), tax_label="VAT")
    lines = [InvoiceLine(position=1, description="Plan fee", amount_minor=4_900),
             InvoiceLine(position=2, description="Included usage", amount_minor=0),
             InvoiceLine(position=3, description="GPU time", amount_minor=5_100)]

    items = stripe_sync.invoice_items(invoice, lines)

    assert [(item.key, item.amount) for item in items] == [
        ("line-1", 4_900), ("line-3", 5_100), ("credit", -2_500), ("tax", 1_500)]
    assert items[-1].description == "VAT (20%)"
    assert sum(item.amount for item in items) == invoice.total_minor


def test_push_creates_the_customer_and_a_finalized_invoice_that_totals_ours(issued_invoice, fake_stripe):
    invoice = issued_invoice()
    assert (invoice.subtotal_minor, invoice.tax_minor, invoice.total_minor) == (180, 36, 216)

    stripe_id = stripe_sync.invoice_push(tenant_id=invoice.tenant_id, invoice_id=invoice.id)

    account = rows(BillingAccount, invoice.tenant_id)[0]
    [customer] = fake_stripe.customers.values()
    assert account.stripe_customer_id == customer["id"]
    assert customer["metadata"] == {"lode_tenant_id": str(invoice.tenant_id)}
    assert _reload(invoice).stripe_invoice_id == stripe_id
    remote = fake_stripe.invoices[stripe_id]
    assert remote["status"] == "open"
    assert remote["customer"] == customer["id"] and remote["currency"] == "usd"
    assert remote["collection_method"] == "send_invoice" and remote["days_until_due"] > 0
    assert remote["metadata"] == {"lode_tenant_id": str(invoice.tenant_id), "lode_invoice_id": str(invoice.id),
                                  "lode_invoice_number": invoice.number}
    posted = fake_stripe.posted("/v1/invoiceitems")
    assert sum(int(request["params"]["amount"]) for request in posted) == invoice.total_minor
    assert {request["params"]["invoice"] for request in posted} == {stripe_id}
    assert remote["total"] == invoice.total_minor
    assert all(request["idempotency_key"].startswith(f"lode-invoice-{invoice.id}") for request in
               fake_stripe.requests if request["path"] != "/v1/customers")
    assert len(_audit(invoice, "billing.invoice_sent_to_stripe")) == 1


def test_push_of_an_invoice_already_in_stripe_does_nothing(pushed_invoice, fake_stripe):
    sent = len(fake_stripe.requests)

    assert stripe_sync.invoice_push(tenant_id=pushed_invoice.tenant_id, invoice_id=pushed_invoice.id) is None
    assert len(fake_stripe.requests) == sent


def test_push_retried_after_a_failure_part_way_reuses_stripe_objects(issued_invoice, fake_stripe):
    invoice = issued_invoice()
    fake_stripe.fail_next.add("/v1/invoices/in_fake2/finalize")  # customer 1, invoice 2, items, then finalize

    with pytest.raises(stripe.InvalidRequestError, match="refused once"):
        stripe_sync.invoice_push(tenant_id=invoice.tenant_id, invoice_id=invoice.id)
    assert _reload(invoice).stripe_invoice_id == ""
    stripe_id = stripe_sync.invoice_push(tenant_id=invoice.tenant_id, invoice_id=invoice.id)

    assert stripe_id == "in_fake2"
    assert len(fake_stripe.customers) == 1 and len(fake_stripe.invoices) == 1
    assert sum(item["amount"] for item in fake_stripe.items.values()) == invoice.total_minor


def test_without_a_stripe_key_nothing_is_pushed(issued_invoice, fake_stripe, django_capture_on_commit_callbacks):
    invoice = issued_invoice()  # closed with STRIPE_SECRET_KEY="": no push was scheduled
    with override_settings(STRIPE_SECRET_KEY=""), django_capture_on_commit_callbacks() as callbacks:
        stripe_sync.invoice_push_on_commit(tenant_id=invoice.tenant_id, invoice_id=invoice.id)
        assert stripe_sync.invoice_push(tenant_id=invoice.tenant_id, invoice_id=invoice.id) is None

    assert callbacks == []
    assert fake_stripe.requests == []
    assert _reload(invoice).stripe_invoice_id == ""


def test_close_with_a_stripe_key_sends_the_push_once_it_commits(make_tenant, fake_stripe, monkeypatch,
                                                                django_capture_on_commit_callbacks):
    sent = []
    # Stands in for the broker: the message the close sends on commit.
    monkeypatch.setattr(stripe_sync.stripe_push_invoice, "apply_async", lambda args, **options: sent.append(args))
    tenant_id = make_tenant().organization.id
    start, _ = _last_month()

    with django_capture_on_commit_callbacks(execute=True):
        with tenant_atomic(tenant_id):
            Organization.objects.filter(id=tenant_id).update(created_at=start)
        services.usage_record(tenant_id=tenant_id, events=[services.UsageInput(
            meter="input_tokens", dimension="small", quantity=5_000_000, idempotency_key="k", source_type="request",
            source_id="r", occurred_at=start + timedelta(days=1))])
        invoice = services.invoice_close(tenant_id=tenant_id, period_start=start)

    assert sent == [[str(tenant_id), str(invoice.id)]]
    assert fake_stripe.requests == []  # the push itself runs in a worker


@TRANSACTIONAL_WITH_SYSTEM
def test_the_sweep_resends_lost_pushes_only_inside_stripes_idempotency_window(issued_invoice, fake_stripe, monkeypatch):
    sent = []
    monkeypatch.setattr(stripe_sync.stripe_push_invoice, "apply_async", lambda args, **options: sent.append(args))
    now = timezone.now()
    # Two months back, so every issue date below falls after the period ended.
    just_issued = issued_invoice(months_ago=2, issued_at=now - timedelta(minutes=5))
    lost = issued_invoice(months_ago=2, issued_at=now - timedelta(hours=1))
    too_old = issued_invoice(months_ago=2, issued_at=now - timedelta(days=2))

    assert stripe_sync.invoices_push_pending(now=now) == 1

    assert sent == [[str(lost.tenant_id), str(lost.id)]]  # not just_issued (its message may still come), not too_old


# --- the webhook --------------------------------------------------------------------------------


def _event(invoice: Invoice, event_type: str = "invoice.paid", *, event_id: str = "evt_1",
           stripe_invoice_id: str | None = None) -> bytes:
    now = int(time.time())
    return json.dumps({
        "id": event_id, "object": "event", "api_version": "2025-09-30.clover", "created": now, "livemode": False,
        "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}, "type": event_type,
        "data": {"object": {
            "id": stripe_invoice_id or invoice.stripe_invoice_id, "object": "invoice", "status": "paid",
            "currency": "usd", "total": invoice.total_minor, "amount_paid": invoice.total_minor, "attempt_count": 1,
            "status_transitions": {"paid_at": now - 60, "finalized_at": now - 3600},
            "metadata": {"lode_tenant_id": str(invoice.tenant_id), "lode_invoice_id": str(invoice.id),
                         "lode_invoice_number": invoice.number},
        }},
    }).encode()


def _sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The Stripe-Signature header as Stripe builds it: HMAC-SHA256 of "<t>.<body>"."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@pytest.fixture
def webhook_secret():
    with override_settings(STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET):
        yield WEBHOOK_SECRET


def test_a_valid_invoice_paid_event_marks_our_invoice_paid(pushed_invoice, webhook_secret):
    payload = _event(pushed_invoice)

    result = stripe_sync.webhook_process(payload=payload, signature=_sign(payload))

    assert result == {"received": True, "duplicate": False, "outcome": "paid"}
    invoice = _reload(pushed_invoice)
    assert invoice.status == Invoice.Status.PAID
    assert invoice.payment_reference == f"stripe:{pushed_invoice.stripe_invoice_id}"
    assert invoice.paid_at is not None and invoice.paid_at < timezone.now()
    event = StripeEvent.objects.get(id="evt_1")
    assert (event.type, event.outcome, event.lode_tenant_ref) == ("invoice.paid", "paid", pushed_invoice.tenant_id)


def test_a_replayed_event_is_ignored(pushed_invoice, webhook_secret):
    payload = _event(pushed_invoice)
    signature = _sign(payload)
    stripe_sync.webhook_process(payload=payload, signature=signature)
    paid = _reload(pushed_invoice)

    replay = stripe_sync.webhook_process(payload=payload, signature=signature)

    assert replay == {"received": True, "duplicate": True}
    after = _reload(pushed_invoice)
    assert (after.status, after.paid_at, after.payment_reference) == (paid.status, paid.paid_at, paid.payment_reference)
    assert StripeEvent.objects.filter(id="evt_1").count() == 1
    assert len(_audit(pushed_invoice, "billing.invoice_paid")) == 1


@pytest.mark.parametrize("case", ["wrong secret", "tampered payload", "missing header", "stale timestamp",
                                  "no v1 signature", "garbage header"])
def test_a_badly_signed_delivery_is_refused_and_writes_nothing(pushed_invoice, webhook_secret, case):
    payload = _event(pushed_invoice)
    signature = {
        "wrong secret": _sign(payload, secret="whsec_someone_else"),
        "tampered payload": _sign(payload),
        "missing header": None,
        "stale timestamp": _sign(payload, timestamp=int(time.time()) - 301 - 60),
        "no v1 signature": f"t={int(time.time())},v0=abc",
        "garbage header": "not a signature",
    }[case]
    if case == "tampered payload":
        payload = payload.replace(b'"invoice.paid"', b'"invoice.voided"')

    with pytest.raises(ValidationFailed, match="Stripe-Signature") as raised:
        stripe_sync.webhook_process(payload=payload, signature=signature)

    assert raised.value.http_status == 400
    assert StripeEvent.objects.count() == 0
    assert _reload(pushed_invoice).status == Invoice.Status.OPEN


def test_a_signed_payload_that_is_not_an_event_is_refused(webhook_secret):
    for payload in (b"{not json", b"[]", b'{"id": "evt_x"}'):
        with pytest.raises(ValidationFailed, match="payload"):
            stripe_sync.webhook_process(payload=payload, signature=_sign(payload))
    assert StripeEvent.objects.count() == 0


def test_webhooks_without_a_configured_secret_are_unavailable(settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    payload = b'{"id": "evt_1"}'

    with pytest.raises(ServiceUnavailable, match="not configured"):
        stripe_sync.webhook_process(payload=payload, signature=_sign(payload))


def test_an_unknown_event_type_is_acknowledged_and_ignored(pushed_invoice, webhook_secret):
    payload = _event(pushed_invoice, "customer.updated", event_id="evt_other")

    result = stripe_sync.webhook_process(payload=payload, signature=_sign(payload))

    assert result == {"received": True, "duplicate": False, "outcome": "ignored"}
    assert StripeEvent.objects.get(id="evt_other").outcome == "ignored"
    assert _reload(pushed_invoice).status == Invoice.Status.OPEN


def test_an_event_about_another_stripe_invoice_is_a_mismatch(pushed_invoice, webhook_secret):
    payload = _event(pushed_invoice, stripe_invoice_id="in_not_the_pushed_one")

    result = stripe_sync.webhook_process(payload=payload, signature=_sign(payload))

    assert result["outcome"] == "mismatch"
    assert _reload(pushed_invoice).status == Invoice.Status.OPEN
    assert StripeEvent.objects.get(id="evt_1").outcome == "mismatch"


def test_an_event_for_an_invoice_never_pushed_is_a_mismatch(issued_invoice, webhook_secret):
    invoice = issued_invoice()
    payload = _event(invoice, stripe_invoice_id="in_guess")

    assert stripe_sync.webhook_process(payload=payload, signature=_sign(payload))["outcome"] == "mismatch"
    assert _reload(invoice).status == Invoice.Status.OPEN


def test_invoice_voided_in_stripe_voids_ours(pushed_invoice, webhook_secret):
    payload = _event(pushed_invoice, "invoice.voided")

    assert stripe_sync.webhook_process(payload=payload, signature=_sign(payload))["outcome"] == "voided"
    assert _reload(pushed_invoice).status == Invoice.Status.VOID


@pytest.mark.parametrize(("event_type", "outcome", "action"), [
    ("invoice.payment_failed", "payment_failed", "billing.invoice_payment_failed"),
    ("invoice.marked_uncollectible", "uncollectible", "billing.invoice_uncollectible"),
])
def test_failed_and_uncollectible_payments_are_recorded_and_leave_the_invoice_open(
        pushed_invoice, webhook_secret, event_type, outcome, action):
    payload = _event(pushed_invoice, event_type)

    assert stripe_sync.webhook_process(payload=payload, signature=_sign(payload))["outcome"] == outcome
    assert _reload(pushed_invoice).status == Invoice.Status.OPEN
    assert len(_audit(pushed_invoice, action)) == 1


def test_paid_in_stripe_after_staff_voided_it_is_recorded_as_a_conflict(pushed_invoice, webhook_secret):
    services.invoice_void(tenant_id=pushed_invoice.tenant_id, invoice_id=pushed_invoice.id, reason="test")
    payload = _event(pushed_invoice)

    result = stripe_sync.webhook_process(payload=payload, signature=_sign(payload))

    assert result["outcome"].startswith("conflict")
    assert _reload(pushed_invoice).status == Invoice.Status.VOID
    assert len(_audit(pushed_invoice, "billing.stripe_conflict")) == 1


# --- the webhook over HTTP (the view in lode/billing/api.py) -----------------------------------------------


def test_webhook_over_http_processes_a_valid_delivery_once(pushed_invoice, webhook_secret):
    client = Client()
    payload = _event(pushed_invoice)
    signature = _sign(payload)

    first = client.post(WEBHOOK_URL, payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)
    replay = client.post(WEBHOOK_URL, payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)

    assert first.status_code == 200, first.content
    assert first.json() == {"received": True, "duplicate": False, "outcome": "paid"}
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    assert _reload(pushed_invoice).status == Invoice.Status.PAID
    assert len(_audit(pushed_invoice, "billing.invoice_paid")) == 1


@pytest.mark.parametrize("case", ["wrong secret", "missing header"])
def test_webhook_over_http_answers_400_to_a_bad_signature(pushed_invoice, webhook_secret, case):
    payload = _event(pushed_invoice)
    headers = {"HTTP_STRIPE_SIGNATURE": _sign(payload, secret="whsec_wrong")} if case == "wrong secret" else {}

    response = Client().post(WEBHOOK_URL, payload, content_type="application/json", **headers)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    assert "Stripe-Signature" in response.json()["error"]["message"]
    assert StripeEvent.objects.count() == 0
    assert _reload(pushed_invoice).status == Invoice.Status.OPEN
