"""Services behind the admin and the operator's commands: participants, retention."""

from datetime import timedelta

import pytest
from django.utils import timezone

from audits.models import AuditRecord
from config.core.errors import ApplicationError, Forbidden
from conversations import services
from conversations.models import Conversation
from tests.accounts.factories import UserFactory
from tests.conversations.factories import ConversationFactory, add_messages

pytestmark = pytest.mark.django_db


def test_participants_must_be_users_of_the_conversation_tenant():
    conversation = ConversationFactory()
    stranger = UserFactory()

    with pytest.raises(ApplicationError) as refused:
        services.conversation_participants_set(
            conversation=conversation, user=conversation.owner, participant_ids=[stranger.pk]
        )

    assert refused.value.details == {"participant_ids": [f"unknown user {stranger.pk}"]}
    assert list(conversation.participants.values_list("pk", flat=True)) == [conversation.owner_id]
    assert not AuditRecord.objects.filter(action="conversation.participants_changed").exists()


def test_participants_change_is_audited_once_and_only_when_something_changed():
    conversation = ConversationFactory()
    colleague = UserFactory(tenant=conversation.tenant)

    for _ in range(2):
        services.conversation_participants_set(
            conversation=conversation, user=conversation.owner, participant_ids=[colleague.pk]
        )

    assert set(conversation.participants.values_list("pk", flat=True)) == {conversation.owner_id, colleague.pk}
    assert AuditRecord.objects.filter(action="conversation.participants_changed").count() == 1


def test_a_member_who_is_not_the_owner_cannot_change_participants():
    conversation = ConversationFactory()
    member = UserFactory(tenant=conversation.tenant, role="member")

    with pytest.raises(Forbidden):
        services.conversation_participants_set(conversation=conversation, user=member, participant_ids=[member.pk])


def test_purge_keeps_what_was_active_after_the_cutoff_and_counts_in_a_dry_run():
    now = timezone.now()
    old, fresh = ConversationFactory(), ConversationFactory()
    add_messages(old, 3)
    Conversation.objects.filter(pk=old.pk).update(updated_at=now - timedelta(days=10))

    dry = services.conversations_purge(older_than=timedelta(days=7), dry_run=True, now=now)
    done = services.conversations_purge(older_than=timedelta(days=7), now=now)

    assert (dry["conversations"], dry["messages"], dry["deleted"]) == (1, 3, 0)
    assert done["deleted"] == 1
    assert list(Conversation.objects.values_list("pk", flat=True)) == [fresh.pk]
    record = AuditRecord.objects.get(action="conversation.purged")
    assert (record.tenant_id, record.details["conversation_ids"], record.details["messages"]) == (
        old.tenant_id,
        [old.pk],
        3,
    )
