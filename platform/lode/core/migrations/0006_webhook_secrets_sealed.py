"""Webhook signing secrets are stored sealed (lode.core.sealing) instead of as they are: the new
columns are filled from the old ones, which are then dropped (and back, unsealed, when reversed). The table is under FORCE row-level
security, so the owner lifts FORCE for the copy, inside this migration's transaction."""
from django.db import migrations, models

TABLE = "core_webhookendpoint"


def seal_existing(apps, schema_editor):
    from lode.core import sealing

    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {TABLE} NO FORCE ROW LEVEL SECURITY")
        cursor.execute(f"SELECT id, secret, previous_secret FROM {TABLE}")
        for endpoint_id, secret, previous in cursor.fetchall():
            sealed = sealing.seal(secret, context=f"webhook_endpoint:{endpoint_id}:secret")
            previous_sealed = (sealing.seal(previous, context=f"webhook_endpoint:{endpoint_id}:previous_secret")
                               if previous else "")
            cursor.execute(f"UPDATE {TABLE} SET secret_sealed = %s, previous_secret_sealed = %s WHERE id = %s",
                           [sealed, previous_sealed, endpoint_id])
        cursor.execute(f"ALTER TABLE {TABLE} FORCE ROW LEVEL SECURITY")


def unseal_back(apps, schema_editor):
    from lode.core import sealing

    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {TABLE} NO FORCE ROW LEVEL SECURITY")
        cursor.execute(f"SELECT id, secret_sealed, previous_secret_sealed FROM {TABLE}")
        for endpoint_id, sealed, previous_sealed in cursor.fetchall():
            secret = sealing.unseal(sealed, context=f"webhook_endpoint:{endpoint_id}:secret")
            previous = (sealing.unseal(previous_sealed, context=f"webhook_endpoint:{endpoint_id}:previous_secret")
                        if previous_sealed else "")
            cursor.execute(f"UPDATE {TABLE} SET secret = %s, previous_secret = %s WHERE id = %s",
                           [secret, previous, endpoint_id])
        cursor.execute(f"ALTER TABLE {TABLE} FORCE ROW LEVEL SECURITY")


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0005_webhooks"),
    ]

    operations = [
        migrations.AddField(model_name="webhookendpoint", name="secret_sealed", field=models.TextField(default=""),
                            preserve_default=False),
        migrations.AddField(model_name="webhookendpoint", name="previous_secret_sealed",
                            field=models.TextField(blank=True, default=""), preserve_default=False),
        migrations.RunPython(seal_existing, unseal_back, elidable=False),
        # With a default the old columns can come back when this migration is reversed.
        migrations.AlterField(model_name="webhookendpoint", name="secret", field=models.CharField(max_length=100, default="")),
        migrations.AlterField(model_name="webhookendpoint", name="previous_secret",
                              field=models.CharField(max_length=100, blank=True, default="")),
        migrations.RemoveField(model_name="webhookendpoint", name="secret"),
        migrations.RemoveField(model_name="webhookendpoint", name="previous_secret"),
    ]
