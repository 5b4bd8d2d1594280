"""Closes a finished month for one tenant or all (the periodic task does the same for last month)."""
from django.core.management.base import BaseCommand, CommandError

from lode.core.errors import LodeError
from tenants.db_context import dangerously_all_tenants
from tenants.models import Organization

from ... import selectors, services
from ...models import BillingAccount


class Command(BaseCommand):
    help = "Close a billing period (YYYY-MM) into invoices; idempotent."

    def add_arguments(self, parser):
        parser.add_argument("period", help="YYYY-MM, a month that has ended")
        parser.add_argument("--organization", help="the organization's slug; every billed organization when omitted")

    def handle(self, *args, period: str, organization: str | None, **options):
        try:
            start, _ = selectors.period_parse(period)
        except ValueError:
            raise CommandError("period: expected YYYY-MM") from None
        if organization:
            tenant = Organization.objects.filter(slug=organization).first()
            if tenant is None:
                raise CommandError(f"no organization {organization!r}")
            tenant_ids = [tenant.id]
        else:
            tenant_ids = list(dangerously_all_tenants(BillingAccount).values_list("tenant_id", flat=True))
        for tenant_id in tenant_ids:
            try:
                invoice = services.invoice_close(tenant_id=tenant_id, period_start=start)
            except LodeError as exc:
                raise CommandError(exc.message) from None
            self.stdout.write(f"{tenant_id}: {invoice.number} {invoice.status} total {invoice.total_minor} {invoice.currency}")
