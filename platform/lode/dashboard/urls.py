"""Dashboard page routes (server-rendered HTML; the API lives under /api/v1/)."""
from django.urls import path

from . import billing_views, dataset_views, playground_views, safety_views, training_views, views

app_name = "dashboard"

urlpatterns = [
    path("login/", views.DashboardLoginView.as_view(), name="login"),
    path("logout/", views.DashboardLogoutView.as_view(), name="logout"),
    path("signup/", views.SignupView.as_view(), name="signup"),
    path("", views.HomeView.as_view(), name="home"),
    path("organizations/switch/", views.OrganizationSwitchView.as_view(), name="organization-switch"),
    path("jobs/", views.JobListView.as_view(), name="jobs"),
    path("jobs/<uuid:job_id>/", views.JobDetailView.as_view(), name="job"),
    # Datasets
    path("datasets/", dataset_views.DatasetListView.as_view(), name="datasets"),
    path("datasets/<uuid:dataset_id>/", dataset_views.DatasetDetailView.as_view(), name="dataset"),
    path("dataset-versions/<uuid:version_id>/", dataset_views.VersionDetailView.as_view(), name="dataset-version"),
    # Training: fine-tunes and the model registry
    path("fine-tunes/", training_views.FinetuneListView.as_view(), name="finetunes"),
    path("fine-tunes/<uuid:job_id>/", training_views.FinetuneDetailView.as_view(), name="finetune"),
    path("fine-tunes/<uuid:job_id>/cancel/", training_views.FinetuneCancelView.as_view(), name="finetune-cancel"),
    path("models/", training_views.ModelRegistryView.as_view(), name="models"),
    path("models/<uuid:model_id>/", training_views.ModelDetailView.as_view(), name="model"),
    # Generation
    path("playground/", playground_views.PlaygroundView.as_view(), name="playground"),
    path("playground/stream/", playground_views.PlaygroundStreamView.as_view(), name="playground-stream"),
    path("playground/images/", playground_views.PlaygroundImagesView.as_view(), name="playground-images"),
    # Safety
    path("moderation/", safety_views.ModerationQueueView.as_view(), name="moderation"),
    path("moderation/escalations/", safety_views.EscalationsView.as_view(), name="moderation-escalations"),
    path("moderation/<uuid:item_id>/", safety_views.ModerationItemView.as_view(), name="moderation-item"),
    path("safety/policy/", safety_views.SafetyPolicyView.as_view(), name="safety-policy"),
    # Billing
    path("billing/", billing_views.BillingOverviewView.as_view(), name="billing"),
    path("billing/quotas/<int:quota_id>/delete/", billing_views.QuotaDeleteView.as_view(), name="billing-quota-delete"),
    path("billing/plans/", billing_views.BillingPlansView.as_view(), name="billing-plans"),
    path("billing/invoices/", billing_views.InvoiceListView.as_view(), name="billing-invoices"),
    path("billing/invoices/<uuid:invoice_id>/html", billing_views.InvoiceHtmlView.as_view(), name="billing-invoice-html"),
    path("billing/invoices/<uuid:invoice_id>/pdf", billing_views.InvoicePdfView.as_view(), name="billing-invoice-pdf"),
    # Organization settings
    path("settings/members/", views.MembersView.as_view(), name="members"),
    path("settings/members/<uuid:membership_id>/role/", views.MemberRoleChangeView.as_view(), name="member-role"),
    path("settings/members/<uuid:membership_id>/remove/", views.MemberRemoveView.as_view(), name="member-remove"),
    path("settings/invitations/<uuid:invitation_id>/revoke/", views.InvitationRevokeView.as_view(), name="invitation-revoke"),
    # The link in invitation emails (tenants.services.invitation_create builds it)
    path("invitations/accept/<str:token>/", views.InvitationAcceptView.as_view(), name="invitation-accept"),
    path("settings/api-keys/", views.ApiKeysView.as_view(), name="api-keys"),
    path("settings/api-keys/<uuid:api_key_id>/revoke/", views.ApiKeyRevokeView.as_view(), name="api-key-revoke"),
    path("settings/audit/", views.AuditLogView.as_view(), name="audit"),
]
