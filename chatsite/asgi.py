"""ASGI entry point: HTTP through Django, WebSockets under ``/ws/``.

Outermost, the client's address is resolved from trusted proxies' headers;
HTTP bodies are then capped and WebSocket origins checked before Django or a
consumer sees the connection.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.routing import websocket_urlpatterns as chat_routes  # noqa: E402
from chatsite.bodies import BodyLimitMiddleware  # noqa: E402
from chatsite.daphne_patches import daphne_patches_apply  # noqa: E402
from chatsite.origins import SiteOriginValidator  # noqa: E402
from chatsite.proxies import TrustedProxyMiddleware  # noqa: E402
from models_admin.dashboard.routing import websocket_urlpatterns as dashboard_routes  # noqa: E402

daphne_patches_apply()

application = TrustedProxyMiddleware(
    ProtocolTypeRouter(
        {
            "http": BodyLimitMiddleware(django_asgi_app),
            "websocket": SiteOriginValidator(
                AuthMiddlewareStack(URLRouter([*chat_routes, *dashboard_routes]))
            ),
        }
    )
)
