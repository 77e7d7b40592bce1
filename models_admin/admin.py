from django.contrib import admin

from models_admin.models import (
    Canary,
    Dataset,
    ModelVersion,
    Promotion,
    ReviewEvent,
    TrainingJob,
)


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


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "source", "created_at"]
    list_filter = ["source"]
    search_fields = ["name"]
    readonly_fields = ["stats", "filters", "created_by", "created_at"]


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "kind", "state", "base_version", "dataset", "created_at"]
    list_filter = ["kind", "state"]
    # Jobs change through the training services and their Celery task.
    readonly_fields = [
        "progress",
        "curve",
        "log",
        "error",
        "attempts",
        "heartbeat_at",
        "started_at",
        "finished_at",
        "created_at",
    ]


class _AuditAdmin(admin.ModelAdmin):
    """Audit rows are written by services only and never edited."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Canary)
class CanaryAdmin(_AuditAdmin):
    list_display = ["version", "percent", "started_by", "started_at", "ended_at", "outcome"]
    list_filter = ["outcome"]


@admin.register(ReviewEvent)
class ReviewEventAdmin(_AuditAdmin):
    list_display = ["created_at", "staff", "action", "conversation", "detail"]
    list_filter = ["action"]
