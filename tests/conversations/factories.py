import factory

from conversations.models import Conversation
from conversations.services import message_create
from tests.accounts.factories import UserFactory


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation
        skip_postgeneration_save = True

    owner = factory.SubFactory(UserFactory)
    tenant = factory.SelfAttribute("owner.tenant")
    title = factory.Sequence(lambda n: f"Conversation {n}")

    @factory.post_generation
    def with_owner_participant(self, create, extracted, **kwargs):
        if create:
            self.participants.add(self.owner)


def add_messages(conversation, count: int, role: str = "user"):
    return [
        message_create(conversation=conversation, role=role, content=f"message {i}", sender=conversation.owner)
        for i in range(count)
    ]
