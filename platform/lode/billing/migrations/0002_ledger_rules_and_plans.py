"""Row-level security on tenant tables, the append-only usage ledger, the invoice number
sequence, and the plans Lode offers out of the box (editable later as new versions)."""
from django.db import migrations

from tenants.rls import EnableTenantRLS

TENANT_TABLES = (
    "billing_usageevent", "billing_billingaccount", "billing_subscription", "billing_quota",
    "billing_creditgrant", "billing_invoice", "billing_invoiceline", "billing_creditapplication",
)

GPU_PER_HOUR = {"cpu": "10", "t4": "60", "l4": "90", "a10g": "120", "a100": "300", "h100": "450", "h200": "550"}
GB_MONTH = 10**9 * 730  # byte-hours in a gigabyte kept for a (730-hour) month


def flat(price):
    return [{"up_to": None, "unit_price": price}]


def plans():
    developer = [
        *[("gpu_seconds", gpu, 36000 if gpu == "cpu" else 0, 3600, flat(price)) for gpu, price in GPU_PER_HOUR.items()],
        ("input_tokens", "", 1_000_000, 1_000_000, flat("20")),
        ("output_tokens", "", 250_000, 1_000_000, flat("60")),
        ("images", "", 100, 100, flat("100")),
        ("storage_byte_hours", "", GB_MONTH, GB_MONTH, flat("10")),
        ("labeled_tasks", "", 1000, 1000, flat("50")),
        ("moderation_reviews", "", 100, 1, flat("5")),
    ]
    startup = [
        *[("gpu_seconds", gpu, 360000 if gpu == "cpu" else 0, 3600,
           [{"up_to": "360000", "unit_price": price}, {"up_to": None, "unit_price": str(int(price) * 9 // 10)}])
          for gpu, price in GPU_PER_HOUR.items()],
        ("input_tokens", "", 20_000_000, 1_000_000,
         [{"up_to": "500000000", "unit_price": "15"}, {"up_to": None, "unit_price": "10"}]),
        ("output_tokens", "", 5_000_000, 1_000_000,
         [{"up_to": "100000000", "unit_price": "45"}, {"up_to": None, "unit_price": "30"}]),
        ("images", "", 2000, 100, flat("80")),
        ("storage_byte_hours", "", 50 * GB_MONTH, GB_MONTH, flat("8")),
        ("labeled_tasks", "", 20000, 1000, flat("40")),
        ("moderation_reviews", "", 2000, 1, flat("4")),
    ]
    prepaid = [(meter, dimension, 0, unit, tiers) for meter, dimension, _, unit, tiers in developer]
    return [
        ("developer", "Developer", "Pay as you go, with a small monthly allowance.", False, 0, developer),
        ("startup", "Startup", "A monthly fee, generous allowances and volume tiers.", False, 4900, startup),
        ("prepaid", "Prepaid", "Buy credit up front; work stops when it is spent.", True, 0, prepaid),
    ]


def seed_plans(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    PlanVersion = apps.get_model("billing", "PlanVersion")
    PlanPrice = apps.get_model("billing", "PlanPrice")
    db = schema_editor.connection.alias
    for code, name, description, is_prepaid, base_fee, prices in plans():
        plan, created = Plan.objects.using(db).get_or_create(
            code=code, defaults={"name": name, "description": description, "currency": "USD", "is_prepaid": is_prepaid}
        )
        if not created:
            continue
        version = PlanVersion.objects.using(db).create(plan=plan, version=1, base_fee_minor=base_fee)
        PlanPrice.objects.using(db).bulk_create([
            PlanPrice(plan_version=version, meter=meter, dimension=dimension, included_quantity=included,
                      price_unit=unit, tiers=tiers)
            for meter, dimension, included, unit, tiers in prices
        ])


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
