"""The plans Lode offers out of the box. Written by a data migration; `plan_catalog_ensure` is
idempotent (an existing plan is left as it is: staff may have added versions)."""
from __future__ import annotations

GPU_PER_HOUR = {"cpu": "10", "t4": "60", "l4": "90", "a10g": "120", "a100": "300", "h100": "450", "h200": "550"}
GB_MONTH = 10**9 * 730  # byte-hours in a gigabyte kept for a (730-hour) month


def _flat(price: str) -> list[dict]:
    return [{"up_to": None, "unit_price": price}]


def plan_catalog() -> list[tuple]:
    """(code, name, description, is_prepaid, base fee in cents, [(meter, dimension, included,
    price_unit, tiers)]). Prices are in US cents per price_unit."""
    developer = [
        *[("gpu_seconds", gpu, 36000 if gpu == "cpu" else 0, 3600, _flat(price)) for gpu, price in GPU_PER_HOUR.items()],
        ("input_tokens", "", 1_000_000, 1_000_000, _flat("20")),
        ("output_tokens", "", 250_000, 1_000_000, _flat("60")),
        ("images", "", 100, 100, _flat("100")),
        ("storage_byte_hours", "", GB_MONTH, GB_MONTH, _flat("10")),
        ("labeled_tasks", "", 1000, 1000, _flat("50")),
        ("moderation_reviews", "", 100, 1, _flat("5")),
    ]
    startup = [
        *[("gpu_seconds", gpu, 360000 if gpu == "cpu" else 0, 3600,
           [{"up_to": "360000", "unit_price": price}, {"up_to": None, "unit_price": str(int(price) * 9 // 10)}])
          for gpu, price in GPU_PER_HOUR.items()],
        ("input_tokens", "", 20_000_000, 1_000_000,
         [{"up_to": "500000000", "unit_price": "15"}, {"up_to": None, "unit_price": "10"}]),
        ("output_tokens", "", 5_000_000, 1_000_000,
         [{"up_to": "100000000", "unit_price": "45"}, {"up_to": None, "unit_price": "30"}]),
        ("images", "", 2000, 100, _flat("80")),
        ("storage_byte_hours", "", 50 * GB_MONTH, GB_MONTH, _flat("8")),
        ("labeled_tasks", "", 20000, 1000, _flat("40")),
        ("moderation_reviews", "", 2000, 1, _flat("4")),
    ]
    prepaid = [(meter, dimension, 0, unit, tiers) for meter, dimension, _, unit, tiers in developer]
    return [
        ("developer", "Developer", "Pay as you go, with a small monthly allowance.", False, 0, developer),
        ("startup", "Startup", "A monthly fee, generous allowances and volume tiers.", False, 4900, startup),
        ("prepaid", "Prepaid", "Buy credit up front; work stops when it is spent.", True, 0, prepaid),
    ]


def plan_catalog_ensure(*, plan_model=None, version_model=None, price_model=None, using: str = "default") -> int:
    """Creates the catalogue's plans that do not exist yet; returns how many it created. The
    models are parameters so the data migration can pass its historical ones."""
    if plan_model is None:
        from .models import Plan as plan_model, PlanPrice as price_model, PlanVersion as version_model
    created_count = 0
    for code, name, description, is_prepaid, base_fee, prices in plan_catalog():
        plan, created = plan_model.objects.using(using).get_or_create(
            code=code, defaults={"name": name, "description": description, "currency": "USD", "is_prepaid": is_prepaid}
        )
        if not created:
            continue
        created_count += 1
        version = version_model.objects.using(using).create(plan=plan, version=1, base_fee_minor=base_fee)
        price_model.objects.using(using).bulk_create([
            price_model(plan_version=version, meter=meter, dimension=dimension, included_quantity=included,
                        price_unit=unit, tiers=tiers)
            for meter, dimension, included, unit, tiers in prices
        ])
    return created_count
