"""Outbound webhooks against real parts: PostgreSQL (with row-level security), Redis, a Celery
worker process, and a local HTTP receiver (http.server in a thread on 127.0.0.1)."""
from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from lode.core.webhooks import services
from lode.core.webhooks.models import WebhookDelivery, WebhookEndpoint
from lode.core.webhooks.registry import webhook_event_register
from lode.core.webhooks.signing import webhook_signature_header, webhook_signature_verify
from tenants.db_context import tenant_atomic
from tenants.models import AuditEvent
from tests.conftest import rows, system, wait_for

WITH_WORKER = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])

webhook_event_register("testing.alpha", "A test event.")
webhook_event_register("testing.beta", "Another test event.")

NO_LOCALHOST = override_settings(WEBHOOKS_ALLOW_LOCALHOST=False, DEBUG=False)


# --- A receiver -------------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each POST with the next planned answer (a status, or (status, body, headers)),
    then 200; `delay` holds each answer back that many seconds."""

    answers: list = field(default_factory=list)
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self):
        receiver = self
        self._lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers.items()), body, time.monotonic()))
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                status, reply, headers = answer if isinstance(answer, tuple) else (answer, b"ok", {})
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, count: int, timeout: float = 30) -> list[Received]:
        wait_for(lambda: len(self.requests) >= count, timeout=timeout, message=f"{count} webhook request(s)")
        return self.requests


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(answers=(), delay: float = 0.0) -> Receiver:
        made.append(Receiver(list(answers), delay))
        return made[-1]

    yield make
    for server in made:
        server.close()


def _create(client, url: str, events=("*",), **extra) -> dict:
    response = client.post("/api/v1/webhooks", {"url": url, "events": list(events), **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _endpoint(tenant, url: str, events=("*",), **extra) -> services.WebhookEndpointWithSecret:
    return services.webhook_endpoint_create(tenant_id=tenant.organization.id, by=tenant.user, url=url,
                                            events=list(events), **extra)


def _delivery(delivery_id) -> WebhookDelivery:
    return system(WebhookDelivery).get(id=delivery_id)


def _in_tenant(tenant, model, **filters) -> list:
    return rows(model, tenant.organization.id, **filters)


def _wait_status(delivery_id, status: str, timeout: float = 30) -> WebhookDelivery:
    return wait_for(lambda: (d := _delivery(delivery_id)).status == status and d, timeout=timeout,
                    message=f"delivery {delivery_id} to be {status}")


def _attempt(tenant, delivery, attempt: int) -> str:
    return services.webhook_delivery_attempt(tenant_id=tenant.organization.id, delivery_id=delivery.id, attempt=attempt)


# --- Through the worker -------------------------------------------------------------------------------


@WITH_WORKER
def test_an_event_reaches_the_receiver_signed_and_the_signature_verifies(celery_worker, make_tenant, api_client_for, receiver):
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    rx = receiver()
    created = _create(client, rx.url(), events=["testing.alpha"])
    secret = created["secret"]

    [delivery] = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha",
                                       data={"item": "abc", "when": timezone.now()})

    [request] = rx.wait(1)
    assert request.path == "/hook"
    assert request.payload == {
        "id": delivery.event_id, "type": "testing.alpha", "created": request.payload["created"],
        "tenant": str(tenant.organization.id), "data": {"item": "abc", "when": delivery.payload["data"]["when"]},
    }
    assert delivery.event_id.startswith("evt_") and abs(request.payload["created"] - time.time()) < 60
    assert request.headers["Lode-Event-Id"] == delivery.event_id
    assert request.headers["Lode-Event-Type"] == "testing.alpha"
    assert request.headers["Content-Type"] == "application/json"
    header = request.headers["Lode-Signature"]
    assert webhook_signature_verify(secret, header, request.body)
    assert webhook_signature_verify(secret, header, request.body.decode())  # str bodies too
    # A tampered body, another secret, an old timestamp or a missing header: refused.
    assert not webhook_signature_verify(secret, header, request.body.replace(b"abc", b"abd"))
    assert not webhook_signature_verify("whsec_another", header, request.body)
    signed_at = int(header.split(",")[0].removeprefix("t="))
    assert not webhook_signature_verify(secret, header, request.body, now=signed_at + 301)
    assert webhook_signature_verify(secret, header, request.body, now=signed_at + 299)
    replayed = webhook_signature_header([secret], request.body, timestamp=int(time.time()) - 600)
    assert not webhook_signature_verify(secret, replayed, request.body)
    assert not webhook_signature_verify(secret, "", request.body)
    assert not webhook_signature_verify(secret, f"t={signed_at}", request.body)

    done = _wait_status(delivery.id, "succeeded")
    assert done.attempts == 1 and done.last_status_code == 200 and done.last_error == ""
    assert done.delivered_at is not None and done.response_time_ms is not None and done.last_response_body == "ok"
    listed = client.get(f"/api/v1/webhooks/{created['id']}/deliveries").json()["results"]
    assert [(d["event_id"], d["status"], d["attempts"]) for d in listed] == [(delivery.event_id, "succeeded", 1)]
    assert client.get(f"/api/v1/webhooks/{created['id']}/deliveries?status=failed").json()["results"] == []


@WITH_WORKER
def test_a_failing_endpoint_is_retried_with_backoff_until_it_answers_2xx(celery_worker, make_tenant, receiver):
    tenant = make_tenant()
    rx = receiver(answers=[500, 503])
    created = _endpoint(tenant, rx.url())

    [delivery] = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={})

    done = _wait_status(delivery.id, "succeeded")
    assert done.attempts == 3 and done.last_status_code == 200
    assert len(rx.requests) == 3
    assert {r.headers["Lode-Event-Id"] for r in rx.requests} == {delivery.event_id}
    assert all(webhook_signature_verify(created.secret, r.headers["Lode-Signature"], r.body) for r in rx.requests)
    gaps = [later.at - earlier.at for earlier, later in zip(rx.requests, rx.requests[1:])]
    backoff = settings.WEBHOOK_RETRY_SCHEDULE_SECONDS
    assert gaps[0] >= backoff[0] * 0.9 and gaps[1] >= backoff[1] * 0.9, gaps


@WITH_WORKER
def test_an_endpoint_that_keeps_failing_is_given_up_after_the_last_attempt(celery_worker, make_tenant, receiver):
    tenant = make_tenant()
    rx = receiver(answers=[500] * 20)
    _endpoint(tenant, rx.url())

    [delivery] = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={})

    failed = _wait_status(delivery.id, "failed")
    assert failed.attempts == settings.WEBHOOK_MAX_ATTEMPTS
    assert failed.last_status_code == 500 and failed.last_error == "HTTP 500" and failed.next_attempt_at is None
    time.sleep(1.5)
    assert len(rx.requests) == settings.WEBHOOK_MAX_ATTEMPTS


@WITH_WORKER
def test_only_active_endpoints_subscribed_to_the_event_type_receive_it(celery_worker, make_tenant, receiver):
    tenant = make_tenant()
    rx = receiver()
    _endpoint(tenant, rx.url("/alpha"), events=["testing.alpha"])
    _endpoint(tenant, rx.url("/beta"), events=["testing.beta"])
    _endpoint(tenant, rx.url("/all"), events=["*"])
    _endpoint(tenant, rx.url("/inactive"), events=["*"], is_active=False)

    alpha = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={"n": 1})
    beta = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.beta", data={"n": 2})

    assert len(alpha) == 2 and len(beta) == 2
    rx.wait(4)
    time.sleep(1)  # anything else would have arrived by now
    received = sorted((r.path, r.payload["type"]) for r in rx.requests)
    assert received == [("/all", "testing.alpha"), ("/all", "testing.beta"), ("/alpha", "testing.alpha"),
                        ("/beta", "testing.beta")]


@WITH_WORKER
def test_another_tenants_endpoint_never_receives_this_tenants_events(celery_worker, make_tenant, receiver):
    a, b = make_tenant(), make_tenant()
    rx_a, rx_b = receiver(), receiver()
    endpoint_a = _endpoint(a, rx_a.url(), events=["*"]).endpoint
    endpoint_b = _endpoint(b, rx_b.url(), events=["*"]).endpoint

    services.webhook_emit(tenant_id=a.organization.id, event_type="testing.alpha", data={"secret": "a's"})
    rx_a.wait(1)
    services.webhook_emit(tenant_id=b.organization.id, event_type="testing.alpha", data={"secret": "b's"})
    rx_b.wait(1)
    time.sleep(1)

    assert [r.payload["data"] for r in rx_a.requests] == [{"secret": "a's"}]
    assert [r.payload["data"] for r in rx_b.requests] == [{"secret": "b's"}]
    assert [r.payload["tenant"] for r in rx_b.requests] == [str(b.organization.id)]
    by_endpoint = {(str(d.endpoint_id), str(d.tenant_id)) for d in system(WebhookDelivery).all()}
    assert by_endpoint == {(str(endpoint_a.id), str(a.organization.id)), (str(endpoint_b.id), str(b.organization.id))}


@WITH_WORKER
def test_an_emit_in_a_rolled_back_transaction_sends_nothing(celery_worker, make_tenant, receiver):
    tenant = make_tenant()
    rx = receiver()
    _endpoint(tenant, rx.url())

    with pytest.raises(RuntimeError), transaction.atomic():
        services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={"n": 1})
        raise RuntimeError("the caller's write failed")
    assert system(WebhookDelivery).count() == 0
    services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={"n": 2})

    rx.wait(1)
    time.sleep(1)
    assert [r.payload["data"] for r in rx.requests] == [{"n": 2}]
    assert system(WebhookDelivery).count() == 1


@WITH_WORKER
def test_the_test_route_sends_a_webhook_test_event(celery_worker, make_tenant, api_client_for, receiver):
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    rx = receiver()
    created = _create(client, rx.url(), events=["testing.beta"])  # webhook.test is sent whatever it subscribes to

    response = client.post(f"/api/v1/webhooks/{created['id']}/test", format="json")

    assert response.status_code == 202, response.content
    assert response.json()["event_type"] == "webhook.test" and response.json()["status"] == "pending"
    [request] = rx.wait(1)
    assert request.payload["type"] == "webhook.test" and request.payload["data"]["endpoint_id"] == created["id"]
    assert webhook_signature_verify(created["secret"], request.headers["Lode-Signature"], request.body)
    _wait_status(response.json()["id"], "succeeded")
    # An inactive endpoint is switched on first.
    client.patch(f"/api/v1/webhooks/{created['id']}", {"active": False}, format="json")
    refused = client.post(f"/api/v1/webhooks/{created['id']}/test", format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "conflict"


@WITH_WORKER
def test_a_delivery_whose_message_was_lost_is_sent_by_the_redispatcher(celery_worker, make_tenant, receiver):
    tenant = make_tenant()
    rx = receiver()
    _endpoint(tenant, rx.url())
    with mock.patch.object(services, "_enqueue", return_value=False):  # the broker was down at commit
        [delivery] = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={})
    time.sleep(0.5)
    assert rx.requests == [] and _delivery(delivery.id).status == "pending"

    sent = services.webhook_deliveries_redispatch(late_after_seconds=0)

    assert sent == [str(delivery.id)]
    rx.wait(1)
    assert _wait_status(delivery.id, "succeeded").attempts == 1


# --- One attempt at a time, in this process -------------------------------------------------------


@pytest.mark.django_db(transaction=True, databases=["default", "system"])
def test_two_workers_with_the_same_message_send_it_once(make_tenant, receiver):
    tenant = make_tenant()
    rx = receiver(delay=1.0)  # the first sender holds the row while the receiver answers
    _endpoint(tenant, rx.url())
    with mock.patch.object(services, "_enqueue", return_value=True):
        [delivery] = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={})
    outcomes: list[str] = []

    def worker():
        try:
            outcomes.append(_attempt(tenant, delivery, 1))
        finally:
            connections.close_all()

    first = threading.Thread(target=worker)
    first.start()
    rx.wait(1)  # the first is sending, its lock held
    second = threading.Thread(target=worker)
    second.start()
    second.join(10)
    first.join(10)

    assert sorted(outcomes) == ["skipped", "succeeded"]
    assert len(rx.requests) == 1
    assert _delivery(delivery.id).attempts == 1


def test_a_delivery_is_sent_once_whatever_messages_arrive(make_tenant, receiver):
    tenant = make_tenant()
    rx = receiver(answers=[500])
    _endpoint(tenant, rx.url())
    [delivery] = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={})

    with override_settings(WEBHOOK_RETRY_SCHEDULE_SECONDS=[60]):
        assert _attempt(tenant, delivery, 1) == "pending"
    assert _attempt(tenant, delivery, 1) == "skipped"  # a duplicate of the first message
    assert _attempt(tenant, delivery, 2) == "skipped"  # the retry's message, come early
    with tenant_atomic(tenant.organization.id):
        WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert _attempt(tenant, delivery, 2) == "succeeded"
    assert _attempt(tenant, delivery, 2) == "skipped"
    assert _attempt(tenant, delivery, 3) == "skipped"

    assert len(rx.requests) == 2
    [done] = _in_tenant(tenant, WebhookDelivery, id=delivery.id)
    assert done.status == "succeeded" and done.attempts == 2


def test_redirects_are_not_followed_and_only_500_characters_of_an_answer_are_kept(make_tenant, receiver):
    tenant = make_tenant()
    rx = receiver(answers=[(302, b"", {"Location": "/elsewhere"}), (200, b"x" * 5000, {})])
    _endpoint(tenant, rx.url())
    [delivery] = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={})

    assert _attempt(tenant, delivery, 1) == "pending"
    [redirected] = _in_tenant(tenant, WebhookDelivery, id=delivery.id)
    assert redirected.last_status_code == 302 and redirected.last_error == "HTTP 302"
    assert [r.path for r in rx.requests] == ["/hook"]

    with tenant_atomic(tenant.organization.id):
        WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now())
    assert _attempt(tenant, delivery, 2) == "succeeded"
    [done] = _in_tenant(tenant, WebhookDelivery, id=delivery.id)
    assert done.last_response_body == "x" * 500


def test_a_url_that_is_no_longer_allowed_is_refused_at_send_time(make_tenant, receiver):
    tenant = make_tenant()
    rx = receiver()
    # Both allowed when they were saved (localhost is allowed in tests); not when they are sent.
    plain = _endpoint(tenant, rx.url()).endpoint
    loopback = _endpoint(tenant, "https://127.0.0.1:9/hook").endpoint
    deliveries = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={})

    with NO_LOCALHOST:
        assert [_attempt(tenant, delivery, 1) for delivery in deliveries] == ["pending", "pending"]

    refused = {d.endpoint_id: d for d in _in_tenant(tenant, WebhookDelivery)}
    assert {d.attempts for d in refused.values()} == {1} and {d.last_status_code for d in refused.values()} == {None}
    assert refused[plain.id].last_error == "refused: url: must use https"
    assert refused[loopback.id].last_error == (
        "refused: url: the host 127.0.0.1 resolves to a loopback address; only public addresses are allowed")
    assert rx.requests == []


@pytest.fixture
def tls_receiver(receiver, tmp_path, monkeypatch):
    """A receiver behind TLS with a certificate for "localhost", trusted through SSL_CERT_FILE
    (openssl makes it: infra/system-packages.sh installs it)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    rx = receiver()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    rx.server.socket = context.wrap_socket(rx.server.socket, server_side=True)
    return rx


def test_https_endpoints_are_sent_to_with_the_certificate_checked_against_the_url_host(make_tenant, tls_receiver):
    tenant = make_tenant()
    port = tls_receiver.server.server_port
    by_name = _endpoint(tenant, f"https://localhost:{port}/hook").endpoint
    by_address = _endpoint(tenant, f"https://127.0.0.1:{port}/hook").endpoint  # the certificate names localhost
    deliveries = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={})

    outcomes = {d.endpoint_id: _attempt(tenant, d, 1) for d in deliveries}

    assert outcomes == {by_name.id: "succeeded", by_address.id: "pending"}
    [mismatch] = _in_tenant(tenant, WebhookDelivery, endpoint_id=by_address.id)
    assert mismatch.last_status_code is None and "SSLError" in mismatch.last_error
    assert [r.headers["Host"] for r in tls_receiver.requests] == [f"localhost:{port}"]


def test_a_delivery_to_an_endpoint_deactivated_since_the_event_is_not_sent(make_tenant, receiver):
    tenant = make_tenant()
    rx = receiver()
    endpoint = _endpoint(tenant, rx.url()).endpoint
    [delivery] = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={})
    services.webhook_endpoint_update(tenant_id=tenant.organization.id, by=tenant.user, endpoint_id=endpoint.id,
                                     changes={"is_active": False})

    assert _attempt(tenant, delivery, 1) == "failed"
    assert rx.requests == []
    assert services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={}) == []


def test_after_a_rotation_deliveries_carry_both_signatures_until_the_old_secret_expires(make_tenant, receiver):
    tenant = make_tenant()
    rx = receiver()
    created = _endpoint(tenant, rx.url())
    rotated = services.webhook_endpoint_secret_rotate(tenant_id=tenant.organization.id, by=tenant.user,
                                                      endpoint_id=created.endpoint.id)
    [delivery] = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={})

    assert _attempt(tenant, delivery, 1) == "succeeded"

    [request] = rx.requests
    header = request.headers["Lode-Signature"]
    assert header.count("v1=") == 2
    assert webhook_signature_verify(rotated.secret, header, request.body)
    assert webhook_signature_verify(created.secret, header, request.body)
    # Rotated again with no grace: only the newest secret signs.
    newest = services.webhook_endpoint_secret_rotate(tenant_id=tenant.organization.id, by=tenant.user,
                                                     endpoint_id=created.endpoint.id, previous_valid_seconds=0)
    [second] = services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={})
    assert _attempt(tenant, second, 1) == "succeeded"
    header = rx.requests[1].headers["Lode-Signature"]
    assert header.count("v1=") == 1
    assert webhook_signature_verify(newest.secret, header, rx.requests[1].body)
    assert not webhook_signature_verify(rotated.secret, header, rx.requests[1].body)


def test_emit_refuses_an_unregistered_event_type_and_data_that_is_not_a_dict(make_tenant):
    tenant = make_tenant()
    with pytest.raises(ValueError, match="not registered"):
        services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.unknown", data={})
    with pytest.raises(TypeError):
        services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data=["not", "a", "dict"])


# --- The API ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_secret_is_shown_at_creation_and_rotation_only(make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    created = _create(client, "https://127.0.0.1:9/hook", events=["testing.alpha", "testing.beta", "testing.alpha"],
                      description="orders service")
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert created["events"] == ["testing.alpha", "testing.beta"] and created["active"] is True

    detail = client.get(f"/api/v1/webhooks/{created['id']}")
    listing = client.get("/api/v1/webhooks")
    assert "secret" not in detail.json() and secret not in detail.content.decode()
    assert [e["id"] for e in listing.json()["results"]] == [created["id"]] and secret not in listing.content.decode()

    rotated = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret", {}, format="json")
    assert rotated.status_code == 200, rotated.content
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != secret
    assert rotated.json()["previous_secret_expires_at"] is not None
    after = client.get(f"/api/v1/webhooks/{created['id']}").content.decode()
    assert new_secret not in after and secret not in after
    [endpoint] = _in_tenant(tenant, WebhookEndpoint, id=created["id"])
    assert endpoint.secret == new_secret and endpoint.previous_secret == secret

    bad = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret", {"previous_secret_valid_seconds": -1},
                      format="json")
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("previous_secret_valid_seconds:")
    actions = [e.action for e in _in_tenant(tenant, AuditEvent)]
    assert {"webhook_endpoint.created", "webhook_endpoint.secret_rotated"} <= set(actions)


VALID_URL = "https://127.0.0.1:9/hook"


@pytest.mark.django_db
@pytest.mark.parametrize("body, field", [
    ({"url": "ftp://example.com/hook", "events": ["*"]}, "url"),
    ({"url": "http://example.com/hook", "events": ["*"]}, "url"),
    ({"url": "https://10.0.0.8/hook", "events": ["*"]}, "url"),
    ({"url": "https://192.168.1.20/hook", "events": ["*"]}, "url"),
    ({"url": "https://169.254.169.254/latest/meta-data", "events": ["*"]}, "url"),
    ({"url": "https://[fd00::1]/hook", "events": ["*"]}, "url"),
    ({"url": "https://0.0.0.0/hook", "events": ["*"]}, "url"),
    ({"url": "https://user:password@127.0.0.1/hook", "events": ["*"]}, "url"),
    ({"url": "https://127.0.0.1:99999/hook", "events": ["*"]}, "url"),
    ({"url": "https:///hook", "events": ["*"]}, "url"),
    ({"url": 42, "events": ["*"]}, "url"),
    ({"events": ["*"]}, "url"),
    ({"url": VALID_URL, "events": ["testing.no_such_event"]}, "events"),
    ({"url": VALID_URL, "events": "testing.alpha"}, "events"),
    ({"url": VALID_URL, "events": []}, "events"),
    ({"url": VALID_URL, "events": [7]}, "events"),
    ({"url": VALID_URL}, "events"),
    ({"url": VALID_URL, "events": ["*"], "active": "yes"}, "active"),
    ({"url": VALID_URL, "events": ["*"], "description": ["not", "text"]}, "description"),
    ({"url": VALID_URL, "events": ["*"], "description": "x" * 301}, "description"),
])
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(make_tenant, api_client_for, body, field):
    tenant = make_tenant()

    response = api_client_for(tenant.user).post("/api/v1/webhooks", body, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["message"].startswith(f"{field}:"), error
    assert _in_tenant(tenant, WebhookEndpoint) == []


@pytest.mark.django_db
@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook", "http://127.0.0.1:8000/hook", "https://localhost/hook", "http://localhost:8000/hook",
    "https://[::1]/hook", "https://2130706433/hook", "https://127.1/hook",
])
def test_loopback_urls_are_refused_unless_localhost_is_allowed(make_tenant, api_client_for, url):
    tenant = make_tenant()
    client = api_client_for(tenant.user)

    with NO_LOCALHOST:
        response = client.post("/api/v1/webhooks", {"url": url, "events": ["*"]}, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"].startswith("url:")
    assert response.json()["error"]["details"] == {"field": "url"}
    assert _in_tenant(tenant, WebhookEndpoint) == []


@pytest.mark.django_db
def test_an_endpoint_is_changed_and_deleted_and_bad_changes_are_400(make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    created = _create(client, VALID_URL, events=["testing.alpha"])
    path = f"/api/v1/webhooks/{created['id']}"

    changed = client.patch(path, {"url": "https://127.0.0.1:10/other", "events": ["*"], "active": False,
                                  "description": "paused"}, format="json")

    assert changed.status_code == 200, changed.content
    assert {k: changed.json()[k] for k in ("url", "events", "active", "description")} == {
        "url": "https://127.0.0.1:10/other", "events": ["*"], "active": False, "description": "paused"}
    for body, field in [({"url": "ftp://127.0.0.1/x"}, "url"), ({"events": ["nope.nope"]}, "events"),
                        ({"active": "no"}, "active"), ({"url": "https://10.1.2.3/x"}, "url")]:
        refused = client.patch(path, body, format="json")
        assert refused.status_code == 400 and refused.json()["error"]["message"].startswith(f"{field}:"), refused.content
    assert client.get(path).json()["url"] == "https://127.0.0.1:10/other"

    assert client.delete(path).status_code == 204
    assert client.get(path).status_code == 404
    assert client.delete(path).status_code == 404


@pytest.mark.django_db
def test_another_tenants_endpoints_are_not_found(make_tenant, api_client_for):
    a, b = make_tenant(), make_tenant()
    created = _create(api_client_for(a.user), VALID_URL, events=["*"])
    client_b = api_client_for(b.user)
    missing = uuid.uuid4()

    for verb, suffix in [("get", ""), ("patch", ""), ("delete", ""), ("post", "/rotate-secret"), ("post", "/test"),
                         ("get", "/deliveries")]:
        theirs = getattr(client_b, verb)(f"/api/v1/webhooks/{created['id']}{suffix}", {}, format="json")
        nowhere = getattr(client_b, verb)(f"/api/v1/webhooks/{missing}{suffix}", {}, format="json")
        assert theirs.status_code == 404, (verb, suffix, theirs.content)
        assert (theirs.status_code, theirs.json()) == (nowhere.status_code, nowhere.json())

    assert client_b.get("/api/v1/webhooks").json()["results"] == []
    [endpoint] = _in_tenant(a, WebhookEndpoint, id=created["id"])
    assert endpoint.secret == created["secret"] and endpoint.is_active and endpoint.url == VALID_URL
    assert _in_tenant(b, WebhookEndpoint) == []  # row-level security: B's context sees none of A's rows


@pytest.mark.django_db
def test_reading_webhooks_needs_organization_read_and_changing_them_organization_write(make_tenant, api_client_for):
    tenant = make_tenant()
    reader = api_client_for(tenant.user, scopes=["organization:read"])
    outsider = api_client_for(tenant.user, scopes=["datasets:read"])

    assert reader.get("/api/v1/webhooks").status_code == 200
    assert reader.post("/api/v1/webhooks", {"url": VALID_URL, "events": ["*"]}, format="json").status_code == 403
    assert outsider.get("/api/v1/webhooks").status_code == 403


@pytest.mark.django_db
def test_event_types_are_listed(make_tenant, api_client_for):
    tenant = make_tenant()

    response = api_client_for(tenant.user).get("/api/v1/webhooks/event-types")

    assert response.status_code == 200
    names = [event["name"] for event in response.json()]
    assert {"webhook.test", "testing.alpha", "testing.beta"} <= set(names) and names == sorted(names)


@pytest.mark.django_db
def test_the_lists_take_the_same_queries_however_many_rows(make_tenant, api_client_for):
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    endpoint = _endpoint(tenant, VALID_URL).endpoint

    def queries(path: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        return len(captured)

    queries("/api/v1/auth/me")  # the API key's first use is recorded once; not part of the lists
    few = queries("/api/v1/webhooks"), queries(f"/api/v1/webhooks/{endpoint.id}/deliveries")
    for n in range(4):
        _endpoint(tenant, VALID_URL)
        services.webhook_emit(tenant_id=tenant.organization.id, event_type="testing.alpha", data={"n": n})
    many = queries("/api/v1/webhooks"), queries(f"/api/v1/webhooks/{endpoint.id}/deliveries")
    assert many == few
