import threading

import pytest
from django.db import connection, transaction

from audits.models import AuditRecord
from config.core.errors import ApplicationError, Forbidden, NotFound
from conversations.models import Conversation, Message
from conversations.services import (
    conversation_create,
    conversation_delete,
    conversation_update,
    message_create,
    message_read,
    message_send,
)
from tests.accounts.factories import TenantFactory, UserFactory
from tests.conversations.factories import ConversationFactory, add_messages

pytestmark = pytest.mark.django_db


def test_seq_starts_at_one_and_increments(user):
    conversation = ConversationFactory(owner=user)

    messages = add_messages(conversation, 3)

    assert [m.seq for m in messages] == [1, 2, 3]
    conversation.refresh_from_db()
    assert conversation.last_seq == 3


def test_rolled_back_insert_rolls_its_seq_back(user):
    conversation = ConversationFactory(owner=user)
    add_messages(conversation, 1)

    with pytest.raises(RuntimeError), transaction.atomic():
        message_create(conversation=conversation, role="user", content="doomed")
        raise RuntimeError("abort")
    after = message_create(conversation=conversation, role="user", content="kept")

    assert after.seq == 2
    assert list(Message.objects.values_list("seq", flat=True).order_by("seq")) == [1, 2]


def test_resending_a_client_message_id_returns_the_stored_message(user):
    conversation = ConversationFactory(owner=user)

    first, created = message_send(conversation=conversation, user=user, content="hi", client_message_id="c-1")
    again, created_again = message_send(conversation=conversation, user=user, content="hi", client_message_id="c-1")

    assert (created, created_again) == (True, False)
    assert first.pk == again.pk
    assert Message.objects.count() == 1


def test_create_adds_owner_and_participants_of_the_tenant(user):
    colleague = UserFactory(tenant=user.tenant)

    conversation = conversation_create(user=user, title="t", participant_ids=[colleague.id, user.id])

    assert set(conversation.participants.values_list("id", flat=True)) == {user.id, colleague.id}


def test_create_with_participants_outside_the_tenant_raises_and_creates_nothing(user):
    stranger = UserFactory(tenant=TenantFactory())
    colleague = UserFactory(tenant=user.tenant)

    with pytest.raises(ApplicationError) as raised:
        conversation_create(user=user, participant_ids=[colleague.id, stranger.id, 987654])

    assert raised.value.code == "validation_error"
    assert raised.value.details == {"participant_ids": [f"unknown user {stranger.id}", "unknown user 987654"]}
    assert Conversation.objects.count() == 0
    assert not AuditRecord.objects.filter(action="conversation.created").exists()


def test_participant_may_not_update_or_delete(tenant):
    owner = UserFactory(tenant=tenant, role="member")
    participant = UserFactory(tenant=tenant, role="member")
    conversation = ConversationFactory(owner=owner, title="Keep")
    conversation.participants.add(participant)

    with pytest.raises(Forbidden):
        conversation_update(conversation=conversation, user=participant, title="Changed")
    with pytest.raises(Forbidden):
        conversation_delete(conversation=conversation, user=participant)

    conversation.refresh_from_db()
    assert conversation.title == "Keep"


def test_message_read_marks_once_and_audits_once(user):
    conversation = ConversationFactory(owner=user)
    (message,) = add_messages(conversation, 1)

    first = message_read(user=user, conversation_id=conversation.id, message_id=message.id)
    again = message_read(user=user, conversation_id=str(conversation.id), message_id=str(message.id))

    assert first.status == again.status == Message.Status.READ
    assert AuditRecord.objects.filter(action="message.read", resource_id=str(message.id)).count() == 1


@pytest.mark.parametrize("message_id", ["nope", None, 0])
def test_message_read_with_bad_or_unknown_id_is_not_found(user, message_id):
    conversation = ConversationFactory(owner=user)

    with pytest.raises(NotFound):
        message_read(user=user, conversation_id=conversation.id, message_id=message_id)


def test_message_read_in_a_conversation_the_user_does_not_see_is_not_found(user):
    theirs = ConversationFactory(owner=UserFactory(tenant=user.tenant))
    (message,) = add_messages(theirs, 1)

    with pytest.raises(NotFound):
        message_read(user=user, conversation_id=theirs.id, message_id=message.id)

    message.refresh_from_db()
    assert message.status != Message.Status.READ


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_get_gapless_unique_seqs(real_stack):
    owner = UserFactory()
    conversation = ConversationFactory(owner=owner)
    writers, per_writer = 8, 10
    errors = []
    barrier = threading.Barrier(writers)

    def write():
        try:
            barrier.wait()
            for i in range(per_writer):
                message_create(conversation=Conversation.objects.get(pk=conversation.pk), role="user", content=f"m{i}")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    seqs = sorted(Message.objects.filter(conversation=conversation).values_list("seq", flat=True))
    assert seqs == list(range(1, writers * per_writer + 1))
    conversation.refresh_from_db()
    assert conversation.last_seq == writers * per_writer
