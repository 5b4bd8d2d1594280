"""Seal every stored secret again under the current sealing key (the first of LODE_SEALING_KEYS):
the step between putting a new key first and dropping the old one."""
from django.core.management.base import BaseCommand
from django.db import transaction

from lode.core import sealing
from lode.core.webhooks.models import WebhookEndpoint
from tenants.db_context import dangerously_all_tenants


class Command(BaseCommand):
    help = "Re-encrypt webhook signing secrets under the current sealing key."

    def handle(self, *args, **options):
        resealed = 0
        with transaction.atomic(using="system"):
            for endpoint in dangerously_all_tenants(WebhookEndpoint).select_for_update():
                if sealing.is_current(endpoint.secret_sealed) and (
                        not endpoint.previous_secret_sealed or sealing.is_current(endpoint.previous_secret_sealed)):
                    continue
                endpoint.secret, endpoint.previous_secret = endpoint.secret, endpoint.previous_secret
                endpoint.save(using="system", update_fields=["secret_sealed", "previous_secret_sealed"])
                resealed += 1
        self.stdout.write(f"resealed {resealed} webhook endpoint(s)")
