from django.contrib import admin

from .models import Artifact, Job, JobEvent


class JobEventInline(admin.TabularInline):
    model = JobEvent
    extra = 0
    can_delete = False
    readonly_fields = ("kind", "message", "data", "created_at")


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "kind", "state", "progress", "attempts", "created_at", "finished_at")
    list_filter = ("state", "kind", "queue")
    search_fields = ("id", "kind")
    inlines = [JobEventInline]
    readonly_fields = [f.name for f in Job._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ("name", "tenant", "size", "created_at")
    readonly_fields = [f.name for f in Artifact._meta.fields]

    def has_add_permission(self, request):
        return False
