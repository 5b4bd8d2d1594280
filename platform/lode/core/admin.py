from django.contrib import admin

from tenants.admin import PlatformReadOnlyAdmin

from .models import Artifact, Job, JobEvent


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
