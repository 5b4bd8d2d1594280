"""Grants credit to an organization (staff: a prepaid top-up paid outside Stripe, a promotion)."""
from datetime import datetime, timezone

from django.core.management.base import BaseCommand, CommandError

from lode.core.errors import LodeError
from tenants.models import Organization

from ... import services


class Command(BaseCommand):
    help = "Grant credit (in minor units) to an organization."

    def add_arguments(self, parser):
        parser.add_argument("organization", help="the organization's slug")
        parser.add_argument("amount_minor", type=int)
        parser.add_argument("--reason", default="credit granted by staff")
        parser.add_argument("--expires", help="YYYY-MM-DD (UTC); never when omitted")

    def handle(self, *args, organization: str, amount_minor: int, reason: str, expires: str | None, **options):
        tenant = Organization.objects.filter(slug=organization).first()
        if tenant is None:
            raise CommandError(f"no organization {organization!r}")
        expires_at = None
        if expires:
            try:
                expires_at = datetime.strptime(expires, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            except ValueError:
                raise CommandError("--expires: expected YYYY-MM-DD") from None
        try:
            grant = services.credit_grant(tenant_id=tenant.id, amount_minor=amount_minor, reason=reason, expires_at=expires_at)
        except LodeError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"granted {grant.amount_minor} {grant.currency} to {organization} (grant {grant.id})")
