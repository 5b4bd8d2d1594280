"""Sign-up and the caller's identity."""
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from lode.core.errors import PermissionDenied

from .context import current_access, organization_switch
from .models import ApiKey, AuditEvent, Invitation, Membership
from .permissions import ROLE_PERMISSIONS
from .scoping import TenantScopedMixin
from .serializers import (
    ApiKeyCreatedOutput,
    ApiKeyCreateInput,
    ApiKeyOutput,
    AuditEventOutput,
    InvitationAcceptInput,
    InvitationCreateInput,
    InvitationOutput,
    MemberOutput,
    MemberUpdateInput,
    MeOutput,
    OrganizationSwitchInput,
    SignupInput,
)
from .services import (
    api_key_create,
    api_key_revoke,
    invitation_accept,
    invitation_create,
    invitation_revoke,
    membership_remove,
    membership_role_change,
    user_signup,
)
from .throttling import SignupRateThrottle


class SignupApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [SignupRateThrottle]

    @extend_schema(request=SignupInput, responses={201: MeOutput})
    def post(self, request):
        data = SignupInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = user_signup(**data.validated_data)
        body = {"user": result.user, "organization": result.organization, "role": "owner",
                "permissions": sorted(ROLE_PERMISSIONS["owner"])}
        return Response(MeOutput(body).data, status=status.HTTP_201_CREATED)


class MeApi(APIView):
    permission_classes = [IsAuthenticated]  # any signed-in caller may ask who they are
    @extend_schema(responses=MeOutput)
    def get(self, request):
        access = current_access(request)
        return Response(
            MeOutput(
                {
                    "user": access.user if access else None,
                    "organization": access.tenant if access else None,
                    "role": access.role if access else None,
                    "permissions": sorted(access.permissions) if access else [],
                }
            ).data
        )


def _ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _person(request, refusal: str):
    """The signed-in person behind the request; some acts are a person's, never an API key's."""
    access = current_access(request)
    if access is None or access.user is None:
        raise PermissionDenied(refusal)
    return access.user


class ApiKeyListCreateApi(TenantScopedMixin, generics.GenericAPIView):
    required_area = "organization"
    serializer_class = ApiKeyOutput

    def safely_get_queryset(self):
        return ApiKey.objects.all()

    @extend_schema(responses=ApiKeyOutput(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ApiKeyOutput(page, many=True).data)

    @extend_schema(request=ApiKeyCreateInput, responses={201: ApiKeyCreatedOutput})
    def post(self, request):
        data = ApiKeyCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        access = current_access(request)
        created = api_key_create(
            tenant_id=self.tenant.id, created_by=access.user, creator_permissions=access.permissions,
            ip=_ip(request), **data.validated_data,
        )
        body = ApiKeyOutput(created.api_key).data | {"secret": created.secret}
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(TenantScopedMixin, APIView):
    required_area = "organization"

    @extend_schema(request=None, responses=ApiKeyOutput)
    def post(self, request, api_key_id):
        api_key = api_key_revoke(tenant_id=self.tenant.id, api_key_id=api_key_id, by=current_access(request).user, ip=_ip(request))
        return Response(ApiKeyOutput(api_key).data)


class MemberListApi(TenantScopedMixin, generics.ListAPIView):
    required_area = "organization"
    serializer_class = MemberOutput
    tenant_field = "organization"

    def safely_get_queryset(self):
        return Membership.objects.select_related("user")


class MemberDetailApi(TenantScopedMixin, generics.GenericAPIView):
    required_area = "organization"
    serializer_class = MemberOutput
    tenant_field = "organization"
    lookup_url_kwarg = "membership_id"

    def safely_get_queryset(self):
        return Membership.objects.select_related("user")

    @extend_schema(responses=MemberOutput)
    def get(self, request, membership_id):
        return Response(MemberOutput(self.get_object()).data)

    @extend_schema(request=MemberUpdateInput, responses=MemberOutput)
    def patch(self, request, membership_id):
        data = MemberUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        access = current_access(request)
        membership = membership_role_change(
            tenant_id=self.tenant.id, membership_id=self.get_object().id, role=data.validated_data["role"],
            by=access.user, by_role=access.role or "", ip=_ip(request),
        )
        return Response(MemberOutput(membership).data)

    def delete(self, request, membership_id):
        access = current_access(request)
        membership_remove(
            tenant_id=self.tenant.id, membership_id=self.get_object().id, by=access.user, by_role=access.role or "",
            ip=_ip(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationListCreateApi(TenantScopedMixin, generics.GenericAPIView):
    required_area = "organization"
    serializer_class = InvitationOutput

    def safely_get_queryset(self):
        return Invitation.objects.filter(accepted_at__isnull=True, revoked_at__isnull=True)

    @extend_schema(responses=InvitationOutput(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(InvitationOutput(page, many=True).data)

    @extend_schema(request=InvitationCreateInput, responses={201: InvitationOutput})
    def post(self, request):
        data = InvitationCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        person = _person(request, "Invitations are sent by a person, not an API key.")
        created = invitation_create(tenant_id=self.tenant.id, invited_by=person, ip=_ip(request), **data.validated_data)
        return Response(InvitationOutput(created.invitation).data, status=status.HTTP_201_CREATED)


class InvitationRevokeApi(TenantScopedMixin, APIView):
    required_area = "organization"

    @extend_schema(request=None, responses=InvitationOutput)
    def post(self, request, invitation_id):
        invitation = invitation_revoke(tenant_id=self.tenant.id, invitation_id=invitation_id, by=current_access(request).user, ip=_ip(request))
        return Response(InvitationOutput(invitation).data)


class InvitationAcceptApi(APIView):
    """Accepting joins the signed-in person to the inviting organization (no tenant yet, so no area)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=InvitationAcceptInput, responses=MemberOutput)
    def post(self, request):
        data = InvitationAcceptInput(data=request.data)
        data.is_valid(raise_exception=True)
        person = _person(request, "Invitations are accepted by a signed-in person, not an API key.")
        membership = invitation_accept(token=data.validated_data["token"], user=person, ip=_ip(request))
        return Response(MemberOutput(membership).data)


class OrganizationSwitchApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=OrganizationSwitchInput, responses=MeOutput)
    def post(self, request):
        data = OrganizationSwitchInput(data=request.data)
        data.is_valid(raise_exception=True)
        _person(request, "An API key belongs to one organization; it cannot switch.")
        organization_switch(request, organization_id=data.validated_data["organization_id"])
        access = current_access(request)
        return Response(MeOutput({"user": access.user, "organization": access.tenant, "role": access.role,
                                  "permissions": sorted(access.permissions)}).data)


class AuditEventListApi(TenantScopedMixin, generics.ListAPIView):
    required_area = "audit"
    serializer_class = AuditEventOutput

    def safely_get_queryset(self):
        return AuditEvent.objects.all()
