from django.urls import path

from . import api

app_name = "safety"

urlpatterns = [
    path("safety/policy", api.PolicyApi.as_view(), name="policy"),
    path("safety/policies", api.PolicyVersionListApi.as_view(), name="policy-versions"),
    path("safety/check", api.CheckApi.as_view(), name="check"),
    path("safety/items", api.ItemListApi.as_view(), name="item-list"),
    path("safety/items/claim", api.ItemClaimApi.as_view(), name="item-claim"),
    path("safety/items/decisions", api.ItemBulkDecisionApi.as_view(), name="item-bulk-decision"),
    path("safety/items/<uuid:item_id>", api.ItemDetailApi.as_view(), name="item-detail"),
    path("safety/items/<uuid:item_id>/decision", api.ItemDecisionApi.as_view(), name="item-decision"),
    path("safety/review-exports", api.ReviewExportApi.as_view(), name="review-export"),
    path("safety/escalations", api.EscalationListApi.as_view(), name="escalation-list"),
    path("safety/escalations/claim", api.EscalationClaimApi.as_view(), name="escalation-claim"),
    path("safety/escalations/<uuid:item_id>/decision", api.EscalationDecisionApi.as_view(), name="escalation-decision"),
]
