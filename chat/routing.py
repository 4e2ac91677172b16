from django.urls import re_path

from .consumers import ConversationConsumer

websocket_urlpatterns = [
    re_path(r"^ws/v1/conversations/(?P<conversation_id>[0-9]+)/?$", ConversationConsumer.as_asgi()),
]
