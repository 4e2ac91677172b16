from django.urls import re_path

from config.api.routers import Router

from . import streaming, views

router = Router()
router.register("tasks", views.TaskViewSet, basename="task")

urlpatterns = [
    re_path(r"^chat/?$", views.ChatView.as_view(), name="chat"),
    re_path(r"^chat/stream/?$", streaming.chat_stream, name="chat-stream"),
    # The conversation's live events: served here, beside the chat stream and the consumer.
    re_path(r"^conversations/(?P<pk>[0-9]+)/events/?$", streaming.conversation_events, name="conversation-events"),
    *router.urls,
]

# Mounted at /api/ (not /api/v1/) for clients of the older path.
legacy_urlpatterns = [
    re_path(r"^(?P<user_id>[0-9]+)/chat/?$", views.LegacyChatView.as_view(), name="chat-legacy"),
]
