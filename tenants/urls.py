from django.urls import path

from . import api

app_name = "tenants"

urlpatterns = [
    path("auth/signup", api.SignupApi.as_view(), name="signup"),
    path("auth/me", api.MeApi.as_view(), name="me"),
    path("auth/switch-organization", api.OrganizationSwitchApi.as_view(), name="switch-organization"),
    path("api-keys", api.ApiKeyListCreateApi.as_view(), name="api-key-list"),
    path("api-keys/<uuid:api_key_id>/revoke", api.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
    path("members", api.MemberListApi.as_view(), name="member-list"),
    path("members/<uuid:membership_id>", api.MemberDetailApi.as_view(), name="member-detail"),
    path("invitations", api.InvitationListCreateApi.as_view(), name="invitation-list"),
    path("invitations/accept", api.InvitationAcceptApi.as_view(), name="invitation-accept"),
    path("invitations/<uuid:invitation_id>/revoke", api.InvitationRevokeApi.as_view(), name="invitation-revoke"),
    path("audit-events", api.AuditEventListApi.as_view(), name="audit-event-list"),
]
