"""Row-level security on tenant tables, the append-only usage ledger, the invoice number
sequence, and the plans Lode offers out of the box (editable later as new versions)."""
from django.db import migrations

from tenants.rls import EnableTenantRLS

TENANT_TABLES = (
    "billing_usageevent", "billing_billingaccount", "billing_subscription", "billing_quota",
    "billing_creditgrant", "billing_invoice", "billing_invoiceline", "billing_creditapplication",
)


def seed_plans(apps, schema_editor):
    from lode.billing.catalog import plan_catalog_ensure

    plan_catalog_ensure(
        plan_model=apps.get_model("billing", "Plan"), version_model=apps.get_model("billing", "PlanVersion"),
        price_model=apps.get_model("billing", "PlanPrice"), using=schema_editor.connection.alias,
    )


class Migration(migrations.Migration):

    dependencies = [
        ("billing", "0001_initial"),
    ]

    operations = [
        *[EnableTenantRLS(table) for table in TENANT_TABLES],
        migrations.RunSQL(
            """
            CREATE OR REPLACE FUNCTION billing_usage_append_only() RETURNS trigger AS $$
            BEGIN
              RAISE EXCEPTION 'the usage ledger is append-only (% refused)', TG_OP;
            END;
            $$ LANGUAGE plpgsql;
            CREATE TRIGGER billing_usageevent_append_only BEFORE UPDATE OR DELETE ON billing_usageevent
              FOR EACH ROW EXECUTE FUNCTION billing_usage_append_only();
            CREATE SEQUENCE IF NOT EXISTS billing_invoice_number_seq;
            """,
            """
            DROP TRIGGER IF EXISTS billing_usageevent_append_only ON billing_usageevent;
            DROP FUNCTION IF EXISTS billing_usage_append_only();
            DROP SEQUENCE IF EXISTS billing_invoice_number_seq;
            """,
        ),
        migrations.RunPython(seed_plans, migrations.RunPython.noop),
    ]
