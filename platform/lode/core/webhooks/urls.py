from django.urls import path

from . import api

app_name = "webhooks"

urlpatterns = [
    path("webhooks", api.WebhookEndpointListCreateApi.as_view(), name="endpoint-list"),
    path("webhooks/event-types", api.WebhookEventTypeListApi.as_view(), name="event-type-list"),
    path("webhooks/<uuid:endpoint_id>", api.WebhookEndpointDetailApi.as_view(), name="endpoint-detail"),
    path("webhooks/<uuid:endpoint_id>/rotate-secret", api.WebhookSecretRotateApi.as_view(), name="endpoint-rotate-secret"),
    path("webhooks/<uuid:endpoint_id>/deliveries", api.WebhookDeliveryListApi.as_view(), name="delivery-list"),
    path("webhooks/<uuid:endpoint_id>/test", api.WebhookEndpointTestApi.as_view(), name="endpoint-test"),
]
