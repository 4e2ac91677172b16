import threading

import pytest
from django.db import connection, transaction

from conversations.models import Conversation, Message
from conversations.services import message_create, message_send
from tests.accounts.factories import UserFactory
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
