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


def _fields(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def test_conversation_get_reads_what_the_list_reads_with_the_owner_loaded(django_assert_num_queries):
    """conversation_get's own statement against the queryset it replaces: the same row
    (every field converted as the ORM converts it), the owner loaded, one query."""
    from config.core.errors import NotFound

    user = UserFactory()
    colleague = UserFactory(tenant=user.tenant)
    own = ConversationFactory(owner=user, metadata={"source": "crm", "n": [1, 2.5, None]}, title="Mine ✓")
    joined = ConversationFactory(owner=colleague)
    joined.participants.add(user)
    not_shared = ConversationFactory(owner=colleague)
    elsewhere = ConversationFactory()  # another tenant's
    for conversation in (own, joined):
        expected = selectors.conversation_list(tenant=user.tenant_id, user=user).get(pk=conversation.pk)
        with django_assert_num_queries(1):
            got = selectors.conversation_get(tenant=user.tenant, user=user, conversation_id=str(conversation.pk))
            assert _fields(got.owner) == _fields(expected.owner)  # cached: no second query
        assert _fields(got) == _fields(expected)
        assert got._state.adding is False and got._state.db == "default"
    assert selectors.conversation_get(tenant=user.tenant_id, user=user, conversation_id=own.pk).metadata == {
        "source": "crm",
        "n": [1, 2.5, None],
    }
    for refused in (not_shared.pk, elsewhere.pk, 10**9, "abc", None):
        with pytest.raises(NotFound):
            selectors.conversation_get(tenant=user.tenant_id, user=user, conversation_id=refused)
    with pytest.raises(NotFound):  # the right user, the wrong tenant
        selectors.conversation_get(tenant=elsewhere.tenant_id, user=user, conversation_id=own.pk)
    with pytest.raises(NotFound):
        selectors.conversation_get(tenant=None, user=user, conversation_id=own.pk)
    with pytest.raises(TypeError, match="user"):
        selectors.conversation_get(tenant=user.tenant_id, user=None, conversation_id=own.pk)
