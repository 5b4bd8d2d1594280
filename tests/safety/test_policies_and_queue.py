"""Policies (versions, checks of bad input), what each action does to a text (block, flag with a
queue item, redact), the policy version every decision records, and the moderation queue: claims
that never collide, tenant isolation, approve/reject/escalate with reasons, bulk decisions,
platform staff's escalations, release and purge of held content, and the webhook events."""
from __future__ import annotations

import threading

import pytest

from lode.safety.models import ModerationItem, ReviewDecision, SafetyDecision
from tests.conftest import rows, system

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])

FLAG_ZORB = {"blocklist": [{"kind": "term", "category": "blocklist", "value": "zorblax"}],
             "rules": {"blocklist": {"threshold": 0.5, "action": "flag"}}}


def _policy(client, **body):
    response = client.put("/api/v1/safety/policy", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_policy_versions_and_bad_policies_get_4xx_naming_the_field(safety_tenant, make_tenant, api_client_for):
    client = safety_tenant.owner_client
    default = client.get("/api/v1/safety/policy").json()
    assert default["version"] == 0 and default["rules"]["pii"]["action"] == "redact"
    first = _policy(client, **FLAG_ZORB)
    assert first["version"] == 1 and first["rules"]["blocklist"]["action"] == "flag"
    assert first["rules"]["toxicity"] == default["rules"]["toxicity"]  # categories not named keep the defaults
    second = _policy(client, rules={"toxicity": {"threshold": 0.6}})
    assert second["version"] == 2 and second["rules"]["toxicity"] == {"threshold": 0.6, "action": "flag"}
    assert [p["version"] for p in client.get("/api/v1/safety/policies").json()["results"]] == [2, 1]

    cases = [
        ({"rules": {"nonsense": {"threshold": 0.5}}}, "rules.nonsense"),
        ({"rules": {"toxicity": {"threshold": 2}}}, "rules.toxicity.threshold"),
        ({"rules": {"toxicity": {"action": "redact"}}}, "rules.toxicity.action"),
        ({"rules": {"toxicity": {"action": "explode"}}}, "rules.toxicity.action"),
        ({"rules": {"toxicity": {"threshold": 0.5, "colour": "red"}}}, "rules.toxicity"),
        ({"blocklist": [{"kind": "regex", "value": "(a+)+$"}]}, "blocklist[0].value"),
        ({"blocklist": [{"kind": "regex", "value": "[unclosed"}]}, "blocklist[0].value"),
        ({"blocklist": [{"kind": "phrase", "value": "how to hurt", "threshold": 0}]}, "blocklist[0].threshold"),
        ({"blocklist": [{"kind": "word", "value": "x"}]}, "blocklist[0].kind"),
        ({"blocklist": [{"kind": "term", "value": "  "}]}, "blocklist[0].value"),
        ({"blocklist": "zorblax"}, "blocklist"),
        ({"classifier": "no-such-model"}, "classifier"),
        ({"flagged_output": "sometimes"}, "flagged_output"),
        ({"training_flagged_rate_limit": 3}, "training_flagged_rate_limit"),
    ]
    for body, field in cases:
        response = client.put("/api/v1/safety/policy", body, format="json")
        assert response.status_code == 400, (body, response.content)
        error = response.json()["error"]
        assert error["details"].get("field", next(iter(error["details"].get("fields", {})), None)) == field, (body, error)
    assert client.get("/api/v1/safety/policy").json()["version"] == 2  # nothing written

    # Another tenant sees its own default.
    other = api_client_for(make_tenant().user)
    assert other.get("/api/v1/safety/policy").json()["version"] == 0


def _refused(response, permission: str) -> None:
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert error["details"]["required"] == permission and permission in error["message"], error


def test_only_owners_and_admins_change_the_policy_and_exports_need_datasets_write(safety_tenant):
    from tests.safety.conftest import member_client

    _policy(safety_tenant.owner_client, **FLAG_ZORB)
    reviewer = safety_tenant.reviewer_clients[0]
    _admin, admin = member_client(safety_tenant, "admin")
    _engineer, engineer = member_client(safety_tenant, "engineer")

    # Reviewers decide items under the policy; they do not set it (safety:write is not enough).
    _refused(reviewer.put("/api/v1/safety/policy", {"rules": {"blocklist": {"threshold": 0.5, "action": "allow"}}},
                          format="json"), "safety:policy")
    # An engineer may read the policy but not change it.
    assert engineer.get("/api/v1/safety/policy").json()["version"] == 1
    _refused(engineer.put("/api/v1/safety/policy", FLAG_ZORB, format="json"), "safety:write")
    assert safety_tenant.owner_client.get("/api/v1/safety/policy").json()["version"] == 1  # nothing written
    assert _policy(admin, **FLAG_ZORB)["version"] == 2

    # Exporting the reviews creates a dataset, which a reviewer may not do.
    _refused(reviewer.post("/api/v1/safety/review-exports", {"name": "by a reviewer"}, format="json"), "datasets:write")
    # An engineer writes datasets but not safety.
    _refused(engineer.post("/api/v1/safety/review-exports", {"name": "by an engineer"}, format="json"), "safety:write")
    # An admin passes the permission check (and is told there is nothing to export yet).
    too_few = admin.post("/api/v1/safety/review-exports", {"name": "by an admin"}, format="json")
    assert too_few.status_code == 400 and too_few.json()["error"]["details"]["field"] == "reviews"


def test_unknown_policy_fields_are_refused_naming_them_rather_than_reset_to_defaults(safety_tenant):
    client = safety_tenant.owner_client
    _policy(client, **FLAG_ZORB, semantic=False, review_sla_minutes=60)

    # "semantc" would otherwise be dropped and `semantic` reset to its default (on).
    response = client.put("/api/v1/safety/policy", {**FLAG_ZORB, "semantc": False, "review_sla": 60}, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert set(error["details"]["fields"]) == {"review_sla", "semantc"}
    assert error["details"]["fields"]["semantc"] == ["Unknown field (did you mean semantic?)."]
    assert "review_sla" in error["message"]
    current = client.get("/api/v1/safety/policy").json()
    assert current["version"] == 1 and current["semantic"] is False and current["review_sla_minutes"] == 60


def test_block_flag_and_redact_and_every_decision_records_its_policy_version(safety_tenant):
    from lode.safety.checks import texts_check

    client = safety_tenant.owner_client
    _policy(client, blocklist=[{"kind": "term", "category": "blocklist", "value": "zorblax"},
                               {"kind": "term", "category": "illegal_goods", "value": "plutonium"}],
            rules={"blocklist": {"threshold": 0.5, "action": "flag"}})
    texts = ["Please ship the zorblax today.", "I sell plutonium cheap.", "Write to ada@example.com about it.",
             "A perfectly ordinary sentence."]
    results = texts_check(tenant_id=safety_tenant.id, texts=texts, source="output", source_ref="req-1")
    assert [r.action for r in results] == ["flag", "block", "redact", "allow"]
    assert all(r.policy_version == 1 for r in results)
    assert results[2].redacted == "Write to [EMAIL] about it."
    assert not results[1].allowed and results[0].held and results[0].item_id

    decisions = rows(SafetyDecision, safety_tenant.id)
    assert sorted(d.action for d in decisions) == ["allow", "block", "flag", "redact"]
    assert {d.policy_version for d in decisions} == {1}
    [item] = rows(ModerationItem, safety_tenant.id)
    assert item.source == "output" and item.held and item.content == texts[0] and item.categories == ["blocklist"]
    assert item.policy_version == 1 and str(item.id) == results[0].item_id

    checked = client.post("/api/v1/safety/check", {"input": texts}, format="json").json()
    assert checked["policy_version"] == 1
    assert [r["action"] for r in checked["results"]] == ["flag", "block", "redact", "allow"]
    assert checked["results"][2]["findings"][0]["category"] == "pii"
    assert len(rows(ModerationItem, safety_tenant.id)) == 1  # a check queues nothing
    for bad, field in (({"input": []}, "input"), ({"input": [1]}, "input"), ({"input": "x" * 100_001}, "input"),
                       ({"input": "x", "source": "elsewhere"}, "source")):
        response = client.post("/api/v1/safety/check", bad, format="json")
        assert response.status_code == 400, response.content


def test_two_reviewers_claiming_at_once_get_different_items(safety_tenant):
    from tests.safety.conftest import flag_texts

    _policy(safety_tenant.owner_client, **FLAG_ZORB)
    flag_texts(safety_tenant.id, [f"zorblax number {n}" for n in range(10)])
    claimed: dict[int, list[str]] = {}
    barrier = threading.Barrier(2)

    def claim(index):
        barrier.wait()
        response = safety_tenant.reviewer_clients[index].post("/api/v1/safety/items/claim", {"count": 4}, format="json")
        assert response.status_code == 200, response.content
        claimed[index] = [item["id"] for item in response.json()["items"]]

    threads = [threading.Thread(target=claim, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed[0]) == len(claimed[1]) == 4
    assert not set(claimed[0]) & set(claimed[1])
    # A third claim takes what is left; claimed items are not handed out again.
    rest = safety_tenant.reviewer_clients[0].post("/api/v1/safety/items/claim", {"count": 50}, format="json").json()["items"]
    assert len(rest) == 2 and not {item["id"] for item in rest} & (set(claimed[0]) | set(claimed[1]))
    # Deciding an item another reviewer holds is refused.
    taken = claimed[1][0]
    refused = safety_tenant.reviewer_clients[0].post(f"/api/v1/safety/items/{taken}/decision", {"verdict": "approve"},
                                                     format="json")
    assert refused.status_code == 409


def test_an_api_key_whose_creator_is_gone_cannot_decide_or_override_a_claim(safety_tenant):
    from tenants.db_context import tenant_atomic
    from tenants.models import ApiKey
    from tests.safety.conftest import flag_texts

    _policy(safety_tenant.owner_client, **FLAG_ZORB)
    first, second = flag_texts(safety_tenant.id, ["zorblax one", "zorblax two"])
    holder = safety_tenant.reviewer_clients[1]
    taken = holder.post("/api/v1/safety/items/claim", {"count": 1}, format="json").json()["items"][0]["id"]
    free = second.item_id if taken == first.item_id else first.item_id
    orphan = safety_tenant.reviewer_clients[0]
    with tenant_atomic(safety_tenant.id):  # its creator deleted: ApiKey.created_by is SET_NULL
        ApiKey.objects.filter(created_by=safety_tenant.reviewer_users[0]).update(created_by=None)

    for item_id in (taken, free):
        response = orphan.post(f"/api/v1/safety/items/{item_id}/decision", {"verdict": "approve"}, format="json")
        assert response.status_code == 403, response.content
        assert "reviewer" in response.json()["error"]["message"]
    bulk = orphan.post("/api/v1/safety/items/decisions", {"items": [taken], "verdict": "approve"}, format="json")
    assert bulk.status_code == 403, bulk.content
    assert orphan.post("/api/v1/safety/items/claim", {"count": 1}, format="json").status_code == 403
    assert {item.state for item in rows(ModerationItem, safety_tenant.id)} == {"claimed", "pending"}
    assert rows(ReviewDecision, safety_tenant.id) == []


def test_a_tenant_reviewer_cannot_see_or_decide_another_tenants_items(safety_tenant, make_tenant, api_client_for):
    from tests.safety.conftest import flag_texts

    _policy(safety_tenant.owner_client, **FLAG_ZORB)
    [result] = flag_texts(safety_tenant.id, ["a zorblax for you"])
    stranger = api_client_for(make_tenant().user)
    assert stranger.get("/api/v1/safety/items").json()["results"] == []
    assert stranger.get(f"/api/v1/safety/items/{result.item_id}").status_code == 404
    assert stranger.post(f"/api/v1/safety/items/{result.item_id}/decision", {"verdict": "approve"},
                         format="json").status_code == 404
    assert stranger.post("/api/v1/safety/items/claim", {"count": 5}, format="json").json()["items"] == []
    assert system(ModerationItem).get(id=result.item_id).state == "pending"


def test_approve_releases_reject_purges_and_escalations_go_to_staff(safety_tenant, make_tenant, api_client_for):
    from lode.core.webhooks.models import WebhookDelivery
    from tests.safety.conftest import flag_texts

    client = safety_tenant.owner_client
    hook = client.post("/api/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "events": ["*"]}, format="json")
    assert hook.status_code == 201, hook.content
    _policy(client, **FLAG_ZORB)
    released, purged, escalated = flag_texts(safety_tenant.id, ["zorblax one", "zorblax two", "zorblax three"])
    reviewer = safety_tenant.reviewer_clients[0]

    approve = reviewer.post(f"/api/v1/safety/items/{released.item_id}/decision", {"verdict": "approve"}, format="json")
    assert approve.status_code == 200 and approve.json()["state"] == "approved" and approve.json()["released_at"]
    assert approve.json()["content"]["text"] == "zorblax one"
    no_reason = reviewer.post(f"/api/v1/safety/items/{purged.item_id}/decision", {"verdict": "reject"}, format="json")
    assert no_reason.status_code == 400 and no_reason.json()["error"]["details"]["field"] == "reason"
    reject = reviewer.post(f"/api/v1/safety/items/{purged.item_id}/decision", {"verdict": "reject", "reason": "off-brand"},
                           format="json")
    assert reject.status_code == 200 and reject.json()["content"]["text"] == "" and reject.json()["purged_at"]
    again = reviewer.post(f"/api/v1/safety/items/{purged.item_id}/decision", {"verdict": "approve"}, format="json")
    assert again.status_code == 409
    # The purged text stays only as the reviewer's labeled example.
    assert [r.text for r in rows(ReviewDecision, safety_tenant.id, item_id=purged.item_id)] == ["zorblax two"]

    escalate = reviewer.post(f"/api/v1/safety/items/{escalated.item_id}/decision",
                             {"verdict": "escalate", "reason": "legal question"}, format="json")
    assert escalate.status_code == 200 and escalate.json()["state"] == "escalated"
    tenant_again = reviewer.post(f"/api/v1/safety/items/{escalated.item_id}/decision", {"verdict": "approve"}, format="json")
    assert tenant_again.status_code == 409  # staff decide escalations
    # Platform staff see every tenant's escalations; a tenant's own members do not reach them.
    assert reviewer.get("/api/v1/safety/escalations").status_code == 403
    staff = make_tenant()
    from tenants.models import User

    User.objects.filter(id=staff.user.id).update(is_staff=True)
    from rest_framework.test import APIClient

    # Staff act as themselves, signed in (a tenant's API key never carries platform powers).
    assert api_client_for(staff.user).get("/api/v1/safety/escalations").status_code == 403
    staff_client = APIClient()
    staff_client.force_login(User.objects.get(id=staff.user.id))
    listed = staff_client.get("/api/v1/safety/escalations").json()["items"]
    assert escalated.item_id in [item["id"] for item in listed]
    assert [i["id"] for i in staff_client.post("/api/v1/safety/escalations/claim", {"count": 5}, format="json").json()["items"]
            if i["id"] == escalated.item_id]
    final = staff_client.post(f"/api/v1/safety/escalations/{escalated.item_id}/decision",
                              {"verdict": "reject", "reason": "not allowed"}, format="json")
    assert final.status_code == 200 and final.json()["state"] == "rejected"

    events = sorted(d.event_type for d in system(WebhookDelivery).filter(endpoint__tenant_id=safety_tenant.id))
    assert events.count("safety.item_flagged") == 3
    assert {"safety.item_released", "safety.item_purged", "safety.item_escalated"} <= set(events)
    release = system(WebhookDelivery).get(endpoint__tenant_id=safety_tenant.id, event_type="safety.item_released")
    assert release.payload["data"]["content"] == "zorblax one"


def test_bulk_decisions_decide_what_they_can_and_say_why_not_for_the_rest(safety_tenant):
    from tests.safety.conftest import flag_texts

    _policy(safety_tenant.owner_client, **FLAG_ZORB)
    results = flag_texts(safety_tenant.id, [f"zorblax {n}" for n in range(5)])
    ids = [r.item_id for r in results]
    other_reviewer = safety_tenant.reviewer_clients[1]
    held = other_reviewer.post("/api/v1/safety/items/claim", {"count": 1}, format="json").json()["items"][0]["id"]
    response = safety_tenant.reviewer_clients[0].post("/api/v1/safety/items/decisions", {
        "items": ids + ["00000000-0000-0000-0000-000000000000"], "verdict": "reject", "reason": "spam"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert sorted(body["decided"]) == sorted(i for i in ids if i != held)
    assert {item["id"] for item in body["skipped"]} == {held, "00000000-0000-0000-0000-000000000000"}
    bad = safety_tenant.reviewer_clients[0].post("/api/v1/safety/items/decisions", {"items": [], "verdict": "approve"},
                                                 format="json")
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "items"
