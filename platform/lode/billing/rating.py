"""Rating: turns a period's usage totals into priced lines. Pure functions over plain values (no
database), so the arithmetic can be checked by hand.

Rules (README "Rating"):
- A billing period is a calendar month in UTC. A subscription segment is the part of the period
  one plan version covered; a plan change mid-period gives two segments.
- The monthly base fee and each included allowance are prorated by the segment's share of the
  period, to the second: fee x seconds / period seconds, rounded half-up to the minor unit.
- Usage past the allowance is rated through graduated tiers (each tier's unit price applies to
  the quantity inside that tier); tiers count from zero again in each segment.
- A price with a blank dimension rates every dimension of its meter that has no price of its
  own, pooled (one allowance for all of them).
- Each line is rounded half-up to the minor unit once, at the end."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

QUANTITY_STEP = Decimal("0.000001")


@dataclass(frozen=True)
class Price:
    meter: str
    dimension: str  # "" = every dimension without its own price
    included_quantity: Decimal
    price_unit: int
    tiers: tuple[tuple[Decimal | None, Decimal], ...]  # (up_to, unit_price); last up_to is None

    @classmethod
    def from_tiers_json(cls, *, meter: str, dimension: str, included_quantity: Decimal, price_unit: int, tiers: list) -> Price:
        parsed = tuple(
            (None if tier["up_to"] is None else Decimal(tier["up_to"]), Decimal(tier["unit_price"])) for tier in tiers
        )
        return cls(meter=meter, dimension=dimension, included_quantity=Decimal(included_quantity), price_unit=price_unit, tiers=parsed)


@dataclass(frozen=True)
class PlanTerms:
    plan_version_id: int
    plan_name: str
    base_fee_minor: int
    prices: tuple[Price, ...]

    def price_for(self, meter: str, dimension: str) -> Price | None:
        fallback = None
        for price in self.prices:
            if price.meter != meter:
                continue
            if price.dimension == dimension:
                return price
            if price.dimension == "":
                fallback = price
        return fallback


@dataclass
class RatedLine:
    kind: str  # "base_fee" | "usage"
    description: str
    plan_version_id: int
    segment_start: datetime
    segment_end: datetime
    amount_minor: int
    meter: str = ""
    dimension: str = ""
    quantity: Decimal = Decimal(0)
    included_quantity: Decimal = Decimal(0)
    billable_quantity: Decimal = Decimal(0)
    tiers: list[dict] = field(default_factory=list)


def plain(value: Decimal) -> str:
    """A Decimal as a plain string without trailing zeros or exponent: 7200.000000 -> "7200"."""
    return format(value.normalize(), "f")


def round_minor(amount: Decimal) -> int:
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def prorate(value: Decimal, *, part_seconds: int, whole_seconds: int) -> Decimal:
    """value x part / whole, exact as a Decimal fraction up to Decimal's 28 digits."""
    if part_seconds >= whole_seconds:
        return Decimal(value)
    return Decimal(value) * Decimal(part_seconds) / Decimal(whole_seconds)


def tiered_amount(quantity: Decimal, price: Price) -> tuple[Decimal, list[dict]]:
    """The exact (unrounded) amount in minor units for `quantity` billable units, and how it fell
    into the tiers."""
    remaining = quantity
    lower = Decimal(0)
    total = Decimal(0)
    breakdown = []
    for up_to, unit_price in price.tiers:
        if remaining <= 0:
            break
        width = remaining if up_to is None else min(remaining, up_to - lower)
        if width > 0:
            amount = width * unit_price / Decimal(price.price_unit)
            total += amount
            breakdown.append({
                "from": plain(lower), "up_to": None if up_to is None else plain(up_to), "quantity": plain(width),
                "unit_price": plain(unit_price), "price_unit": price.price_unit, "amount": plain(amount),
            })
            remaining -= width
        if up_to is not None:
            lower = up_to
    return total, breakdown


def segment_rate(
    *, terms: PlanTerms, usage: dict[tuple[str, str], Decimal], segment_start: datetime, segment_end: datetime,
    period_seconds: int, meter_label=lambda meter, dimension: f"{meter} ({dimension})" if dimension else meter,
) -> list[RatedLine]:
    """Lines for one segment: the prorated base fee, then one usage line per price that rated
    something (and a zero line for usage no price of this plan covers)."""
    seconds = int((segment_end - segment_start).total_seconds())
    whole = seconds >= period_seconds
    share = "" if whole else f" ({seconds / period_seconds:.2%} of the month)"
    lines: list[RatedLine] = []
    if terms.base_fee_minor:
        lines.append(RatedLine(
            kind="base_fee", description=f"{terms.plan_name} plan{share}", plan_version_id=terms.plan_version_id,
            segment_start=segment_start, segment_end=segment_end,
            amount_minor=round_minor(prorate(Decimal(terms.base_fee_minor), part_seconds=seconds, whole_seconds=period_seconds)),
        ))
    pooled: dict[tuple[str, str], Decimal] = {}
    unpriced: dict[tuple[str, str], Decimal] = {}
    for (meter, dimension), quantity in sorted(usage.items()):
        price = terms.price_for(meter, dimension)
        if price is None:
            unpriced[(meter, dimension)] = quantity
        else:
            key = (price.meter, price.dimension)
            pooled[key] = pooled.get(key, Decimal(0)) + quantity
    for (meter, dimension), quantity in sorted(pooled.items()):
        price = terms.price_for(meter, dimension)
        included = prorate(price.included_quantity, part_seconds=seconds, whole_seconds=period_seconds)
        included = included.quantize(QUANTITY_STEP, rounding=ROUND_FLOOR)
        billable = max(Decimal(0), quantity - included)
        amount, breakdown = tiered_amount(billable, price)
        lines.append(RatedLine(
            kind="usage", description=meter_label(meter, dimension) + share, plan_version_id=terms.plan_version_id,
            segment_start=segment_start, segment_end=segment_end, amount_minor=round_minor(amount),
            meter=meter, dimension=dimension, quantity=quantity, included_quantity=included,
            billable_quantity=billable, tiers=breakdown,
        ))
    for (meter, dimension), quantity in sorted(unpriced.items()):
        lines.append(RatedLine(
            kind="usage", description=meter_label(meter, dimension) + " (not charged on this plan)" + share,
            plan_version_id=terms.plan_version_id, segment_start=segment_start, segment_end=segment_end,
            amount_minor=0, meter=meter, dimension=dimension, quantity=quantity, included_quantity=quantity,
        ))
    return lines


def tax_amount(taxable_minor: int, rate: Decimal) -> int:
    return round_minor(Decimal(taxable_minor) * Decimal(rate))


def marginal_cost(*, price: Price | None, used: Decimal, extra: Decimal) -> Decimal:
    """What `extra` more units cost on top of `used` this period, allowance and tiers considered
    (the whole month's allowance: estimates are not prorated)."""
    if price is None or extra <= 0:
        return Decimal(0)
    before = max(Decimal(0), used - price.included_quantity)
    after = max(Decimal(0), used + extra - price.included_quantity)
    return tiered_amount(after, price)[0] - tiered_amount(before, price)[0]
