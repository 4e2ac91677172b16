"""``seed_demo``: a demo tenant with two users and a few conversations answered by the
offline agent, for trying the chat page and the admin. Idempotent: what exists is kept."""

from django.conf import settings
from django.db import transaction

from accounts import services as account_services
from accounts.models import User
from conversations import services as conversation_services
from conversations.models import Conversation, Message

from ..agent.providers.local import LocalProvider
from ..agent.runner import run_agent
from ..models import Task

DEMO_OWNER = "owner@demo.example"
DEMO_MEMBER = "member@demo.example"
DEMO_TENANT = "Demo"
# Each conversation: its title and what the user says, turn by turn.
DEMO_CONVERSATIONS = [
    ("Groceries", ["hello", "add a task to buy milk", "add a task to buy bread", "what are my tasks"]),
    ("Weekend", ["add a task to call grandma", "mark call grandma done"]),
    ("Help", ["help"]),
]


def _turn(*, conversation: Conversation, user: User, content: str) -> int:
    """The user's message and the offline agent's answer (its tools act on the user's
    tasks). Always the local provider: seeding never calls a remote model."""
    conversation_services.message_send(conversation=conversation, user=user, content=content)
    history = [
        {"role": role, "content": text}
        for role, text in conversation.messages.filter(role__in=["user", "assistant"])
        .order_by("seq")
        .values_list("role", "content")
    ]
    result = run_agent(
        provider=LocalProvider(),
        user=user,
        history=history,
        emit=lambda *_: None,
        max_rounds=settings.AGENT_MAX_TOOL_ROUNDS,
    )
    conversation_services.message_create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content=result.content,
        tool_calls=result.tool_calls,
        event="message.completed",
    )
    return 2


@transaction.atomic
def demo_seed(*, password: str) -> dict:
    """Creates what is missing of the demo: the tenant and its owner (``DEMO_OWNER``), a
    member (``DEMO_MEMBER``), both with ``password`` when created, and the conversations of
    ``DEMO_CONVERSATIONS`` (by title). Returns what it created (all zero the second time)."""
    created = {"tenants": 0, "users": 0, "conversations": 0, "messages": 0, "tasks": 0}
    tasks_before = Task.objects.filter(owner__email__in=[DEMO_OWNER, DEMO_MEMBER]).count()
    owner = User.objects.filter(email=DEMO_OWNER).select_related("tenant").first()
    if owner is None:
        owner, _tenant = account_services.tenant_register(
            email=DEMO_OWNER, password=password, display_name="Demo Owner", tenant_name=DEMO_TENANT
        )
        created["tenants"] += 1
        created["users"] += 1
    member = User.objects.filter(email=DEMO_MEMBER).first()
    if member is None:
        member = account_services.user_add(
            actor=owner, email=DEMO_MEMBER, password=password, display_name="Demo Member", role=User.Role.MEMBER
        )
        created["users"] += 1
    for title, lines in DEMO_CONVERSATIONS:
        if Conversation.objects.filter(tenant_id=owner.tenant_id, owner=owner, title=title).exists():
            continue
        conversation = conversation_services.conversation_create(user=owner, title=title, participant_ids=[member.pk])
        created["conversations"] += 1
        for line in lines:
            created["messages"] += _turn(conversation=conversation, user=owner, content=line)
    created["tasks"] = Task.objects.filter(owner__email__in=[DEMO_OWNER, DEMO_MEMBER]).count() - tasks_before
    return created
