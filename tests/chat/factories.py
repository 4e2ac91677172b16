import factory

from chat.models import AgentRun, Task
from conversations.models import Message
from conversations.services import message_create
from tests.accounts.factories import UserFactory
from tests.conversations.factories import ConversationFactory


class TaskFactory(factory.django.DjangoModelFactory):
    """A to-do item of ``owner``, in the owner's tenant."""

    class Meta:
        model = Task

    owner = factory.SubFactory(UserFactory)
    tenant = factory.SelfAttribute("owner.tenant")
    title = factory.Sequence(lambda n: f"task {n}")


class AgentRunFactory(factory.django.DjangoModelFactory):
    """A run of the conversation owner's turn, queued by default. Its trigger message is
    stored through ``message_create`` (so it has the conversation's next ``seq``)."""

    class Meta:
        model = AgentRun

    conversation = factory.SubFactory(ConversationFactory)
    tenant = factory.SelfAttribute("conversation.tenant")
    user = factory.SelfAttribute("conversation.owner")
    trigger_message = factory.LazyAttribute(
        lambda run: message_create(
            conversation=run.conversation, role=Message.Role.USER, content="hello", sender=run.user
        )
    )
    provider = "local"
    model = "local-task-assistant"
    status = AgentRun.Status.QUEUED
