from django.contrib import admin

from chat.models import Conversation, Feedback, Message


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
