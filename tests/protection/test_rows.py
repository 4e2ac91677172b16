"""The caller's read (config/api/auth.py ``load_user``, a ``config.rows.JoinedRead``): what
``select_related("tenant").get(...)`` read, in one query written once."""

import pytest
from rest_framework.exceptions import AuthenticationFailed

from accounts.models import User
from config.api.auth import JWTAuthentication
from tests.accounts.factories import UserFactory

pytestmark = pytest.mark.django_db


def _fields(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def test_the_caller_is_read_with_their_tenant_as_the_orm_reads_them(django_assert_num_queries):
    user = UserFactory()
    UserFactory(tenant=user.tenant)  # a colleague: not read
    expected = User.objects.select_related("tenant").get(pk=user.pk)

    with django_assert_num_queries(1):
        loaded = JWTAuthentication().load_user({"user_id": str(user.pk)})
        assert _fields(loaded.tenant) == _fields(expected.tenant)  # cached: no second query

    assert _fields(loaded) == _fields(expected)
    assert loaded._state.adding is False and loaded.tenant._state.adding is False


def test_an_unknown_caller_is_user_not_found():
    with pytest.raises(AuthenticationFailed) as refused:
        JWTAuthentication().load_user({"user_id": "987654321"})
    assert refused.value.get_codes() == "user_not_found"


def test_a_key_that_may_be_null_is_refused_when_the_read_is_declared():
    from chat.models import AgentRun
    from config.rows import JoinedRead

    nullable = next(f.name for f in AgentRun._meta.concrete_fields if f.is_relation and f.null)
    with pytest.raises(ValueError, match="may be null"):
        JoinedRead(AgentRun, nullable, where=lambda qn: "1 = 1")


def test_several_keys_are_joined_and_cached_as_select_related_leaves_them(django_assert_num_queries):
    # The hub's router reads a conversation's binding with its account and contact.
    from hub.models import ConversationBinding
    from hub.services.bindings import binding_create
    from hub.services.deliveries import _BINDING
    from tests.hub.conftest import connect

    user = UserFactory(role="owner")
    account = connect(user).account
    conversation = binding_create(user=user, account_id=account.pk, address="15550002222").conversation
    binding_create(user=user, account_id=account.pk, address="15550003333")  # another: not read
    expected = ConversationBinding.objects.select_related("account", "contact").get(conversation=conversation)

    with django_assert_num_queries(1):
        loaded = _BINDING.one([conversation.pk])
        assert _fields(loaded.account) == _fields(expected.account)
        assert _fields(loaded.contact) == _fields(expected.contact)

    assert _fields(loaded) == _fields(expected)
    assert _BINDING.one([987654321]) is None
