from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from chat import selectors as chat_selectors
from chat.serializers import AgentRunSerializer, MessageAcceptedSerializer, run_data
from chat.services import turns
from config.api.fast import FastPost
from config.api.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotent
from config.api.views import TenantScopedViewSet
from config.db import release_connection

from . import exports, routing, selectors, services
from .serializers import (
    ConversationCreateSerializer,
    ConversationListQuerySerializer,
    ConversationSerializer,
    ConversationUpdateSerializer,
    ExportQuerySerializer,
    MessageCreateSerializer,
    MessageListQuerySerializer,
    MessageSerializer,
    message_data,
)


def message_accept(user, data: dict, pk) -> tuple[dict, int]:
    """``POST …/messages``'s work and body, for the DRF view and its async fast path:
    the message stored and its run queued (``turn_enqueue``), 202 with both, or 200 with
    the turn stored earlier when ``client_message_id`` was sent before."""
    turn = turns.turn_enqueue(user=user, conversation_id=pk, **data)
    # No run in a conversation bound to a channel: the message goes to the contact.
    # Rendered by the serializers' fields built once (message_data, run_data).
    run = run_data(turn.run) if turn.run is not None else None
    body = {"message": message_data(turn.message), "run": run}
    return body, status.HTTP_202_ACCEPTED if turn.created else status.HTTP_200_OK


@extend_schema_view(
    list=extend_schema(parameters=[ConversationListQuerySerializer]),
    partial_update=extend_schema(request=ConversationUpdateSerializer, responses=ConversationSerializer),
    update=extend_schema(request=ConversationUpdateSerializer, responses=ConversationSerializer),
)
class ConversationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantScopedViewSet,
):
    """Conversations the caller owns or takes part in."""

    serializer_class = ConversationSerializer
    lookup_value_regex = r"[0-9]+"
    # POST …/messages (202) served async on its success path (config/api/fast.py).
    fast_posts = {"messages": FastPost(MessageCreateSerializer, message_accept, idempotent=True)}

    def select(self, *, tenant, user):
        filters = {}
        if self.action == "list":
            query = ConversationListQuerySerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            filters = query.validated_data
        return selectors.conversation_list(tenant=tenant, user=user, **filters).prefetch_related("participants")

    def get_conversation(self):
        return selectors.conversation_get(
            tenant=self.request.user.tenant_id, user=self.request.user, conversation_id=self.kwargs["pk"]
        )

    @extend_schema(request=ConversationCreateSerializer, responses={201: ConversationSerializer})
    @idempotent
    def create(self, request):
        if isinstance(request.data, dict) and "channel_account_id" in request.data:
            # Bound to a contact on a channel account: the hub validates and creates it.
            conversation = routing.conversation_bind(user=request.user, data=request.data)
            return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)
        data = ConversationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        conversation = services.conversation_create(user=request.user, **data.validated_data)
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)

    def update(self, request, pk=None, partial=False):
        data = ConversationUpdateSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        conversation = services.conversation_update(
            conversation=self.get_conversation(), user=request.user, **data.validated_data
        )
        return Response(ConversationSerializer(conversation).data)

    def partial_update(self, request, pk=None):
        return self.update(request, pk=pk, partial=True)

    def perform_destroy(self, instance):
        services.conversation_delete(conversation=instance, user=self.request.user)

    @extend_schema(methods=["GET"], parameters=[MessageListQuerySerializer], responses=MessageSerializer(many=True))
    @extend_schema(
        methods=["POST"],
        request=MessageCreateSerializer,
        responses={202: MessageAcceptedSerializer},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    @action(detail=True, methods=["get", "post"], url_path="messages", cursor_ordering=("seq",))
    def messages(self, request, pk=None):
        """GET: messages in ``seq`` order; ``?after_seq=N`` gives only what came after N.
        POST: stores the message and answers 202 with it and its queued agent run; the
        agent runs on a Celery worker and its events reach the conversation's listeners."""
        if request.method == "POST":
            response = self._post_message(request, pk)
            release_connection()  # the pool's connection back before the response
            return response
        query = MessageListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        messages = selectors.message_list(
            conversation=self.get_conversation(), after_seq=query.validated_data.get("after_seq")
        )
        page = self.paginate_queryset(messages)
        return self.get_paginated_response(MessageSerializer(page, many=True).data)

    @idempotent
    def _post_message(self, request, pk):
        data = MessageCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        body, status_code = message_accept(request.user, data.validated_data, pk=pk)
        return Response(body, status=status_code)

    @extend_schema(request=None, responses=MessageSerializer)
    @action(detail=True, methods=["post"], url_path=r"messages/(?P<message_id>[0-9]+)/read")
    def read(self, request, pk=None, message_id=None):
        """Read receipt for one message."""
        message = services.message_read(user=request.user, conversation_id=pk, message_id=message_id)
        return Response(MessageSerializer(message).data)

    @extend_schema(responses=AgentRunSerializer(many=True))
    @action(detail=True, methods=["get"], cursor_ordering=("-created_at", "-id"))
    def turns(self, request, pk=None):
        """The agent runs of this conversation, newest first."""
        runs = chat_selectors.run_list(conversation=self.get_conversation())
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(AgentRunSerializer(page, many=True).data)

    @extend_schema(
        parameters=[ExportQuerySerializer],
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "text/markdown"): OpenApiResponse(OpenApiTypes.STR),
        },
    )
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        """The whole conversation as JSON or Markdown (a download)."""
        query = ExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        conversation = self.get_conversation()
        messages = selectors.message_list(conversation=conversation)
        if query.validated_data["format"] == "markdown":
            body = exports.conversation_markdown(conversation=conversation, messages=messages)
            content_type, ext = "text/markdown; charset=utf-8", "md"
        else:
            body = exports.conversation_json(conversation=conversation, messages=messages)
            content_type, ext = "application/json", "json"
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="conversation-{conversation.pk}.{ext}"'
        return response
