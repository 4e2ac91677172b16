from django.urls import re_path

from config.api.routers import Router

from . import views

router = Router()
router.register("channel-accounts", views.ChannelAccountViewSet, basename="channel-account")

urlpatterns = [
    re_path(r"^channels/(?P<channel>[a-z_]+)/webhook/?$", views.channel_webhook, name="channel-webhook"),
    re_path(r"^messages/broadcast/?$", views.BroadcastView.as_view(), name="message-broadcast"),
    # A conversation's message with its deliveries: served here, beside the hub's data.
    re_path(
        r"^conversations/(?P<pk>[0-9]+)/messages/(?P<message_id>[0-9]+)/?$",
        views.MessageDetailView.as_view(),
        name="conversation-message-detail",
    ),
    *router.urls,
]
