from django.urls import path

from chat.consumers import ChatConsumer, WidgetConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("ws/widget/", WidgetConsumer.as_asgi()),
]
