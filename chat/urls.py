from django.urls import re_path

from config.api.routers import Router

from . import views

router = Router()
router.register("tasks", views.TaskViewSet, basename="task")

urlpatterns = [
    re_path(r"^chat/?$", views.ChatView.as_view(), name="chat"),
    *router.urls,
]

# Mounted at /api/ (not /api/v1/) for clients of the older path.
legacy_urlpatterns = [
    re_path(r"^(?P<user_id>[0-9]+)/chat/?$", views.LegacyChatView.as_view(), name="chat-legacy"),
]
