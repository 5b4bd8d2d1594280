"""Webhooks API (area "organization"): endpoints, their secret, their deliveries, a test send."""
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.context import request_actor
from tenants.scoping import TenantScopedMixin

from . import selectors, services
from .models import WebhookDeliveryStatus, WebhookEndpoint
from .registry import webhook_event_list
from .serializers import (
    WebhookDeliveryOutput,
    WebhookEndpointCreateInput,
    WebhookEndpointOutput,
    WebhookEndpointUpdateInput,
    WebhookEndpointWithSecretOutput,
    WebhookEventTypeOutput,
    WebhookSecretRotateInput,
)


def _with_secret(created: services.WebhookEndpointWithSecret) -> dict:
    return WebhookEndpointWithSecretOutput(created.endpoint).data | {"secret": created.secret}


class WebhookEndpointListCreateApi(TenantScopedMixin, generics.GenericAPIView):
    required_area = "organization"
    serializer_class = WebhookEndpointOutput

    def safely_get_queryset(self):
        return WebhookEndpoint.objects.all()

    @extend_schema(responses=WebhookEndpointOutput(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(WebhookEndpointOutput(page, many=True).data)

    @extend_schema(request=WebhookEndpointCreateInput, responses={201: WebhookEndpointWithSecretOutput})
    def post(self, request):
        data = WebhookEndpointCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        created = services.webhook_endpoint_create(
            tenant_id=self.tenant.id, by=request_actor(request), url=values["url"], events=values["events"],
            description=values["description"], is_active=values["active"],
        )
        return Response(_with_secret(created), status=status.HTTP_201_CREATED)


class WebhookEndpointDetailApi(TenantScopedMixin, generics.GenericAPIView):
    required_area = "organization"
    serializer_class = WebhookEndpointOutput
    lookup_url_kwarg = "endpoint_id"

    def safely_get_queryset(self):
        return WebhookEndpoint.objects.all()

    @extend_schema(responses=WebhookEndpointOutput)
    def get(self, request, endpoint_id):
        return Response(WebhookEndpointOutput(self.get_object()).data)

    @extend_schema(request=WebhookEndpointUpdateInput, responses=WebhookEndpointOutput)
    def patch(self, request, endpoint_id):
        endpoint = self.get_object()  # another tenant's endpoint is a 404 before its body is judged
        data = WebhookEndpointUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "active" in changes:
            changes["is_active"] = changes.pop("active")
        endpoint = services.webhook_endpoint_update(
            tenant_id=self.tenant.id, by=request_actor(request), endpoint_id=endpoint.id, changes=changes
        )
        return Response(WebhookEndpointOutput(endpoint).data)

    def delete(self, request, endpoint_id):
        services.webhook_endpoint_delete(tenant_id=self.tenant.id, by=request_actor(request), endpoint_id=endpoint_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookSecretRotateApi(TenantScopedMixin, APIView):
    required_area = "organization"

    @extend_schema(request=WebhookSecretRotateInput, responses=WebhookEndpointWithSecretOutput)
    def post(self, request, endpoint_id):
        selectors.webhook_endpoint_get(tenant_id=self.tenant.id, endpoint_id=endpoint_id)
        data = WebhookSecretRotateInput(data=request.data)
        data.is_valid(raise_exception=True)
        rotated = services.webhook_endpoint_secret_rotate(
            tenant_id=self.tenant.id, by=request_actor(request), endpoint_id=endpoint_id,
            previous_valid_seconds=data.validated_data.get("previous_secret_valid_seconds"),
        )
        return Response(_with_secret(rotated))


class WebhookEndpointTestApi(TenantScopedMixin, APIView):
    required_area = "organization"

    @extend_schema(request=None, responses={202: WebhookDeliveryOutput})
    def post(self, request, endpoint_id):
        delivery = services.webhook_endpoint_test(tenant_id=self.tenant.id, by=request_actor(request),
                                                  endpoint_id=endpoint_id)
        return Response(WebhookDeliveryOutput(delivery).data, status=status.HTTP_202_ACCEPTED)


class WebhookDeliveryListApi(TenantScopedMixin, generics.ListAPIView):
    required_area = "organization"
    serializer_class = WebhookDeliveryOutput

    def safely_get_queryset(self):
        return selectors.webhook_delivery_list(
            tenant_id=self.tenant.id, endpoint_id=self.kwargs["endpoint_id"],
            status=self.request.query_params.get("status") or None,
        )

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=WebhookDeliveryStatus.values)])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class WebhookEventTypeListApi(APIView):
    """The event types an endpoint can subscribe to; the same for every tenant."""

    required_area = "organization"
    pagination_class = None

    @extend_schema(responses=WebhookEventTypeOutput(many=True))
    def get(self, request):
        return Response(WebhookEventTypeOutput(webhook_event_list(), many=True).data)
