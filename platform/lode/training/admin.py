from django.contrib import admin

from .models import BaseModel


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    """Read-only: rows are written by `base_model_register` together with their files (the
    `build_tiny_models` command registers the built-in ones)."""

    list_display = ("name", "display_name", "task_type", "architecture", "parameter_count", "source", "updated_at")
    list_filter = ("task_type", "source")
    search_fields = ("name", "display_name", "architecture")
    readonly_fields = [f.name for f in BaseModel._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
