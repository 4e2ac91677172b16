"""The hub's HTTP interface: channel accounts, the inbound webhook, a message's delivery
detail, and broadcast. Each action validates, calls one service or selector, shapes."""

import functools

from asgiref.sync import sync_to_async
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api.errors import error_response, validation_message
from config.api.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotent
from config.api.renderers import FastJSONRenderer
from config.api.views import HasTenant, TenantScopedViewSet
from config.core.errors import ApplicationError
from conversations import selectors as conversation_selectors

from . import selectors
from .secrets import SIGNATURE_HEADER
from .serializers import (
    BindConversationSerializer,
    BroadcastItemSerializer,
    BroadcastSerializer,
    ChannelAccountCreatedSerializer,
    ChannelAccountCreateSerializer,
    ChannelAccountSerializer,
    ChannelAccountUpdateSerializer,
    MessageDeliveryDetailSerializer,
)
from .services import accounts, bindings, broadcast, inbound

_RENDERER = FastJSONRenderer()


def _validated(serializer) -> dict:
    if not serializer.is_valid():
        message, details = validation_message(serializer.errors)
        raise ApplicationError(message, code="validation_error", details=details)
    return serializer.validated_data


class IsTenantAdmin(permissions.BasePermission):
    message = "Only the tenant's owners and admins may manage channel accounts."

    def has_permission(self, request, view):
        return bool(request.user.is_tenant_admin)


@extend_schema(tags=["channels"])
class ChannelAccountViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet
):
    """The tenant's channel accounts (owners and admins). The secret is in the create
    answer only."""

    serializer_class = ChannelAccountSerializer
    permission_classes = [*TenantScopedViewSet.permission_classes, IsTenantAdmin]
    lookup_value_regex = r"[0-9]+"
    cursor_ordering = ("-created_at", "-id")

    def select(self, *, tenant, user):
        return selectors.account_list(tenant=tenant)

    @extend_schema(
        request=ChannelAccountCreateSerializer,
        responses={201: ChannelAccountCreatedSerializer},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    @idempotent
    def create(self, request):
        data = _validated(ChannelAccountCreateSerializer(data=request.data))
        account, secret = accounts.channel_account_create(user=request.user, **data)
        account.secret = secret
        return Response(ChannelAccountCreatedSerializer(account).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ChannelAccountUpdateSerializer, responses=ChannelAccountSerializer)
    def partial_update(self, request, pk=None):
        data = _validated(ChannelAccountUpdateSerializer(data=request.data, partial=True))
        account = accounts.channel_account_update(account=self.get_object(), user=request.user, **data)
        return Response(ChannelAccountSerializer(account).data)

    @extend_schema(request=ChannelAccountUpdateSerializer, responses=ChannelAccountSerializer)
    def update(self, request, pk=None):
        return self.partial_update(request, pk=pk)

    def perform_destroy(self, instance):
        accounts.channel_account_disconnect(account=instance, user=self.request.user)


def conversation_bind(*, user, data):
    """The binder ``conversations.routing`` calls for ``POST /conversations/`` with a
    ``channel_account_id``: validates the body here, at the interface."""
    body = _validated(BindConversationSerializer(data=data))
    binding = bindings.binding_create(
        user=user,
        account_id=body["channel_account_id"],
        address=body["contact"]["address"],
        name=body["contact"]["name"],
    )
    return binding.conversation


WEBHOOK_RESULT = inline_serializer(
    "WebhookResult",
    {
        "messages": serializers.IntegerField(),
        "duplicates": serializers.IntegerField(),
        "statuses": serializers.IntegerField(),
    },
)


class ChannelWebhookView(APIView):
    """``POST /api/v1/channels/{channel}/webhook``: a platform's signed notification. No
    user: the ``X-Hub-Signature-256`` HMAC over the raw body with the account's secret is
    the authentication (401 without a valid one, nothing stored)."""

    # POST is served by ``channel_webhook`` (async, below); this class is its schema, its
    # other methods (405), and the same service for callers of the class itself.
    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_classes: list = []

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={200: WEBHOOK_RESULT},
        tags=["channels"],
    )
    def post(self, request, channel: str):
        # The raw bytes, before any parser touches them: the signature is over these.
        body = request.body
        result = inbound.webhook_receive(channel=channel, body=body, signature=request.headers.get(SIGNATURE_HEADER))
        return Response(result)


def _async_webhook(drf_view):
    """``drf_view`` with its POST served by an ``async def`` view: the webhook is what
    platforms post most (every status of every message), and as a DRF view each one hopped
    to a thread to build DRF's request, negotiate and render around one service call.
    Here the body is verified and parsed in the event loop and the database is one thread
    hop (``inbound.webhook_areceive``); the answer is what the DRF view renders (the same
    JSON, ``Allow``, the error envelope). Other methods go to the DRF view (405). The
    wrapper keeps the view's attributes (``cls``, ``initkwargs``, ``csrf_exempt``), so the
    router, ``reverse`` and drf-spectacular's schema see the DRF view."""
    allow = ", ".join(ChannelWebhookView().allowed_methods)

    async def view(request, channel: str):
        if request.method != "POST":
            return await sync_to_async(drf_view)(request, channel=channel)
        try:
            body = await inbound.webhook_areceive(
                channel=channel, body=request.body, signature=request.headers.get(SIGNATURE_HEADER)
            )
        except ApplicationError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.details)
        else:
            response = HttpResponse(_RENDERER.render(body), content_type="application/json")
        response["Allow"] = allow
        return response

    functools.update_wrapper(view, drf_view, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
    view.__dict__.update(drf_view.__dict__)
    return view


channel_webhook = _async_webhook(ChannelWebhookView.as_view())


class MessageDetailView(APIView):
    """``GET /conversations/{id}/messages/{mid}``: the message with its status history and
    every delivery attempt (``deliveries``)."""

    permission_classes = [permissions.IsAuthenticated, HasTenant]

    @extend_schema(responses=MessageDeliveryDetailSerializer, tags=["conversations"])
    def get(self, request, pk, message_id):
        conversation = conversation_selectors.conversation_get(
            tenant=request.user.tenant_id, user=request.user, conversation_id=pk
        )
        message = conversation_selectors.message_get(conversation=conversation, message_id=message_id)
        history = selectors.message_delivery_history(message=message)
        message.status_history, message.deliveries = history["changes"], history["attempts"]
        return Response(MessageDeliveryDetailSerializer(message).data)


class BroadcastView(APIView):
    """``POST /api/v1/messages/broadcast``: one message to several contacts, 202 with one
    message per target, each routed and tracked on its own."""

    permission_classes = [permissions.IsAuthenticated, HasTenant]

    @extend_schema(
        request=BroadcastSerializer,
        responses={202: inline_serializer("BroadcastResult", {"results": BroadcastItemSerializer(many=True)})},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        tags=["channels"],
    )
    @idempotent
    def post(self, request):
        data = _validated(BroadcastSerializer(data=request.data))
        items = broadcast.message_broadcast(
            user=request.user, content=data["content"], targets=data["targets"], attachments=data["attachments"]
        )
        return Response({"results": BroadcastItemSerializer(items, many=True).data}, status=status.HTTP_202_ACCEPTED)
