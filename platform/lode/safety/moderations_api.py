"""`POST /v1/moderations` in OpenAI's shape, on the tenant's policy: each input's `flagged`
(anything the policy does not allow as it is), OpenAI's categories and scores mapped from Lode's,
and Lode's own categories, action and policy version beside them."""
from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from lode.core.errors import ValidationFailed
from lode.generation.openai_api import OpenAIApiView

from .api import texts_input_check
from .checks import texts_check

MODEL = "lode-moderation-1"
# OpenAI's categories and the Lode categories whose scores they take (the highest).
OPENAI_CATEGORIES = {
    "harassment": ("toxicity", "abuse"),
    "harassment/threatening": (),
    "hate": ("extremism",),
    "hate/threatening": (),
    "illicit": ("illegal_goods",),
    "illicit/violent": (),
    "self-harm": ("self_harm",),
    "self-harm/intent": (),
    "self-harm/instructions": (),
    "sexual": ("sexual",),
    "sexual/minors": (),
    "violence": ("violence",),
    "violence/graphic": (),
}


class ModerationsApi(OpenAIApiView):
    required_area = "safety"

    @extend_schema(exclude=True)
    def post(self, request):
        body = request.data if isinstance(request.data, dict) else {}
        model = body.get("model") or MODEL
        if not isinstance(model, str):
            raise ValidationFailed("model: a model name", details={"field": "model"})
        value = body.get("input")
        if isinstance(value, list) and value and all(isinstance(part, dict) for part in value):
            # The multi-modal form: text parts are checked; image parts are not (no offline image model).
            if any(part.get("type") != "text" for part in value):
                raise ValidationFailed("input: only text parts can be moderated here", details={"field": "input"})
            value = [part.get("text") for part in value]
        texts = texts_input_check(value)
        results = texts_check(tenant_id=self.tenant.id, texts=texts, source="check", queue=False, source_ref="v1/moderations")
        out = []
        for result in results:
            scores = {name: max((result.scores.get(lode, 0.0) for lode in lode_names), default=0.0)
                      for name, lode_names in OPENAI_CATEGORIES.items()}
            flagged_lode = set(result.categories)
            categories = {name: any(lode in flagged_lode for lode in lode_names) for name, lode_names in OPENAI_CATEGORIES.items()}
            out.append({"flagged": result.action != "allow", "categories": categories, "category_scores": scores,
                        "category_applied_input_types": {name: ["text"] for name in OPENAI_CATEGORIES},
                        "lode": {"action": result.action, "categories": result.categories, "scores": result.scores,
                                 "policy_version": result.policy_version}})
        return Response({"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": out})
