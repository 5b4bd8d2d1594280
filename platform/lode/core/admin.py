from django.contrib import admin

from tenants.admin import PlatformReadOnlyAdmin

from .models import Artifact, Job, JobEvent
from .webhooks.models import WebhookDelivery, WebhookEndpoint


class JobEventInline(admin.TabularInline):
    model = JobEvent
    extra = 0
    can_delete = False
    readonly_fields = ("kind", "message", "data", "created_at")

    def get_queryset(self, request):
        from tenants.db_context import dangerously_all_tenants

        return dangerously_all_tenants(self.model)


@admin.register(Job)
class JobAdmin(PlatformReadOnlyAdmin):
    list_display = ("id", "tenant", "kind", "state", "progress", "attempts", "created_at", "finished_at")
    list_filter = ("state", "kind", "queue")
    search_fields = ("id", "kind")
    inlines = [JobEventInline]
    readonly_fields = [f.name for f in Job._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Artifact)
class ArtifactAdmin(PlatformReadOnlyAdmin):
    list_display = ("name", "tenant", "size", "created_at")
    readonly_fields = [f.name for f in Artifact._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(PlatformReadOnlyAdmin):
    list_display = ("url", "tenant", "is_active", "event_types", "created_at")
    list_filter = ("is_active",)
    list_select_related = ("tenant",)
    search_fields = ("id", "url")
    # The signing secrets are the tenant's: staff never see them.
    exclude = ("secret_sealed", "previous_secret_sealed")
    readonly_fields = [f.name for f in WebhookEndpoint._meta.fields if f.name not in {"secret_sealed", "previous_secret_sealed"}]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(PlatformReadOnlyAdmin):
    list_display = ("event_type", "event_id", "tenant", "endpoint", "status", "attempts", "last_status_code",
                    "created_at", "delivered_at")
    list_filter = ("status", "event_type")
    list_select_related = ("tenant", "endpoint")
    search_fields = ("id", "event_id")
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
