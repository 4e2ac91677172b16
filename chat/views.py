from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api.fast import FastPost, fast_view
from config.api.idempotency import idempotent
from config.api.views import HasTenant, TenantScopedViewSet
from config.core.errors import Forbidden, ServiceUnavailable

from . import selectors
from .serializers import (
    ChatRequestSerializer,
    ChatResponseSerializer,
    LegacyChatResponseSerializer,
    TaskListQuerySerializer,
    TaskSerializer,
    TaskWriteSerializer,
)
from .services import runs, todos, turns


class AgentUnavailable(ServiceUnavailable):
    code = "agent_unavailable"


def answered(turn: turns.Turn) -> turns.Turn:
    """The sync transport of a turn's outcome: the turn when the run completed (or another
    execution holds it), else 503 ``agent_unavailable`` (the user's message stays)."""
    run = turn.run
    if turn.outcome == runs.Outcome.FAILED:
        raise AgentUnavailable(
            "The assistant is unavailable right now; your message was kept.",
            details={"conversation_id": run.conversation_id, "message_id": run.trigger_message_id, "run_id": run.pk},
        )
    if run.status == run.Status.FAILED:  # a run settled earlier, failed
        raise AgentUnavailable("The assistant could not answer this message.", details={"run_id": run.pk})
    return turn


def turn_body(turn: turns.Turn) -> dict:
    run = turn.run
    return {
        "conversation_id": turn.conversation.pk,
        "message_id": turn.message.pk,
        "reply_id": run.reply_message_id,
        "run_id": run.pk,
        "response": run.reply_message.content if run.reply_message else "",
        "tool_calls": run.tool_calls,
        "usage": run.usage,
    }


def chat_answer(user, data: dict) -> tuple[dict, int]:
    """``POST /api/v1/chat``'s work and body, for the DRF view and its async fast path
    (``config.api.fast``): the whole turn in the request (``turn_answer``), 200 with the
    reply, or 503 ``agent_unavailable`` (raised) with the user's message kept."""
    turn = turns.turn_answer(user=user, content=data["message"], conversation_id=data["conversation_id"])
    return turn_body(answered(turn)), status.HTTP_200_OK


def legacy_chat_answer(user, data: dict, user_id) -> tuple[dict, int]:
    """``POST /api/{user_id}/chat``: the same turn; ``tool_calls`` is a list of tool names,
    and ``user_id`` must be the caller (403 otherwise, after the idempotency key was
    claimed, as in the DRF view, so the key is released)."""
    if int(user_id) != user.pk:
        raise Forbidden("You can only chat as yourself.")
    body, status_code = chat_answer(user, data)
    body["tool_calls"] = [call["name"] for call in body["tool_calls"]]
    return body, status_code


class ChatView(APIView):
    """One chat turn in the request: the reply, the tools it called and the token usage.
    Its success path is served async (``config.api.fast``: the caller, the rate limit and
    the body in the event loop, one thread hop for the turn); DRF answers the rest."""

    permission_classes = APIView.permission_classes + [HasTenant]
    fast_post = FastPost(ChatRequestSerializer, chat_answer, idempotent=True)

    @classmethod
    def as_view(cls, **initkwargs):
        return fast_view(super().as_view(**initkwargs), post=cls.fast_post)

    @extend_schema(
        request=ChatRequestSerializer,
        responses={200: ChatResponseSerializer},
        operation_id="chat_create",
    )
    @idempotent
    def post(self, request):
        return Response(chat_answer(request.user, self.validated(request))[0])

    @staticmethod
    def validated(request) -> dict:
        data = ChatRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return data.validated_data


class LegacyChatView(ChatView):
    """``POST /api/{user_id}/chat`` for older clients: the same turn; ``tool_calls`` is a
    list of tool names, and ``user_id`` must be the caller."""

    fast_post = FastPost(ChatRequestSerializer, legacy_chat_answer, idempotent=True)

    @extend_schema(
        request=ChatRequestSerializer,
        responses={200: LegacyChatResponseSerializer},
        parameters=[OpenApiParameter("user_id", int, OpenApiParameter.PATH)],
        operation_id="chat_legacy_create",
    )
    @idempotent
    def post(self, request, user_id):
        # Each path's post is idempotent on its own response. The caller is checked
        # before the body (a foreign user_id is 403 whatever the body).
        if int(user_id) != request.user.pk:
            raise Forbidden("You can only chat as yourself.")
        return Response(legacy_chat_answer(request.user, self.validated(request), user_id)[0])


@extend_schema_view(list=extend_schema(parameters=[TaskListQuerySerializer]))
class TaskViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantScopedViewSet,
):
    """The caller's to-do items: the rows the agent's tools act on."""

    serializer_class = TaskSerializer
    cursor_ordering = ("created_at", "id")
    lookup_value_regex = r"[0-9]+"

    def select(self, *, tenant, user):
        status_filter = "all"
        if self.action == "list":
            query = TaskListQuerySerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            status_filter = query.validated_data["status"]
        return selectors.task_list(user=user, status=status_filter)

    @extend_schema(request=TaskWriteSerializer, responses={201: TaskSerializer})
    @idempotent
    def create(self, request):
        data = TaskWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        task = todos.task_create(
            user=request.user,
            title=data.validated_data.get("title", ""),
            completed=data.validated_data.get("completed", False),
        )
        return Response(TaskSerializer(task).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TaskWriteSerializer, responses=TaskSerializer)
    def update(self, request, pk=None, partial=False):
        data = TaskWriteSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        task = todos.task_update(task=self.get_object(), user=request.user, **data.validated_data)
        return Response(TaskSerializer(task).data)

    @extend_schema(request=TaskWriteSerializer, responses=TaskSerializer)
    def partial_update(self, request, pk=None):
        return self.update(request, pk=pk, partial=True)

    def perform_destroy(self, instance):
        todos.task_delete(task=instance, user=self.request.user)
