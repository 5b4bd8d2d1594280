"""Webhook signing secrets are stored sealed (lode.core.sealing) instead of as they are: the new
columns are filled from the old ones, which are then dropped (and back, unsealed, when reversed). The table is under FORCE row-level
security, so the owner lifts FORCE for the copy, inside this migration's transaction."""
from django.db import migrations, models

TABLE = "core_webhookendpoint"


def _rewrite(schema_editor, *, columns: tuple[str, str], into: tuple[str, str], convert) -> None:
    """Every row's two secret columns, converted by `convert(value, context)`, into the other two
    (an empty previous secret stays empty)."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {TABLE} NO FORCE ROW LEVEL SECURITY")
        cursor.execute(f"SELECT id, {columns[0]}, {columns[1]} FROM {TABLE}")
        for endpoint_id, current, previous in cursor.fetchall():
            values = [convert(value, f"webhook_endpoint:{endpoint_id}:{field}") if value else ""
                      for value, field in ((current, "secret"), (previous, "previous_secret"))]
            cursor.execute(f"UPDATE {TABLE} SET {into[0]} = %s, {into[1]} = %s WHERE id = %s", [*values, endpoint_id])
        cursor.execute(f"ALTER TABLE {TABLE} FORCE ROW LEVEL SECURITY")


def seal_existing(apps, schema_editor):
    from lode.core import sealing

    _rewrite(schema_editor, columns=("secret", "previous_secret"), into=("secret_sealed", "previous_secret_sealed"),
             convert=lambda value, context: sealing.seal(value, context=context))


def unseal_back(apps, schema_editor):
    from lode.core import sealing

    _rewrite(schema_editor, columns=("secret_sealed", "previous_secret_sealed"), into=("secret", "previous_secret"),
             convert=lambda value, context: sealing.unseal(value, context=context))


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
