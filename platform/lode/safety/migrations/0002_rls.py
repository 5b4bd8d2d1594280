"""Row-level security on the tenant-owned safety tables."""
from django.db import migrations

from tenants.rls import EnableTenantRLS


class Migration(migrations.Migration):

    dependencies = [
        ("safety", "0001_initial"),
    ]

    operations = [
        EnableTenantRLS("safety_safetypolicy"),
        EnableTenantRLS("safety_moderationitem"),
        EnableTenantRLS("safety_safetydecision"),
        EnableTenantRLS("safety_reviewdecision"),
    ]
