"""Row-level security on the tenant-owned prompt tables."""
from django.db import migrations

from tenants.rls import EnableTenantRLS


class Migration(migrations.Migration):

    dependencies = [
        ("generation", "0001_initial"),
    ]

    operations = [
        EnableTenantRLS("generation_exampleset"),
        EnableTenantRLS("generation_prompttemplate"),
    ]
