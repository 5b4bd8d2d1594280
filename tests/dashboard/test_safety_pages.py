"""The safety pages through Django's test client: the moderation queue lists only the tenant's
items with their counts and SLA timers; claiming opens the most overdue item in the review panel;
approve, reject and escalate need the reasons the service asks for (the error on the reason box,
nothing decided) and open the reviewer's next claimed item; bulk decisions say how many were
decided and skipped; an engineer reads but cannot decide, annotators and billing members cannot
read; another tenant's item is a 404 like a missing one; platform staff's escalations page refuses
everyone else; the policy page saves a new version and names the line of a bad regex, and exports
the reviews as a dataset."""
from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from lode.dashboard.safety_views import PolicyForm
from lode.safety import moderation
from lode.safety.checks import texts_check
from lode.safety.models import ModerationItem, ReviewDecision
from lode.safety.policies import policy_current
from lode.safety.selectors import policy_in_force
from lode.safety.services import policy_create
from tenants.services import invitation_accept, invitation_create
from tests.conftest import rows
from tests.dashboard.conftest import PASSWORD, client_for
from tests.safety.conftest import safety_tenant  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db
WITH_SYSTEM_DB = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])
QUEUE, POLICY, ESCALATIONS = "dashboard:moderation", "dashboard:safety-policy", "dashboard:moderation-escalations"
FLAG_ZORBLAX = {"blocklist": [{"kind": "term", "value": "zorblax"}],
                "rules": {"blocklist": {"threshold": 0.5, "action": "flag"}}}


def _flag(tenant_id, by, texts: list[str], *, source: str = "output") -> list[str]:
    """Flagged items through the real check path (a policy flagging "zorblax" first, once)."""
    if policy_current(tenant_id).version == 0:
        policy_create(tenant_id=tenant_id, by=by, **FLAG_ZORBLAX)
    results = texts_check(tenant_id=tenant_id, texts=texts, source=source, full=False, source_ref="dashboard-test")
    assert all(result.action == "flag" for result in results), results
    return [result.item_id for result in results]


def _as_member_of(user, organization_id) -> Client:
    """A signed-in client acting for the organization (the reviewers also have one of their own)."""
    client = client_for(user)
    switched = client.post(reverse("dashboard:organization-switch"), {"organization_id": str(organization_id)})
    assert switched.status_code == 302
    return client


def _member(tenant, role: str) -> Client:
    """A signed-in client of a new member of the tenant with `role` (their only organization)."""
    user = get_user_model().objects.create_user(f"{role}-{uuid.uuid4().hex[:6]}@example.com", PASSWORD)
    sent = invitation_create(tenant_id=tenant.id, invited_by=tenant.user, email=user.email, role=role)
    invitation_accept(token=sent.token, user=user)
    return client_for(user)


def _reviewer(tenant, number: int = 0) -> Client:
    return _as_member_of(tenant.reviewer_users[number], tenant.id)


def _item(tenant_id, item_id) -> ModerationItem:
    [item] = rows(ModerationItem, tenant_id, id=item_id)
    return item


def _html(response) -> str:
    return response.content.decode()


def _decide(client: Client, item_id: str, verdict: str, reason: str = "", **fields):
    return client.post(reverse("dashboard:moderation-item", kwargs={"item_id": item_id}),
                       {"verdict": verdict, "reason": reason, "return_to": "queue", **fields})


def _claim(client: Client, count: int):
    return client.post(reverse(QUEUE), {"action": "claim", "count": count})


def _opened(response) -> str | None:
    """The item a redirect to the queue opens (?item=)."""
    found = re.search(r"[?&]item=([0-9a-f-]{36})", response["Location"])
    return found.group(1) if found else None


# --- The queue ---------------------------------------------------------------------------------------


def test_the_queue_lists_only_the_tenants_items_with_counts_and_sla_timers(safety_tenant, make_tenant):
    ours = _flag(safety_tenant.id, safety_tenant.user, ["zorblax in an answer", "more zorblax here"])
    other = make_tenant()
    theirs = _flag(other.organization.id, other.user, ["their own zorblax secret"])
    reviewer = _reviewer(safety_tenant)

    response = reviewer.get(reverse(QUEUE))

    assert response.status_code == 200
    html = _html(response)
    listed = [row["id"] for row in response.context["rows"]]
    assert sorted(listed) == sorted(ours)
    assert theirs[0] not in html and "their own zorblax secret" not in html
    assert response.context["counts"]["pending"] == 2 and response.context["counts"]["open"] == 2
    assert 'data-testid="count-pending">2<' in html
    # Each open row: source, categories, scores, policy version, a live SLA timer from due_at.
    assert html.count("data-due=") >= 2 and "left" in html
    assert "<code>blocklist</code>" in html and "v1" in html and "Model output" in html
    assert "held" in html  # the policy holds flagged output by default
    # Filters: by source and by state.
    assert reviewer.get(reverse(QUEUE), {"source": "prompt"}).context["rows"] == []
    assert reviewer.get(reverse(QUEUE), {"state": "approved"}).context["rows"] == []
    assert len(reviewer.get(reverse(QUEUE), {"state": "pending", "source": "output"}).context["rows"]) == 2
    # The navigation's badge: the open items.
    badge = reviewer.get(reverse(QUEUE), {"fragment": "nav-badge"})
    assert badge.status_code == 200 and 'title="Items waiting for a reviewer">2<' in _html(badge)


def test_the_queue_reads_in_as_many_queries_for_many_items_as_for_few(safety_tenant):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    reviewer = _reviewer(safety_tenant)
    _flag(safety_tenant.id, safety_tenant.user, ["zorblax a", "zorblax b"])
    _claim(reviewer, 1)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert reviewer.get(reverse(QUEUE)).status_code == 200
        return len(captured)

    few = queries()
    _flag(safety_tenant.id, safety_tenant.user, [f"zorblax {n}" for n in range(8)])
    _claim(reviewer, 3)
    assert queries() == few


def test_claiming_opens_the_most_overdue_item_with_its_content(safety_tenant):
    first, second = _flag(safety_tenant.id, safety_tenant.user, ["first zorblax", "second zorblax"])
    reviewer, other_reviewer = _reviewer(safety_tenant, 0), _reviewer(safety_tenant, 1)

    claimed = _claim(reviewer, 1)
    assert claimed.status_code == 302 and _opened(claimed) == first
    page = reviewer.get(claimed["Location"])
    html = _html(page)
    assert page.context["item"]["id"] == first
    assert 'data-testid="review-content">first zorblax<' in html
    assert safety_tenant.reviewer_users[0].email in html  # claimed by
    assert 'id="review-form"' in html and 'data-testid="review-sla"' in html
    # The other reviewer's claim gets the other item; nothing is left after that.
    assert _opened(_claim(other_reviewer, 5)) == second
    nothing = _claim(other_reviewer, 5)
    assert nothing.status_code == 302 and "Nothing to claim" in _html(other_reviewer.get(nothing["Location"]))
    assert _item(safety_tenant.id, second).claimed_by_id == safety_tenant.reviewer_users[1].pk
    # Without a chosen item the panel opens the reviewer's own claimed one.
    assert reviewer.get(reverse(QUEUE)).context["item"]["id"] == first
    # A count out of range is refused on the field.
    refused = _claim(reviewer, 999)
    assert refused.status_code == 400 and "Claim:" in _html(refused)


def test_decisions_need_their_reasons_and_open_the_next_claimed_item(safety_tenant):
    first, second, third = _flag(safety_tenant.id, safety_tenant.user, ["zorblax 1", "zorblax 2", "zorblax 3"])
    reviewer = _reviewer(safety_tenant)
    _claim(reviewer, 3)

    no_reason = _decide(reviewer, first, "reject")
    assert no_reason.status_code == 400
    html = _html(no_reason)
    assert 'data-testid="reason-error">required to reject<' in html and 'aria-invalid="true"' in html
    assert no_reason.context["item"]["id"] == first and no_reason.context["rows"]  # the queue again
    assert 'data-armed="reject"' in html
    assert _item(safety_tenant.id, first).state == "claimed"

    rejected = _decide(reviewer, first, "reject", "off-brand")
    assert rejected.status_code == 302 and _opened(rejected) == second
    item = _item(safety_tenant.id, first)
    assert item.state == "rejected" and item.purged_at is not None and item.content == ""
    after = reviewer.get(rejected["Location"])
    assert "Rejected: the held content is purged." in _html(after)
    # The decided item stays in the list in its place, with its new state.
    states = {row["id"]: row["state"] for row in after.context["rows"]}
    assert states[first] == "rejected" and states[second] == "claimed"

    approved = _decide(reviewer, second, "approve")
    assert approved.status_code == 302 and _opened(approved) == third
    assert _item(safety_tenant.id, second).released_at is not None

    assert _decide(reviewer, third, "escalate").status_code == 400
    escalated = _decide(reviewer, third, "escalate", "a legal question")
    assert escalated.status_code == 302 and _opened(escalated) is None
    assert _item(safety_tenant.id, third).state == "escalated"

    again = _decide(reviewer, first, "approve")
    assert again.status_code == 409 and "The item is already rejected." in _html(again)
    verdicts = {review.item_id.hex: (review.verdict, review.reason)
                for review in rows(ReviewDecision, safety_tenant.id, tenant_id__exact=safety_tenant.id)}
    assert verdicts == {uuid.UUID(first).hex: ("reject", "off-brand"), uuid.UUID(second).hex: ("approve", ""),
                        uuid.UUID(third).hex: ("escalate", "a legal question")}

    detail = reviewer.get(reverse("dashboard:moderation-item", kwargs={"item_id": first}))
    history = _html(detail)
    assert detail.status_code == 200 and 'data-testid="review-history"' in history
    assert "off-brand" in history and safety_tenant.reviewer_users[0].email in history and "Reject" in history
    assert 'id="review-form"' not in history  # decided: nothing more to decide


def test_a_decision_on_the_item_page_returns_to_it_and_another_reviewers_claim_is_a_409(safety_tenant):
    [item_id] = _flag(safety_tenant.id, safety_tenant.user, ["zorblax once"])
    holder, reviewer = _reviewer(safety_tenant, 1), _reviewer(safety_tenant, 0)
    _claim(holder, 1)
    page = reverse("dashboard:moderation-item", kwargs={"item_id": item_id})

    taken = reviewer.post(page, {"verdict": "approve", "return_to": "item"})
    assert taken.status_code == 409 and "Another reviewer has claimed this item." in _html(taken)

    done = holder.post(page, {"verdict": "approve", "return_to": "item"})
    assert done.status_code == 302 and done["Location"] == page
    assert _item(safety_tenant.id, item_id).state == "approved"


def test_bulk_decisions_report_what_was_decided_and_skipped(safety_tenant):
    ids = _flag(safety_tenant.id, safety_tenant.user, [f"zorblax {n}" for n in range(4)])
    holder = _reviewer(safety_tenant, 1)
    held_id = _opened(_claim(holder, 1))
    reviewer = _reviewer(safety_tenant, 0)

    no_reason = reviewer.post(reverse(QUEUE), {"action": "bulk", "verdict": "reject", "items": ids, "reason": ""})
    assert no_reason.status_code == 400 and 'data-testid="bulk-reason-error">required to reject<' in _html(no_reason)
    assert all(row["is_ticked"] for row in no_reason.context["rows"] if row["id"] in ids)  # still ticked
    nothing = reviewer.post(reverse(QUEUE), {"action": "bulk", "verdict": "approve", "reason": ""})
    assert nothing.status_code == 400 and "Tick at least one item" in _html(nothing)
    assert {item.state for item in rows(ModerationItem, safety_tenant.id, tenant_id__exact=safety_tenant.id)} == {
        "pending", "claimed"}

    done = reviewer.post(reverse(QUEUE), {"action": "bulk", "verdict": "reject", "items": ids, "reason": "spam"})
    assert done.status_code == 302
    shown = _html(reviewer.get(done["Location"]))
    assert "Rejected 3 items; skipped 1." in shown
    assert f"Skipped 1 item: {held_id[:8]}… (Another reviewer has claimed this item.)" in shown
    items = rows(ModerationItem, safety_tenant.id, tenant_id__exact=safety_tenant.id)
    states = {str(item.id): item.state for item in items}
    assert states == {item_id: ("claimed" if item_id == held_id else "rejected") for item_id in ids}


def test_an_engineer_reads_the_queue_but_cannot_decide_and_other_roles_cannot_read(safety_tenant):
    [item_id] = _flag(safety_tenant.id, safety_tenant.user, ["zorblax for an engineer"])
    engineer = _member(safety_tenant, "engineer")

    page = engineer.get(reverse(QUEUE), {"item": item_id})
    assert page.status_code == 200
    html = _html(page)
    assert "zorblax for an engineer" in html and "Deciding needs the permission <code>safety:write</code>" in html
    assert 'id="review-form"' not in html and 'id="claim-form"' not in html
    for response in (_decide(engineer, item_id, "approve"), _claim(engineer, 1)):
        assert response.status_code == 403
        assert 'data-testid="missing-permission">safety:write<' in _html(response)
    response = engineer.post(reverse(POLICY), {"action": "save"})
    assert response.status_code == 403 and 'data-testid="missing-permission">safety:policy<' in _html(response)
    assert _item(safety_tenant.id, item_id).state == "pending"
    assert engineer.get(reverse(POLICY)).status_code == 200

    for role in ("annotator", "billing"):
        client = _member(safety_tenant, role)
        for name in (QUEUE, POLICY):
            response = client.get(reverse(name))
            assert response.status_code == 403
            assert 'data-testid="missing-permission">safety:read<' in _html(response)
        assert client.get(reverse("dashboard:moderation-item", kwargs={"item_id": item_id})).status_code == 403


def test_another_tenants_item_reads_as_missing(safety_tenant, make_tenant):
    other = make_tenant()
    [theirs] = _flag(other.organization.id, other.user, ["their zorblax secret"])
    _flag(safety_tenant.id, safety_tenant.user, ["our zorblax"])
    reviewer = _reviewer(safety_tenant)
    missing = str(uuid.uuid4())

    for item_id in (theirs, missing):
        page = reviewer.get(reverse("dashboard:moderation-item", kwargs={"item_id": item_id}))
        decided = _decide(reviewer, item_id, "approve")
        assert page.status_code == 404 and decided.status_code == 404
        assert "their zorblax secret" not in _html(page)
        queue = reviewer.get(reverse(QUEUE), {"item": item_id})
        assert queue.status_code == 200 and "That item is not in this organization's queue." in _html(queue)
        assert "their zorblax secret" not in _html(queue)
    assert _item(other.organization.id, theirs).state == "pending"


def test_a_post_without_an_action_is_a_400_not_a_500(safety_tenant):
    reviewer = _reviewer(safety_tenant)
    owner = _as_member_of(safety_tenant.user, safety_tenant.id)

    for client, name in ((reviewer, QUEUE), (owner, POLICY)):
        response = client.post(reverse(name), {})
        assert response.status_code == 400 and "Choose what to do" in _html(response)


# --- Platform staff ------------------------------------------------------------------------------------


@WITH_SYSTEM_DB
def test_the_escalations_page_is_for_staff_and_decides_any_tenants_escalations(safety_tenant, make_tenant, client):
    [item_id] = _flag(safety_tenant.id, safety_tenant.user, ["zorblax to escalate"])
    moderation.item_decide(tenant_id=safety_tenant.id, item_id=item_id, by=safety_tenant.reviewer_users[0],
                           verdict="escalate", reason="a legal question")
    page = reverse(ESCALATIONS)

    assert client.get(page).status_code == 302  # anonymous: to the login page
    reviewer = _reviewer(safety_tenant)
    refused = reviewer.get(page)
    assert refused.status_code == 403 and "platform staff only" in _html(refused)
    assert reviewer.post(page, {"action": "claim", "count": 1}).status_code == 403
    assert "Escalations" not in _html(reviewer.get(reverse(QUEUE)))

    staff = make_tenant()  # staff act as themselves, whatever organization they belong to
    get_user_model().objects.filter(id=staff.user.id).update(is_staff=True)
    staff_client = client_for(get_user_model().objects.get(id=staff.user.id))
    listed = staff_client.get(page)
    html = _html(listed)
    assert listed.status_code == 200
    assert f'data-testid="escalation-tenant">{safety_tenant.organization.name}<' in html
    assert "zorblax to escalate" in html and "a legal question" in html
    assert 'href="/moderation/escalations/"' in html  # the staff's navigation link

    claimed = staff_client.post(page, {"action": "claim", "count": 5})
    assert claimed.status_code == 302 and "Claimed 1 item." in _html(staff_client.get(page))
    no_reason = staff_client.post(page, {"action": "decide", "item_id": item_id, "verdict": "reject", "reason": ""})
    assert no_reason.status_code == 400 and "required to reject" in _html(no_reason)
    done = staff_client.post(page, {"action": "decide", "item_id": item_id, "verdict": "reject",
                                    "reason": "not allowed"})
    assert done.status_code == 302
    assert _item(safety_tenant.id, item_id).state == "rejected"
    [review] = [r for r in rows(ReviewDecision, safety_tenant.id, tenant_id__exact=safety_tenant.id) if r.as_staff]
    assert review.reason == "not allowed" and review.reviewer_id == staff.user.id
    gone = staff_client.post(page, {"action": "decide", "item_id": item_id, "verdict": "approve", "reason": ""})
    assert gone.status_code == 409 and "not escalated" in _html(gone)


# --- The policy ------------------------------------------------------------------------------------------


def _policy_data(tenant_id, **changes) -> dict:
    """The policy form as the page fills it (the policy in force), with changes."""
    data = {"action": "save"}
    for name, value in PolicyForm.initial_from(policy_in_force(tenant_id=tenant_id)).items():
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        else:
            data[name] = "" if value is None else value
    data.update(changes)
    return data


def test_the_policy_page_saves_a_new_version_and_names_what_is_wrong(safety_tenant):
    owner = _as_member_of(safety_tenant.user, safety_tenant.id)
    page = owner.get(reverse(POLICY))
    assert page.status_code == 200 and 'data-testid="policy-version">version 0<' in _html(page)

    blocklist = ("term zorblax\nregex blocklist \\bORDER-\\d{6}\\b\n# a comment\n"
                 "phrase violence how to hurt a person threshold=0.8")
    saved = owner.post(reverse(POLICY), _policy_data(safety_tenant.id, blocklist=blocklist,
                                                     rule_toxicity_threshold="0.7", rule_blocklist_action="flag",
                                                     review_sla_minutes="60"))
    assert saved.status_code == 302, _html(saved)[:2000]
    policy = policy_current(safety_tenant.id)
    assert policy.version == 1 and policy.review_sla_minutes == 60
    assert policy.rules["toxicity"] == {"threshold": 0.7, "action": "flag"}
    assert policy.rules["blocklist"]["action"] == "flag"
    assert policy.blocklist == (("term", "blocklist", "zorblax", None),
                                ("regex", "blocklist", r"\bORDER-\d{6}\b", None),
                                ("phrase", "violence", "how to hurt a person", 0.8))
    shown = _html(owner.get(reverse(POLICY)))
    assert 'data-testid="policy-version">version 1<' in shown and "Saved policy version 1" in shown
    assert r"\bORDER-\d{6}\b" in shown

    bad_regex = owner.post(reverse(POLICY),
                           _policy_data(safety_tenant.id, blocklist="term ok\nregex blocklist (unclosed"))
    assert bad_regex.status_code == 400
    error = bad_regex.context["policy_form"].errors["blocklist"][0]
    assert error.startswith("line 2: blocklist[1].value: the pattern does not compile")
    assert "line 2: blocklist[1].value" in _html(bad_regex)

    nested = owner.post(reverse(POLICY),
                        _policy_data(safety_tenant.id, blocklist='[{"kind": "regex", "value": "(a+)+"}]'))
    assert nested.status_code == 400 and "blocklist[0].value" in nested.context["policy_form"].errors["blocklist"][0]
    bad_line = owner.post(reverse(POLICY), _policy_data(safety_tenant.id, blocklist="word zorblax"))
    assert bad_line.status_code == 400 and bad_line.context["policy_form"].errors["blocklist"][0].startswith("line 1:")
    bad_action = owner.post(reverse(POLICY), _policy_data(safety_tenant.id, rule_toxicity_action="redact"))
    assert bad_action.status_code == 400
    assert "redact applies to pii and blocklist" in bad_action.context["policy_form"].errors["rule_toxicity_action"][0]
    out_of_range = owner.post(reverse(POLICY), _policy_data(safety_tenant.id, rule_violence_threshold="1.5"))
    assert out_of_range.status_code == 400 and out_of_range.context["policy_form"].errors["rule_violence_threshold"]
    no_classifier = owner.post(reverse(POLICY), _policy_data(safety_tenant.id, classifier="no-such-model"))
    assert no_classifier.status_code == 400
    assert "no-such-model" in no_classifier.context["policy_form"].errors["classifier"][0]
    assert policy_current(safety_tenant.id).version == 1  # nothing refused was saved


def test_exporting_the_reviews_goes_to_the_new_dataset_version(safety_tenant):
    ids = _flag(safety_tenant.id, safety_tenant.user, [f"zorblax example {n}" for n in range(4)])
    owner = _as_member_of(safety_tenant.user, safety_tenant.id)

    too_few = owner.post(reverse(POLICY), {"action": "export", "name": ""})
    assert too_few.status_code == 400 and "at least 4 decided items" in _html(too_few)

    for index, item_id in enumerate(ids):
        moderation.item_decide(tenant_id=safety_tenant.id, item_id=item_id, by=safety_tenant.reviewer_users[0],
                               verdict="approve" if index % 2 else "reject", reason="" if index % 2 else "unsafe")
    exported = owner.post(reverse(POLICY), {"action": "export", "name": "zorblax-reviews"})
    assert exported.status_code == 302
    assert re.fullmatch(r"/dataset-versions/[0-9a-f-]{36}/", exported["Location"])


def test_reviewers_read_the_policy_page_but_only_owners_and_admins_save_or_export(safety_tenant):
    reviewer = _as_member_of(safety_tenant.reviewer_users[0], safety_tenant.id)
    page = reviewer.get(reverse(POLICY))
    assert page.status_code == 200 and 'id="policy-form"' not in _html(page)

    refused = reviewer.post(reverse(POLICY), _policy_data(safety_tenant.id, action="save", review_sla_minutes="5"))
    assert refused.status_code == 403 and 'data-testid="missing-permission">safety:policy<' in _html(refused)
    refused = reviewer.post(reverse(POLICY), {"action": "export", "name": "reviews"})
    assert refused.status_code == 403 and 'data-testid="missing-permission">safety:policy<' in _html(refused)
    assert policy_current(safety_tenant.id).version == 0

    owner = _as_member_of(safety_tenant.user, safety_tenant.id)
    assert 'id="policy-form"' in _html(owner.get(reverse(POLICY)))
