"""The fast paths' checked access tokens (config/api/auth.py, ``validated_tokens``): a
token's signature and claims are checked once and trusted for the same bytes until its own
expiry, never after; what it names (the user, the tenant) is still checked every time."""

import datetime as dt

import pytest
from django.conf import settings as django_settings

from config.api.auth import JWTAuthentication, ValidatedTokens, validated_tokens
from tests.accounts.factories import UserFactory
from tests.helpers import assert_error, client_for

pytestmark = pytest.mark.django_db

ME = "/api/v1/auth/me"


def test_a_token_is_checked_once_for_its_repeated_requests(user, monkeypatch):
    checked = []
    original = JWTAuthentication.get_validated_token

    def counting(self, raw_token):
        checked.append(raw_token)
        return original(self, raw_token)

    monkeypatch.setattr(JWTAuthentication, "get_validated_token", counting)
    client = client_for(user)

    assert [client.get(ME).status_code for _ in range(3)] == [200, 200, 200]
    assert len(checked) == 1


def test_a_cached_token_is_refused_once_it_expires(user, frozen_clock):
    client = client_for(user)
    assert client.get(ME).status_code == 200

    frozen_clock.tick(django_settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"] + dt.timedelta(seconds=1))

    assert_error(client.get(ME), 401, "token_not_valid")


def test_what_the_token_names_is_still_checked_every_time(user):
    client = client_for(user)
    assert client.get(ME).status_code == 200
    user.is_active = False
    user.save(update_fields=["is_active"])

    assert_error(client.get(ME), 401, "authentication_failed")


def test_another_token_of_the_same_user_is_checked_on_its_own():
    user = UserFactory()
    first, second = client_for(user), client_for(user)
    assert first.get(ME).status_code == 200
    second.credentials(HTTP_AUTHORIZATION="Bearer " + first._credentials["HTTP_AUTHORIZATION"][7:-2] + "xx")

    assert_error(second.get(ME), 401, "token_not_valid")


def test_entries_expire_with_the_token_and_are_bounded():
    now = [1000.0]
    tokens = ValidatedTokens(clock=lambda: now[0], max_entries=2)
    tokens.put(b"a", {"exp": 1001})
    tokens.put(b"b", {"exp": 2000})
    tokens.put(b"c", {"exp": 2000})
    tokens.put(b"no-exp", {})

    assert tokens.get(b"a") is None  # the oldest went first
    assert tokens.get(b"b") == {"exp": 2000} and tokens.get(b"no-exp") is None
    now[0] = 2000.0
    assert tokens.get(b"b") is None and tokens.get(b"c") is None


def test_the_shared_cache_starts_empty_in_each_test():
    assert validated_tokens.get(b"anything") is None
