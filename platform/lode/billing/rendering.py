"""Invoices as documents: a standalone printable HTML page and a PDF with the same content, both
drawn from one plain-data view of an invoice (`InvoiceDocument`). Amounts stay integer minor units
or Decimal until they become text here; nothing passes through a float.

Also the money and quantity formatting the dashboard's billing pages use, so a page and an
invoice never show the same amount two ways."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from uuid import UUID

from django.template.loader import render_to_string
from fpdf import FPDF
from fpdf.fonts import FontFace

from tenants.db_context import tenant_atomic
from tenants.models import Organization
from tenants.selectors import organization_owner_emails

from . import selectors
from .meters import METERS
from .models import BillingAccount, Invoice, InvoiceLine

# ISO 4217 minor-unit exponents that are not 2 (the common case).
CURRENCY_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0, "RWF": 0,
    "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
# Digits shown past the minor unit for unit prices and tier amounts (0.2 cents a token: "$0.002").
EXTRA_PLACES = 4
# Price units that read better under a name of their own than as a count of the meter's unit.
NAMED_PRICE_UNITS = {
    ("gpu_seconds", 3600): "GPU-hour",
    ("storage_byte_hours", 730 * 10**9): "GB-month",
}

# fpdf2 subsets embedded fonts with fontTools, which logs every table and glyph it keeps at INFO:
# a screenful per PDF that says nothing an operator needs.
logging.getLogger("fontTools.subset").setLevel(logging.WARNING)

DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")
# Core PDF fonts only know latin-1; these stand in for the characters our own text uses.
LATIN1_STAND_INS = str.maketrans({"€": "EUR ", "–": "-", "—": "-", "−": "-", "…": "...", "“": '"', "”": '"',
                                  "‘": "'", "’": "'", "×": "x", "≈": "~", "\u00a0": " "})


# --- Formatting ---------------------------------------------------------------------------------


def currency_exponent(currency: str) -> int:
    return CURRENCY_EXPONENTS.get(currency.upper(), 2)


def money_format(amount_minor: int | Decimal, currency: str, *, exact: bool = False) -> str:
    """Minor units as money: 123456 USD -> "$1,234.56", 123456 CHF -> "CHF 1,234.56". With
    `exact`, digits past the minor unit are kept (up to EXTRA_PLACES more), for unit prices."""
    exponent = currency_exponent(currency)
    value = Decimal(amount_minor).scaleb(-exponent)
    places = exponent
    if exact:
        value = value.quantize(Decimal(1).scaleb(-(exponent + EXTRA_PLACES)), rounding=ROUND_HALF_UP)
        digits = -value.normalize().as_tuple().exponent if value else 0
        places = max(exponent, digits)
    value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    sign = "-" if value < 0 else ""
    text = f"{abs(value):,f}"
    symbol = CURRENCY_SYMBOLS.get(currency.upper())
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{currency.upper()} {text}"


def quantity_format(value: Decimal | int | str) -> str:
    """A quantity without float or exponent: Decimal("10000000.000000") -> "10,000,000",
    Decimal("1234.500000") -> "1,234.5"."""
    number = Decimal(value)
    if number == number.to_integral_value():
        number = number.quantize(Decimal(1))
    else:
        number = number.normalize()
    return f"{number:,f}"


def percent_format(rate: Decimal | str) -> str:
    """A fraction as a percentage: Decimal("0.2000") -> "20%", Decimal("0.0825") -> "8.25%"."""
    return quantity_format(Decimal(rate) * 100) + "%"


def unit_plural(meter: str, quantity: Decimal | int = 2) -> str:
    unit = METERS[meter].unit if meter in METERS else "unit"
    return unit if Decimal(quantity) == 1 else f"{unit}s"


def price_unit_text(meter: str, price_unit: int) -> str:
    """What a tier's unit price is per: "token", "1,000,000 tokens", "GPU-hour"."""
    named = NAMED_PRICE_UNITS.get((meter, price_unit))
    if named:
        return named
    if price_unit == 1:
        return unit_plural(meter, 1)
    return f"{quantity_format(price_unit)} {unit_plural(meter)}"


def quantity_in_price_units(meter: str, quantity: Decimal, price_unit: int) -> str:
    """A quantity in the unit its price is quoted in when that unit has a name (36000
    GPU-seconds -> "10 GPU-hours"), else in the meter's own unit."""
    named = NAMED_PRICE_UNITS.get((meter, price_unit))
    if named:
        count = Decimal(quantity) / Decimal(price_unit)
        return f"{quantity_format(count.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP))} {named}{'' if count == 1 else 's'}"
    return f"{quantity_format(quantity)} {unit_plural(meter, quantity)}"


def tier_range_text(lower: Decimal, upper: Decimal | None) -> str:
    """Which part of the billable quantity a tier covers; empty for a flat price (one tier)."""
    if upper is None:
        return "" if lower == 0 else f"over {quantity_format(lower)}"
    return f"the first {quantity_format(upper)}" if lower == 0 else f"{quantity_format(lower)} to {quantity_format(upper)}"


def _day(value: datetime | None) -> str:
    if value is None:
        return ""
    value = value.astimezone(dt_timezone.utc)
    return f"{value.day} {value:%B %Y}"


# --- The document -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierRow:
    text: str  # "10,000,000 tokens up to 500,000,000 at $0.15 per 1,000,000 tokens"
    amount: str


@dataclass(frozen=True)
class LineRow:
    position: int
    kind: str
    description: str
    quantity: str
    included: str
    billable: str
    amount: str
    tiers: tuple[TierRow, ...]


@dataclass(frozen=True)
class InvoiceDocument:
    id: str
    number: str
    status: str
    status_label: str
    organization_name: str
    bill_to: tuple[str, ...]
    issued_at: datetime | None
    issued_on: str
    paid_on: str
    voided_on: str
    period_label: str  # "2026-01"
    period_text: str  # "1 January 2026 – 31 January 2026"
    currency: str
    lines: tuple[LineRow, ...]
    subtotal: str
    credits_applied: str
    has_credits: bool
    tax_label: str
    tax_rate: str
    has_tax: bool
    tax: str
    total: str
    total_minor: int
    usage_event_count: int

    @property
    def title(self) -> str:
        return f"Invoice {self.number}" if self.number else "Draft invoice"


def invoice_filename(document: InvoiceDocument, extension: str) -> str:
    """A safe file name for a download: the invoice number, or its id for a draft."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", document.number or f"invoice-{document.id}")
    return f"{stem}.{extension}"


def _tier_rows(line: InvoiceLine, currency: str) -> tuple[TierRow, ...]:
    rows = []
    for tier in line.tiers or []:
        lower = Decimal(tier["from"])
        upper = None if tier["up_to"] is None else Decimal(tier["up_to"])
        price = money_format(Decimal(tier["unit_price"]), currency, exact=True)
        per = price_unit_text(line.meter, int(tier["price_unit"]))
        quantity = Decimal(tier["quantity"])
        part = tier_range_text(lower, upper)
        text = (f"{quantity_format(quantity)} {unit_plural(line.meter, quantity)}"
                f"{f' ({part})' if part else ''} at {price} per {per}")
        rows.append(TierRow(text=text, amount=money_format(Decimal(tier["amount"]), currency, exact=True)))
    return tuple(rows)


def _line_row(line: InvoiceLine, currency: str) -> LineRow:
    usage = line.kind == InvoiceLine.Kind.USAGE
    return LineRow(
        position=line.position, kind=line.kind, description=line.description,
        quantity=quantity_format(line.quantity) if usage else "",
        included=quantity_format(line.included_quantity) if usage else "",
        billable=quantity_format(line.billable_quantity) if usage else "",
        amount=money_format(line.amount_minor, currency),
        tiers=_tier_rows(line, currency) if usage else (),
    )


def invoice_document(*, tenant_id: UUID | str, invoice_id: UUID | str) -> InvoiceDocument:
    """The invoice as plain text values, ready to lay out. Raises NotFound for an invoice that is
    missing or another tenant's (the same answer)."""
    invoice = selectors.invoice_get(tenant_id=tenant_id, invoice_id=invoice_id)
    with tenant_atomic(tenant_id):
        lines = list(invoice.lines.all())
        organization_name = Organization.objects.filter(id=tenant_id).values_list("name", flat=True).first() or ""
        billing_email = BillingAccount.objects.filter(tenant_id=tenant_id).values_list("billing_email", flat=True).first()
    bill_to = (billing_email,) if billing_email else tuple(organization_owner_emails(tenant_id=tenant_id))
    currency = invoice.currency
    last_day = invoice.period_end - timedelta(seconds=1)
    return InvoiceDocument(
        id=str(invoice.id),
        number=invoice.number or "",
        status=invoice.status,
        status_label=Invoice.Status(invoice.status).label,
        organization_name=organization_name,
        bill_to=bill_to,
        issued_at=invoice.issued_at,
        issued_on=_day(invoice.issued_at),
        paid_on=_day(invoice.paid_at),
        voided_on=_day(invoice.voided_at),
        period_label=selectors.period_label(invoice.period_start.astimezone(dt_timezone.utc)),
        period_text=f"{_day(invoice.period_start)} – {_day(last_day)}",
        currency=currency,
        lines=tuple(_line_row(line, currency) for line in lines),
        subtotal=money_format(invoice.subtotal_minor, currency),
        credits_applied=money_format(-invoice.credits_applied_minor, currency),
        has_credits=invoice.credits_applied_minor > 0,
        tax_label=invoice.tax_label or "Tax",
        tax_rate=percent_format(invoice.tax_rate),
        has_tax=invoice.tax_rate > 0 or invoice.tax_minor > 0,
        tax=money_format(invoice.tax_minor, currency),
        total=money_format(invoice.total_minor, currency),
        total_minor=invoice.total_minor,
        usage_event_count=invoice.usage_event_count,
    )


# --- HTML -----------------------------------------------------------------------------------------


def invoice_html_render(document: InvoiceDocument) -> str:
    return render_to_string("billing/invoice.html", {"invoice": document})


def invoice_html(*, tenant_id: UUID | str, invoice_id: UUID | str) -> str:
    """A standalone printable HTML page (inline CSS, no scripts, nothing fetched)."""
    return invoice_html_render(invoice_document(tenant_id=tenant_id, invoice_id=invoice_id))


# --- PDF ------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _unicode_fonts() -> tuple[Path, Path] | None:
    """DejaVu Sans (regular, bold) where the system has it: it covers any organization's name.
    Without it the PDF falls back to the core Helvetica and latin-1 text."""
    regular, bold = DEJAVU_DIR / "DejaVuSans.ttf", DEJAVU_DIR / "DejaVuSans-Bold.ttf"
    return (regular, bold) if regular.is_file() and bold.is_file() else None


class _PagedPdf(FPDF):
    """An FPDF whose pages end with the invoice number and "page n of m"."""

    footer_text = ""
    footer_font = "Helvetica"

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.footer_font, "", 7.5)
        self.set_text_color(105, 112, 125)
        self.cell(0, 5, f"{self.footer_text}    Page {self.page_no()} of {{nb}}", align="R")


class _InvoicePdf:
    """Lays an InvoiceDocument out on A4 pages."""

    INK = (30, 35, 45)
    MUTED = (105, 112, 125)
    LINE = (210, 214, 222)
    BAD = (180, 35, 24)

    def __init__(self, document: InvoiceDocument):
        self.document = document
        self.pdf = _PagedPdf(orientation="portrait", unit="mm", format="A4")
        self.pdf.set_margins(18, 18, 18)
        self.pdf.set_auto_page_break(auto=True, margin=18)
        fonts = _unicode_fonts()
        if fonts is not None:
            self.pdf.add_font("DejaVu", "", str(fonts[0]))
            self.pdf.add_font("DejaVu", "B", str(fonts[1]))
            self.family, self.unicode = "DejaVu", True
        else:
            self.family, self.unicode = "Helvetica", False
        self.pdf.footer_font = self.family
        self.pdf.footer_text = self.text(document.number or "Draft invoice")

    def text(self, value: str) -> str:
        if self.unicode:
            return value
        return value.translate(LATIN1_STAND_INS).encode("latin-1", "replace").decode("latin-1")

    def font(self, size: float, *, bold: bool = False, color: tuple[int, int, int] = INK) -> None:
        self.pdf.set_font(self.family, "B" if bold else "", size)
        self.pdf.set_text_color(*color)

    def build(self) -> bytes:
        document, pdf = self.document, self.pdf
        pdf.set_title(self.text(document.title))
        pdf.set_author(self.text(document.organization_name))
        pdf.set_subject(self.text(f"Lode invoice for {document.period_label}"))
        pdf.set_creator("Lode")
        pdf.set_lang("en")
        # The same invoice gives the same bytes: the document is dated by its issue, not by now.
        created = document.issued_at or datetime(2000, 1, 1, tzinfo=dt_timezone.utc)
        pdf.set_creation_date(created.astimezone(dt_timezone.utc))
        pdf.add_page()
        width = pdf.epw

        self.font(20, bold=True)
        pdf.cell(width / 2, 10, self.text("Invoice"))
        self.font(11, bold=True)
        pdf.cell(width / 2, 10, self.text(document.organization_name), align="R", new_x="LMARGIN", new_y="NEXT")
        self.font(11)
        pdf.cell(width / 2, 6, self.text(document.number or "Draft"))
        self.font(9, color=self.MUTED)
        pdf.cell(width / 2, 6, self.text(f"Status: {document.status_label}"), align="R", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        if document.status == "void":
            self.font(11, bold=True, color=self.BAD)
            when = f" on {document.voided_on}" if document.voided_on else ""
            pdf.multi_cell(width, 6, self.text(f"VOID: this invoice was voided{when}; nothing is due on it."),
                           new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)

        facts = [("Issued", document.issued_on or "not yet"), ("Period", document.period_text),
                 ("Bill to", ", ".join(document.bill_to) or "-"), ("Currency", document.currency)]
        if document.paid_on:
            facts.append(("Paid", document.paid_on))
        if document.voided_on:
            facts.append(("Voided", document.voided_on))
        for label, value in facts:
            self.font(9, color=self.MUTED)
            pdf.cell(28, 5.5, self.text(label))
            self.font(10)
            pdf.multi_cell(width - 28, 5.5, self.text(value), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(5)

        self.font(8.5)
        pdf.set_draw_color(*self.LINE)
        heading = FontFace(emphasis="BOLD", color=self.MUTED, fill_color=(244, 245, 248))
        tier_style = FontFace(color=self.MUTED, size_pt=7.5)
        with pdf.table(
            col_widths=(48, 28, 34, 36, 28), text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
            borders_layout="HORIZONTAL_LINES", headings_style=heading, line_height=5, padding=(1.2, 1.5),
            width=width,
        ) as table:
            row = table.row()
            for title in ("Description", "Quantity", "Included", "Billable", "Amount"):
                row.cell(title)
            for line in document.lines:
                row = table.row()
                for value in (line.description, line.quantity, line.included, line.billable, line.amount):
                    row.cell(self.text(value))
                for tier in line.tiers:
                    row = table.row()
                    row.cell(self.text(f"    {tier.text}"), style=tier_style, colspan=4, align="LEFT")
                    row.cell(self.text(tier.amount), style=tier_style)
            if not document.lines:
                row = table.row()
                row.cell("Nothing was used this period.", colspan=5, align="LEFT")
        pdf.ln(4)

        totals = [("Subtotal", document.subtotal, False)]
        if document.has_credits:
            totals.append(("Credits applied", document.credits_applied, False))
        if document.has_tax:
            totals.append((f"{document.tax_label} ({document.tax_rate})", document.tax, False))
        totals.append((f"Total ({document.currency})", document.total, True))
        for label, value, bold in totals:
            self.font(11 if bold else 10, bold=bold)
            pdf.cell(width - 40, 6.5, self.text(label), align="R")
            pdf.cell(40, 6.5, self.text(value), align="R", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(6)

        self.font(8, color=self.MUTED)
        note = (f"Based on {document.usage_event_count:,} metered usage events. Amounts in {document.currency}. "
                "Quantities are in each meter's unit; included quantities are the plan's allowance for the period.")
        pdf.multi_cell(width, 4.5, self.text(note), new_x="LMARGIN", new_y="NEXT")
        return bytes(pdf.output())


def invoice_pdf_render(document: InvoiceDocument) -> bytes:
    return _InvoicePdf(document).build()


def invoice_pdf(*, tenant_id: UUID | str, invoice_id: UUID | str) -> bytes:
    """The invoice as a PDF (fpdf2). The same invoice always gives the same bytes."""
    return invoice_pdf_render(invoice_document(tenant_id=tenant_id, invoice_id=invoice_id))
