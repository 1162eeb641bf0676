"""Django admin: the action log is read-only for everyone, superusers included (no add, change or delete, no bulk
actions). The model and, on PostgreSQL, a database trigger refuse changes as well."""
from django.contrib import admin

from annotation.models import ActionLog


@admin.register(ActionLog)
class ActionLogAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor", "verb", "workflow", "item", "target_type", "target_id", "request_id")
    list_filter = ("verb", "workflow")
    search_fields = ("verb", "rationale", "request_id", "actor__username", "target_id")
    date_hierarchy = "created_at"
    list_select_related = ("actor", "item")
    ordering = ("-created_at", "-id")
    actions = None

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
