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
