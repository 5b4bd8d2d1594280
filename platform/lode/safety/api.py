"""Safety API: the tenant's policy (versions), checking texts, the moderation queue (list, read,
claim, decide, bulk decide), platform staff's escalations, and exporting reviews as labeled data.
`/v1/moderations` (OpenAI's shape) is in moderations_api.py."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.permissions import BasePermission
from rest_framework.views import APIView

from lode.core.errors import NotFound, PermissionDenied, ValidationFailed
from tenants.context import request_actor
from tenants.scoping import TenantScopedMixin

from . import moderation, services
from .checks import texts_check
from .models import ModerationItem, SafetyPolicy
from .policies import policy_current
from .serializers import (
    BulkDecisionInput,
    CheckInput,
    ClaimInput,
    DecisionInput,
    ItemDetailOutput,
    ItemOutput,
    PolicyInput,
    PolicyOutput,
    ReviewExportInput,
)

MAX_CHECK_TEXTS = 256
MAX_CHECK_CHARS = 100_000


class SafetyApiMixin(TenantScopedMixin):
    required_area = "safety"


def _policy_data(policy) -> dict:
    row = {
        "version": policy.version, "rules": policy.rules, "flagged_output": policy.flagged_output,
        "stream_release": policy.stream_release,
        "image_review": policy.image_review, "image_sample_rate": policy.image_sample_rate,
        "training_flagged_rate_limit": policy.training_flagged_rate_limit, "semantic": policy.semantic,
        "review_sla_minutes": policy.review_sla_minutes,
    }
    if isinstance(policy, SafetyPolicy):
        return {**row, "blocklist": policy.blocklist, "classifier": policy.classifier.name if policy.classifier_id else None,
                "note": policy.note, "created_at": policy.created_at}
    return {**row, "blocklist": [{"kind": kind, "category": category, "value": value,
                                  **({"threshold": threshold} if threshold is not None else {})}
                                 for kind, category, value, threshold in policy.blocklist],
            "classifier": (policy.classifier or {}).get("name"), "note": "the platform's default" if not policy.version else "",
            "created_at": None}


class PolicyApi(SafetyApiMixin, APIView):
    """GET: the policy in force (version 0 is the platform's default). PUT: a new version, by an
    owner or admin only (safety:policy): reviewers decide items under the policy, not set it."""

    write_also_requires = ("safety:policy",)

    @extend_schema(responses=PolicyOutput)
    def get(self, request):
        return Response(PolicyOutput(_policy_data(policy_current(self.tenant.id))).data)

    @extend_schema(request=PolicyInput, responses={201: PolicyOutput})
    def put(self, request):
        data = PolicyInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        policy = services.policy_create(tenant_id=self.tenant.id, by=request_actor(request), **values)
        return Response(PolicyOutput(_policy_data(policy)).data, status=status.HTTP_201_CREATED)


class PolicyVersionListApi(SafetyApiMixin, generics.ListAPIView):
    serializer_class = PolicyOutput

    def safely_get_queryset(self):
        return SafetyPolicy.objects.select_related("classifier")

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([PolicyOutput(_policy_data(policy)).data for policy in page])


def texts_input_check(value) -> list[str]:
    """The `input` of a check: a text or a list of texts, within the limits."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or len(texts) > MAX_CHECK_TEXTS or not all(isinstance(t, str) for t in texts):
        raise ValidationFailed(f"input: a text or a list of 1 to {MAX_CHECK_TEXTS} texts", details={"field": "input"})
    if sum(len(text) for text in texts) > MAX_CHECK_CHARS:
        raise ValidationFailed(f"input: at most {MAX_CHECK_CHARS} characters in all", details={"field": "input"})
    return texts


def result_data(result) -> dict:
    return {"action": result.action, "flagged": result.action != "allow", "categories": result.categories,
            "scores": result.scores, "redacted": result.redacted,
            "findings": [{"category": f.category, "score": round(float(f.score), 4), "detector": f.detector,
                          "evidence": f.evidence, "start": f.start, "end": f.end} for f in result.findings]}


class CheckApi(SafetyApiMixin, APIView):
    """Checks texts against the policy in force, with Lode's categories, and records the decisions
    (source "check"); nothing is queued for review."""

    required_area = "safety"

    @extend_schema(request=CheckInput, responses=dict)
    def post(self, request):
        data = CheckInput(data=request.data)
        data.is_valid(raise_exception=True)
        texts = texts_input_check(data.validated_data["input"])
        results = texts_check(tenant_id=self.tenant.id, texts=texts, source=data.validated_data["source"],
                              full=data.validated_data["full"], queue=False, source_ref="api")
        return Response({"policy_version": results[0].policy_version, "results": [result_data(r) for r in results]})


class ItemListApi(SafetyApiMixin, generics.ListAPIView):
    """The tenant's queue: open items first by SLA, or filtered by state and source."""

    serializer_class = ItemOutput

    def safely_get_queryset(self):
        items = ModerationItem.objects.select_related("claimed_by", "decided_by")
        state = self.request.query_params.get("state")
        if state:
            if state not in ModerationItem.State.values and state != "open":
                raise ValidationFailed(f"state: open or one of {', '.join(ModerationItem.State.values)}",
                                       details={"field": "state"})
            items = (items.filter(state__in=(ModerationItem.State.PENDING, ModerationItem.State.CLAIMED))
                     if state == "open" else items.filter(state=state))
        source = self.request.query_params.get("source")
        if source:
            items = items.filter(source=source)
        return items

    @extend_schema(parameters=[OpenApiParameter("state", str), OpenApiParameter("source", str)])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ItemDetailApi(SafetyApiMixin, generics.RetrieveAPIView):
    serializer_class = ItemDetailOutput
    lookup_url_kwarg = "item_id"

    def safely_get_queryset(self):
        return ModerationItem.objects.select_related("claimed_by", "decided_by").prefetch_related("reviews__reviewer")


class ItemClaimApi(SafetyApiMixin, APIView):
    @extend_schema(request=ClaimInput, responses=ItemDetailOutput(many=True))
    def post(self, request):
        data = ClaimInput(data=request.data)
        data.is_valid(raise_exception=True)
        items = moderation.items_claim(tenant_id=self.tenant.id, by=request_actor(request), count=data.validated_data["count"])
        return Response({"items": ItemDetailOutput(items, many=True).data})


class ItemDecisionApi(SafetyApiMixin, APIView):
    @extend_schema(request=DecisionInput, responses=ItemDetailOutput)
    def post(self, request, item_id):
        if not ModerationItem.objects.filter(tenant_id=self.tenant.id, id=item_id).exists():
            raise NotFound("No such moderation item.")  # before the body: another tenant's item is a 404
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        item = moderation.item_decide(tenant_id=self.tenant.id, item_id=item_id, by=request_actor(request),
                                      verdict=data.validated_data["verdict"], reason=data.validated_data["reason"])
        return Response(ItemDetailOutput(item).data)


class ItemBulkDecisionApi(SafetyApiMixin, APIView):
    @extend_schema(request=BulkDecisionInput, responses=dict)
    def post(self, request):
        data = BulkDecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        return Response(moderation.items_bulk_decide(tenant_id=self.tenant.id, item_ids=values["items"],
                                                     by=request_actor(request), verdict=values["verdict"],
                                                     reason=values["reason"]))


class ReviewExportApi(SafetyApiMixin, APIView):
    """The reviewers' decisions as a classification dataset (safe/unsafe) for the tenant's own
    safety classifier; 202 with the version being ingested. It creates a dataset: datasets:write too."""

    write_also_requires = ("datasets:write",)

    @extend_schema(request=ReviewExportInput, responses={202: dict})
    def post(self, request):
        data = ReviewExportInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.review_export(tenant_id=self.tenant.id, by=request_actor(request), name=data.validated_data["name"])
        return Response({"dataset_id": str(version.dataset_id), "version_id": str(version.id), "job_id": str(version.job_id)},
                        status=status.HTTP_202_ACCEPTED)


# --- Platform staff -------------------------------------------------------------------------------


class PlatformStaffOnly(BasePermission):
    """Platform staff, signed in (an API key's ApiKeyUser is never staff). Not a tenant role:
    staff decide other tenants' escalations, so these routes declare no tenant area."""

    def has_permission(self, request, view) -> bool:
        if not getattr(request.user, "is_authenticated", False):
            return False
        if not getattr(request.user, "is_staff", False):
            raise PermissionDenied("Platform staff only.")
        return True


class StaffMixin:
    permission_classes = [PlatformStaffOnly]


class EscalationListApi(StaffMixin, APIView):
    @extend_schema(responses=ItemDetailOutput(many=True))
    def get(self, request):
        return Response({"items": ItemDetailOutput(moderation.escalations_list(user=request.user), many=True).data})


class EscalationClaimApi(StaffMixin, APIView):
    @extend_schema(request=ClaimInput, responses=ItemDetailOutput(many=True))
    def post(self, request):
        data = ClaimInput(data=request.data)
        data.is_valid(raise_exception=True)
        items = moderation.escalation_claim(user=request.user, count=data.validated_data["count"])
        return Response({"items": ItemDetailOutput(items, many=True).data})


class EscalationDecisionApi(StaffMixin, APIView):
    @extend_schema(request=DecisionInput, responses=ItemDetailOutput)
    def post(self, request, item_id):
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        item = moderation.escalation_decide(user=request.user, item_id=item_id, verdict=data.validated_data["verdict"],
                                            reason=data.validated_data["reason"])
        return Response(ItemDetailOutput(item).data)
