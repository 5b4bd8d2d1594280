"""Row-level security on the tenant-owned registry tables."""
from django.db import migrations

from tenants.rls import EnableTenantRLS


class Migration(migrations.Migration):

    dependencies = [
        ("training", "0002_registry"),
    ]

    operations = [
        EnableTenantRLS("training_tunedmodel"),
        EnableTenantRLS("training_trainingcheckpoint"),
    ]
