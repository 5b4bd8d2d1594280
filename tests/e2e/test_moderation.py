"""The moderation queue in headless Chromium: a reviewer opens Moderation from the navigation (its
badge counts the open items), claims with `c`, reads the most overdue item's content beside a live
SLA timer (red once overdue), approves with `a`, moves through the list with `j`/`k`, rejects with
`r`, the reason and Enter (an empty reason is refused on the field), escalates with `e`; each
decision changes the item's state in the list and opens the next claimed item. Typing in a text
field fires no shortcut; `?` shows them."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import Page, expect

from lode.safety.checks import texts_check
from lode.safety.models import ModerationItem
from lode.safety.services import policy_create
from tenants.db_context import tenant_atomic
from tenants.services import invitation_accept, invitation_create, user_signup
from tests.conftest import system

PASSWORD = "violet-harbour-lantern-42"
REVIEWER = "rita.reviewer@example.com"
TEXTS = ("the first zorblax answer", "a second zorblax reply", "one more zorblax text")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])]


@pytest.fixture
def queue() -> list[str]:
    """An organization whose policy flags "zorblax", a reviewer (their only organization), and
    three flagged outputs in due order; the first is already overdue."""
    owner = user_signup(email="olga.owner@example.com", password=PASSWORD, organization_name="Zorblax Labs")
    tenant_id = owner.organization.id
    reviewer = get_user_model().objects.create_user(REVIEWER, PASSWORD)
    invitation_accept(token=invitation_create(tenant_id=tenant_id, invited_by=owner.user, email=REVIEWER,
                                              role="reviewer").token, user=reviewer)
    policy_create(tenant_id=tenant_id, by=owner.user, blocklist=[{"kind": "term", "value": "zorblax"}],
                  rules={"blocklist": {"threshold": 0.5, "action": "flag"}})
    ids = [texts_check(tenant_id=tenant_id, texts=[text], source="output", full=False)[0].item_id for text in TEXTS]
    with tenant_atomic(tenant_id):
        ModerationItem.objects.filter(id=ids[0]).update(due_at=timezone.now() - timedelta(minutes=5))
    return ids


def _row(page: Page, item_id: str):
    return page.locator(f'tr[data-item-id="{item_id}"]')


def _ready(page: Page) -> None:
    """The page a key press or form led to has run its scripts (the shortcuts are attached)."""
    page.wait_for_load_state("domcontentloaded")


def test_a_reviewer_claims_reads_and_decides_with_the_keyboard(live_server, log_in, queue):
    first, second, third = queue
    page = log_in(REVIEWER, PASSWORD)

    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_test_id("moderation-open-count")).to_have_text(re.compile(r"^3"))
    nav.get_by_role("link", name="Moderation").click()
    expect(page.get_by_role("heading", name="Moderation", level=1)).to_be_visible()
    _ready(page)
    expect(page.locator("tr[data-item-row]")).to_have_count(3)
    for item_id in queue:
        expect(_row(page, item_id).get_by_test_id("item-state")).to_have_text("Pending")

    # ? lists the shortcuts; Esc closes the list.
    page.keyboard.press("?")
    help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(help_dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(help_dialog).to_be_hidden()

    # c claims the next items and opens the most overdue one.
    page.keyboard.press("c")
    panel = page.get_by_test_id("review-panel")
    expect(panel.get_by_test_id("review-content")).to_have_text(TEXTS[0])
    _ready(page)
    expect(panel.get_by_test_id("review-claimed-by")).to_have_text(REVIEWER)
    expect(_row(page, first)).to_have_class(re.compile(r"\bis-current\b"))
    # Its SLA timer: overdue, in red, counting every second; the others still have time left.
    timer = panel.get_by_test_id("review-sla")
    expect(timer).to_have_text(re.compile(r"^overdue \d+m \d\ds$"))
    expect(timer).to_have_class(re.compile(r"\bsla-overdue\b"))
    shown = timer.text_content()
    expect(timer).not_to_have_text(shown, timeout=3_000)
    expect(_row(page, second).locator(".sla")).to_have_text(re.compile(r"left$"))
    expect(_row(page, second).locator(".sla")).not_to_have_class(re.compile(r"\bsla-overdue\b"))

    # Typing in a text field fires nothing: "a" is just a letter of the reason there.
    reason = page.get_by_label("Reason", exact=True)
    reason.click()
    page.keyboard.type("a note")
    expect(reason).to_have_value("a note")
    page.keyboard.press("Escape")
    reason.fill("")
    page.keyboard.press("Escape")
    expect(_row(page, first).get_by_test_id("item-state")).to_have_text("Claimed")

    # a approves; the item stays listed with its new state and the next claimed item opens.
    page.keyboard.press("a")
    expect(page.get_by_role("status").filter(has_text="Approved: the held output is released.")).to_be_visible()
    expect(_row(page, first).get_by_test_id("item-state")).to_have_text("Approved")
    expect(panel.get_by_test_id("review-content")).to_have_text(TEXTS[1])
    _ready(page)

    # k and j move through the list, opening each item in the panel.
    page.keyboard.press("k")
    expect(_row(page, first)).to_have_class(re.compile(r"\bis-current\b"))
    expect(panel.get_by_test_id("review-state")).to_have_text("Approved")
    expect(panel.get_by_test_id("review-content")).to_have_text(TEXTS[0])
    page.keyboard.press("j")
    expect(_row(page, second)).to_have_class(re.compile(r"\bis-current\b"))
    expect(panel.get_by_test_id("review-content")).to_have_text(TEXTS[1])

    # r puts the cursor in the reason box; Enter with no reason is refused on the field.
    page.keyboard.press("r")
    expect(reason).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("reason-error")).to_have_text("required to reject")
    _ready(page)
    expect(reason).to_be_focused()
    expect(_row(page, second).get_by_test_id("item-state")).to_have_text("Claimed")
    page.keyboard.type("off-brand wording")
    page.keyboard.press("Enter")
    expect(_row(page, second).get_by_test_id("item-state")).to_have_text("Rejected")
    expect(panel.get_by_test_id("review-content")).to_have_text(TEXTS[2])
    _ready(page)

    # e escalates, with its reason, to platform staff.
    page.keyboard.press("e")
    expect(reason).to_be_focused()
    page.keyboard.type("a legal question")
    page.keyboard.press("Enter")
    expect(_row(page, third).get_by_test_id("item-state")).to_have_text("Escalated to platform staff")
    expect(panel).to_contain_text("No item open")

    states = dict(system(ModerationItem).filter(id__in=queue).values_list("id", "state"))
    assert {str(key): value for key, value in states.items()} == {first: "approved", second: "rejected",
                                                                  third: "escalated"}
