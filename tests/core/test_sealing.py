"""Sealed secrets (lode.core.sealing): AES-GCM bound to a context, key rotation through
LODE_SEALING_KEYS and `manage.py reseal`, and webhook signing secrets stored only sealed in
PostgreSQL."""
from __future__ import annotations

import base64
import io
import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connections

from lode.core import sealing
from lode.core.webhooks import services
from lode.core.webhooks.models import WebhookEndpoint
from tests.conftest import system

OLD_KEY = base64.b64encode(b"o" * 32).decode()
NEW_KEY = base64.b64encode(os.urandom(32)).decode()


def test_a_sealed_value_opens_only_for_its_context_and_unaltered():
    sealed = sealing.seal("whsec_example", context="webhook_endpoint:1:secret")

    assert sealed.startswith(sealing.PREFIX) and "whsec_example" not in sealed
    assert sealing.unseal(sealed, context="webhook_endpoint:1:secret") == "whsec_example"
    assert sealing.seal("whsec_example", context="webhook_endpoint:1:secret") != sealed  # a fresh nonce each time
    with pytest.raises(sealing.SealError, match="does not open"):
        sealing.unseal(sealed, context="webhook_endpoint:2:secret")  # moved to another row
    body = sealed[-10:]
    altered = sealed[:-10] + ("A" if body[0] != "A" else "B") + body[1:]
    with pytest.raises(sealing.SealError, match="does not open"):
        sealing.unseal(altered, context="webhook_endpoint:1:secret")
    with pytest.raises(sealing.SealError, match="not a sealed value"):
        sealing.unseal("whsec_example", context="webhook_endpoint:1:secret")


def test_keys_rotate_new_first_old_still_opens_then_reseal_drops_it(settings):
    settings.SEALING_KEYS = [OLD_KEY]
    sealed_old = sealing.seal("s3cret", context="c")

    settings.SEALING_KEYS = [NEW_KEY, OLD_KEY]
    assert sealing.unseal(sealed_old, context="c") == "s3cret" and not sealing.is_current(sealed_old)
    sealed_new = sealing.seal("s3cret", context="c")
    assert sealing.is_current(sealed_new)

    settings.SEALING_KEYS = [NEW_KEY]
    assert sealing.unseal(sealed_new, context="c") == "s3cret"
    with pytest.raises(sealing.SealError, match="not in LODE_SEALING_KEYS"):
        sealing.unseal(sealed_old, context="c")


@pytest.mark.parametrize("key", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_key_is_refused_by_name(settings, key):
    settings.SEALING_KEYS = [NEW_KEY, key]
    with pytest.raises(ImproperlyConfigured, match="LODE_SEALING_KEYS: key 2 is not base64 of 32 bytes"):
        sealing.seal("x", context="c")


@pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])
def test_webhook_secrets_are_stored_sealed_and_reseal_moves_them_to_the_new_key(make_tenant, settings):
    settings.SEALING_KEYS = [OLD_KEY]
    tenant = make_tenant()
    created = services.webhook_endpoint_create(tenant_id=tenant.organization.id, by=tenant.user,
                                               url="https://127.0.0.1:9/hook", events=["*"])
    rotated = services.webhook_endpoint_secret_rotate(tenant_id=tenant.organization.id, by=tenant.user,
                                                      endpoint_id=created.endpoint.id)
    with connections["system"].cursor() as cursor:
        cursor.execute("SELECT secret_sealed, previous_secret_sealed FROM core_webhookendpoint WHERE id = %s",
                       [str(created.endpoint.id)])
        stored = cursor.fetchone()
    assert all(value.startswith(sealing.PREFIX) for value in stored)
    assert created.secret not in "".join(stored) and rotated.secret not in "".join(stored)

    settings.SEALING_KEYS = [NEW_KEY, OLD_KEY]
    out = io.StringIO()
    call_command("reseal", stdout=out)
    assert "resealed 1 webhook endpoint(s)" in out.getvalue()
    call_command("reseal", stdout=out)  # nothing left under the old key
    assert out.getvalue().endswith("resealed 0 webhook endpoint(s)\n")

    settings.SEALING_KEYS = [NEW_KEY]
    endpoint = system(WebhookEndpoint).get(id=created.endpoint.id)
    assert endpoint.secret == rotated.secret and endpoint.previous_secret == created.secret
    assert endpoint.signing_secrets() == [rotated.secret, created.secret]
