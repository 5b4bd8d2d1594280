"""The default manager of every tenant-owned model: scoped to the current tenant by default.

`Job.objects.all()` means "this tenant's jobs": the queryset carries the same condition as the
row-level-security policy (the transaction's `lode.tenant_id`), so the ORM and PostgreSQL agree,
and outside a tenant context the answer is empty. Code that must span tenants says so with
tenants.db_context.dangerously_all_tenants(Model)."""
from django.db import models
from django.db.models.expressions import RawSQL

CURRENT_TENANT_SQL = "NULLIF(current_setting('lode.tenant_id', true), '')::uuid"


class TenantScopedManager(models.Manager):
    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(tenant_id=RawSQL(CURRENT_TENANT_SQL, []))
