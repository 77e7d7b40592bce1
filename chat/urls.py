from django.urls import include, path, re_path

from chat.views import accounts, api, openai_api, pages, speech, widget

urlpatterns = [
    path("accounts/", include("chat.account_urls")),
    path("language/", accounts.language_set, name="set_language"),
    path(
        "jsi18n/<str:language>/",
        pages.LanguageCatalog.as_view(),
        name="javascript-catalog",
    ),
    path("status/", pages.status, name="status"),
    path("", pages.chat_page, name="chat"),
    path("c/<int:conversation_id>/", pages.chat_page, name="conversation"),
    path("api/conversations/", api.conversations, name="api-conversations"),
    path(
        "api/conversations/<int:conversation_id>/",
        api.conversation,
        name="api-conversation",
    ),
    path(
        "api/conversations/<int:conversation_id>/branch/",
        api.conversation_branch,
        name="api-conversation-branch",
    ),
    path(
        "api/conversations/<int:conversation_id>/export.<str:fmt>",
        api.conversation_export_view,
        name="api-conversation-export",
    ),
    path("api/messages/<int:message_id>/feedback/", api.message_feedback, name="api-feedback"),
    path("api/messages/<int:message_id>/tokens/", api.message_tokens_view, name="api-tokens"),
    path("api/versions/", api.chat_versions, name="api-versions"),
    path("widget/config/", widget.widget_config, name="widget-config"),
    path("widget/frame/", widget.widget_frame, name="widget-frame"),
    path("speech/say/", speech.speech_say, name="speech-say"),
    path("widget/speech/say/", speech.widget_speech_say, name="widget-speech-say"),
    # The OpenAI-compatible API: no trailing slashes, as its clients call it.
    path("v1/models", openai_api.models, name="v1-models"),
    path("v1/models/<path:model_id>", openai_api.models, name="v1-model"),
    path("v1/chat/completions", openai_api.chat_completions, name="v1-chat-completions"),
    path("v1/completions", openai_api.completions, name="v1-completions"),
    re_path(r"^v1/(?P<path>.*)$", openai_api.not_found, name="v1-not-found"),
]
