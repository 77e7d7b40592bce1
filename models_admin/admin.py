from django.contrib import admin

from models_admin.models import ModelVersion, Promotion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "state", "parent", "created_at"]
    list_filter = ["kind", "state"]
    search_fields = ["name", "folder"]
    # Production moves only through the audited promotion service.
    readonly_fields = ["state", "created_at"]


@admin.register(Promotion)
class PromotionAdmin(admin.ModelAdmin):
    list_display = ["created_at", "from_version", "to_version", "by", "note"]
    readonly_fields = ["from_version", "to_version", "by", "note", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
