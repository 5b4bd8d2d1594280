"""The safety capability's check in the generation path (registered in
lode.generation.completions.SAFETY_HOOKS when the app is ready): prompts before generation,
outputs after, images by the policy's review rule."""
from __future__ import annotations

import random
from typing import Any
from uuid import UUID

from lode.generation.completions import Verdict


def generation_review(*, tenant_id: UUID | str, kind: str, text: str, ref: str = "",
                      context: dict[str, Any] | None = None) -> Verdict:
    """A prompt that the policy blocks is refused; one it flags goes on (and waits in the queue);
    one with personal data to redact is redacted before the model sees it. An output that the
    policy blocks is never returned; a flagged one is held until a reviewer releases it, or
    returned with its flag, as the policy says; redactions apply."""
    from .checks import texts_check
    from .policies import policy_current

    policy = policy_current(tenant_id)
    if kind == "output_partial":  # a streamed answer's text so far: checked, not recorded (the whole is)
        # Released text cannot be called back, so the check before release is the whole one: the
        # semantic blocklist too when the policy has example phrases (without any it adds nothing).
        full = policy.semantic and any(entry[0] == "phrase" for entry in policy.blocklist)
        [result] = texts_check(tenant_id=tenant_id, texts=[text], source="output", full=full, record="none",
                               policy=policy)
    else:
        [result] = texts_check(tenant_id=tenant_id, texts=[text], source="prompt" if kind == "prompt" else "output",
                               source_ref=ref, context=context, policy=policy)
    return Verdict(allowed=result.allowed, flagged=result.action == "flag", action=result.action,
                   categories={name: result.scores.get(name, 0.0) for name in result.categories},
                   policy_version=result.policy_version, text=result.redacted, held=result.held,
                   item_id=result.item_id, stream=policy.stream_release)


def images_review(*, tenant_id: UUID | str, prompt: str, prompt_flagged: bool, images: list[bytes], ref: str,
                  context: dict[str, Any] | None = None) -> list[dict[str, Any] | None]:
    """Generated images routed to review by the policy's rule (no image classifier ships offline):
    always, a sample, or when the prompt was flagged. Each routed image is stored under the
    tenant's safety/ prefix and queued (held when the policy holds flagged outputs); returns, per
    image, None (not routed) or {"item_id", "held"}."""
    from datetime import timedelta

    from django.utils import timezone

    from lode.core import artifacts
    from tenants.db_context import tenant_atomic

    from .models import ModerationItem, SafetyDecision
    from .notify import items_flagged
    from .policies import policy_current

    policy = policy_current(tenant_id)
    rule = policy.image_review
    routed = [rule == "always" or (rule == "sampled" and random.random() < policy.image_sample_rate)
              or (rule == "when_prompt_flagged" and prompt_flagged) for _ in images]
    if not any(routed):
        return [None] * len(images)
    out: list[dict[str, Any] | None] = []
    items = []
    held = policy.flagged_output == "hold"
    now = timezone.now()
    for index, (image, route) in enumerate(zip(images, routed)):
        if not route:
            out.append(None)
            continue
        item = ModerationItem(tenant_id=tenant_id, source="image", source_ref=f"{ref}#{index}"[:200], content=prompt,
                              context={**(context or {}), "rule": rule}, scores={}, categories=["image_review"],
                              policy_version=policy.version, held=held, due_at=now + timedelta(minutes=policy.review_sla_minutes))
        item.content_key = f"safety/{item.id}.png"
        artifacts.object_put(tenant_id=tenant_id, key=item.content_key, data=image, content_type="image/png")
        items.append(item)
        out.append({"item_id": str(item.id), "held": held})
    with tenant_atomic(tenant_id):
        ModerationItem.objects.bulk_create(items)
        SafetyDecision.objects.bulk_create([SafetyDecision(
            tenant_id=tenant_id, policy_version=policy.version, source="image", source_ref=item.source_ref,
            action="flag", categories=["image_review"], scores={}, item=item) for item in items])
        items_flagged(tenant_id, items)
    return out
