from django.urls import re_path

from config.api.routers import Router

from . import streaming, views

router = Router()
router.register("conversations", views.ConversationViewSet, basename="conversation")

urlpatterns = [
    re_path(r"^conversations/(?P<pk>[0-9]+)/events/?$", streaming.conversation_events, name="conversation-events"),
    *router.urls,
]
