"""Django admin for platform staff. Tenant-owned rows are read across tenants through the
RLS-bypassing system connection and are read-only here: changes go through the services."""
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .db_context import dangerously_all_tenants
from .models import ApiKey, AuditEvent, Invitation, Membership, Organization, User


class PlatformReadOnlyAdmin(admin.ModelAdmin):
    """Staff see every tenant's rows; nobody edits tenant data from the admin."""

    def get_queryset(self, request):
        rows = dangerously_all_tenants(self.model)
        ordering = self.get_ordering(request)
        return rows.order_by(*ordering) if ordering else rows

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ("email",)
    list_display = ("email", "full_name", "is_staff", "is_active", "created_at")
    search_fields = ("email", "full_name")
    fieldsets = (
        (None, {"fields": ("email", "password", "full_name")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "created_at")
    search_fields = ("slug", "name")


@admin.register(Membership)
class MembershipAdmin(PlatformReadOnlyAdmin):
    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role",)


@admin.register(ApiKey)
class ApiKeyAdmin(PlatformReadOnlyAdmin):
    list_display = ("name", "prefix", "tenant", "created_at", "last_used_at", "revoked_at")
    exclude = ("secret_hash",)


@admin.register(Invitation)
class InvitationAdmin(PlatformReadOnlyAdmin):
    list_display = ("email", "tenant", "role", "created_at", "accepted_at", "revoked_at")
    exclude = ("token_hash",)


@admin.register(AuditEvent)
class AuditEventAdmin(PlatformReadOnlyAdmin):
    list_display = ("created_at", "tenant", "actor_label", "action", "target_type", "target_id", "ip")
    list_filter = ("action",)
