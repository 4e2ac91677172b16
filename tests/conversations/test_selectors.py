"""Selectors name their scope: a conversation list is always some user's."""

import pytest

from conversations import selectors
from tests.accounts.factories import UserFactory
from tests.conversations.factories import ConversationFactory

pytestmark = pytest.mark.django_db


def test_conversation_list_without_a_user_is_refused_not_widened_to_the_tenant():
    stranger_conversation = ConversationFactory()
    tenant = stranger_conversation.tenant

    with pytest.raises(TypeError, match="user"):
        selectors.conversation_list(tenant=tenant, user=None)


def test_conversation_list_is_the_users_own_and_joined_conversations_only():
    user = UserFactory()
    own = ConversationFactory(owner=user)
    joined = ConversationFactory(owner=UserFactory(tenant=user.tenant))
    joined.participants.add(user)
    ConversationFactory(owner=UserFactory(tenant=user.tenant))  # a colleague's, not shared

    listed = selectors.conversation_list(tenant=user.tenant_id, user=user)

    assert sorted(c.pk for c in listed) == sorted([own.pk, joined.pk])
