from django.contrib import admin

from chat.models import ApiKey, ApiRequest, Conversation, Feedback, Message


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "source", "updated_at"]
    list_filter = ["source"]
    search_fields = ["title", "user__username"]
    raw_id_fields = ["user", "current_leaf"]
    readonly_fields = ["created_at", "updated_at"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["pk", "conversation", "role", "status", "model_version_name", "created_at"]
    list_filter = ["role", "status"]
    search_fields = ["content", "generation_id"]
    raw_id_fields = ["conversation", "parent", "model_version"]
    # Answers are written by the generation services, not by hand.
    readonly_fields = [
        "generation_id",
        "client_id",
        "prompt_tokens",
        "completion_tokens",
        "timings",
        "created_at",
        "finished_at",
    ]


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ["message", "user", "rating", "model_version", "updated_at"]
    list_filter = ["rating"]
    raw_id_fields = ["message", "user", "model_version"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["all_versions"]
    search_fields = ["prefix", "name", "user__username"]
    # The secret is never stored; its hash and prefix are not edited by hand.
    readonly_fields = ["prefix", "key_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request):
        return False


@admin.register(ApiRequest)
class ApiRequestAdmin(admin.ModelAdmin):
    list_display = [
        "created_at", "key", "model_name", "stream", "status_code", "finish_reason",
        "prompt_tokens", "completion_tokens",
    ]  # fmt: skip
    list_filter = ["stream", "finish_reason", "status_code"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
