"""Staff's Django admin for safety: every tenant's policies, decisions, queue items and reviews
(read-only: tenants change their policies through the API, reviewers decide in the queue), the
platform lexicon terms (editable), and actions deciding escalated items."""
from django.contrib import admin, messages

from lode.core.errors import LodeError
from tenants.admin import PlatformReadOnlyAdmin

from .models import LexiconTerm, ModerationItem, ReviewDecision, SafetyDecision, SafetyPolicy


@admin.register(SafetyPolicy)
class SafetyPolicyAdmin(PlatformReadOnlyAdmin):
    list_display = ("tenant", "version", "flagged_output", "image_review", "semantic", "created_at")
    list_filter = ("flagged_output", "image_review")
    readonly_fields = [f.name for f in SafetyPolicy._meta.fields]


@admin.register(SafetyDecision)
class SafetyDecisionAdmin(PlatformReadOnlyAdmin):
    list_display = ("id", "tenant", "source", "action", "categories", "policy_version", "created_at")
    list_filter = ("action", "source")
    readonly_fields = [f.name for f in SafetyDecision._meta.fields]


class ReviewInline(admin.TabularInline):
    model = ReviewDecision
    extra = 0
    can_delete = False
    fields = ("verdict", "reason", "reviewer", "as_staff", "created_at")
    readonly_fields = fields

    def get_queryset(self, request):
        from tenants.db_context import dangerously_all_tenants

        return dangerously_all_tenants(self.model)

    def has_add_permission(self, request, obj=None):
        return False


def _decide(verdict: str):
    def action(modeladmin, request, queryset):
        from .moderation import escalation_decide

        done = 0
        for item in queryset:
            try:
                escalation_decide(user=request.user, item_id=item.id, verdict=verdict,
                                  reason=f"{verdict}d by staff in the admin")
                done += 1
            except LodeError as exc:
                modeladmin.message_user(request, f"{item.id}: {exc.message}", level=messages.WARNING)
        modeladmin.message_user(request, f"{done} escalated item(s) {verdict}d.")

    action.__name__ = f"escalation_{verdict}"
    action.short_description = f"{verdict.capitalize()} the selected escalated items"
    return action


@admin.register(ModerationItem)
class ModerationItemAdmin(PlatformReadOnlyAdmin):
    list_display = ("id", "tenant", "source", "state", "categories", "held", "due_at", "created_at")
    list_filter = ("state", "source", "held")
    readonly_fields = [f.name for f in ModerationItem._meta.fields]
    inlines = [ReviewInline]
    actions = [_decide("approve"), _decide("reject")]


@admin.register(LexiconTerm)
class LexiconTermAdmin(admin.ModelAdmin):
    list_display = ("term", "language", "category", "active", "added_by", "created_at")
    list_filter = ("language", "category", "active")
    search_fields = ("term",)
    readonly_fields = ("added_by", "created_at", "updated_at")

    def save_model(self, request, obj, form, change):
        if not change:
            obj.added_by = request.user
        super().save_model(request, obj, form, change)
