from django.urls import path

from chat.consumers.chat import ChatConsumer
from chat.consumers.widget import WidgetConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("ws/widget/", WidgetConsumer.as_asgi()),
]
