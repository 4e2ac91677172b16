"""WebSocket routes of every app, behind the JWT handshake authentication."""

from channels.routing import URLRouter

from chat.routing import websocket_urlpatterns as chat_routes
from config.api.ws_auth import JWTAuthMiddleware

websocket_urlpatterns = [*chat_routes]

# What config/asgi.py serves for "websocket" (tests drive the same stack in-process).
websocket_application = JWTAuthMiddleware(URLRouter(websocket_urlpatterns))
