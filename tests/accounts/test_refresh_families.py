"""Refresh token rotation with reuse detection (OAuth 2.0 Security BCP): a rotated refresh
token presented again revokes every refresh token of its login (its family)."""

import pytest
from rest_framework.test import APIClient

from audits.models import AuditRecord
from tests.accounts.factories import PASSWORD, UserFactory
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db


def login(email: str) -> dict:
    response = APIClient().post("/api/v1/auth/token", {"email": email, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def refresh(token: str):
    return APIClient().post("/api/v1/auth/token/refresh", {"refresh": token}, format="json")


def me(access: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.get("/api/v1/auth/me")


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family():
    user = UserFactory(email="victim@example.com")
    a = login("victim@example.com")
    b = refresh(a["refresh"]).json()
    c = refresh(b["refresh"]).json()
    assert c["refresh"] not in (a["refresh"], b["refresh"])

    reused = refresh(a["refresh"])

    assert_error(reused, 401, "token_not_valid")
    # The newest token of the chain, which the thief (or the user) holds, is dead too.
    assert_error(refresh(c["refresh"]), 401, "token_not_valid")
    assert_error(refresh(b["refresh"]), 401, "token_not_valid")
    # Each presentation of a spent token is recorded; the first one revoked c (a and b
    # were spent already), the later ones found nothing left to revoke.
    records = list(AuditRecord.objects.filter(action="auth.refresh_reused").order_by("id"))
    assert [r.details["revoked_tokens"] for r in records] == [1, 0, 0]
    assert {(r.tenant_id, r.actor_id, r.resource_id) for r in records} == {(user.tenant_id, user.pk, str(user.pk))}
    # Access tokens are not checked against the blacklist: they run out (10 minutes).
    assert me(c["access"]).status_code == 200


def test_reuse_revokes_only_its_own_family():
    UserFactory(email="two-devices@example.com")
    laptop = login("two-devices@example.com")
    phone = login("two-devices@example.com")
    rotated = refresh(laptop["refresh"]).json()

    assert_error(refresh(laptop["refresh"]), 401, "token_not_valid")

    assert_error(refresh(rotated["refresh"]), 401, "token_not_valid")
    assert refresh(phone["refresh"]).status_code == 200


def test_rotation_keeps_working_without_reuse():
    UserFactory(email="steady@example.com")
    token = login("steady@example.com")["refresh"]

    for _ in range(4):
        response = refresh(token)
        assert response.status_code == 200, response.content
        token = response.json()["refresh"]

    assert not AuditRecord.objects.filter(action="auth.refresh_reused").exists()


def test_logout_revokes_the_family():
    UserFactory(email="leaving@example.com")
    first = login("leaving@example.com")
    current = refresh(first["refresh"]).json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {current['access']}")

    # Logging out with the login's spent token is refused; with the current one it works...
    assert_error(
        client.post("/api/v1/auth/logout", {"refresh": first["refresh"]}, format="json"), 401, "token_not_valid"
    )
    logout = client.post("/api/v1/auth/logout", {"refresh": current["refresh"]}, format="json")

    assert logout.status_code == 204
    assert_error(refresh(current["refresh"]), 401, "token_not_valid")
    assert AuditRecord.objects.get(action="auth.logout").details["family"]
    # A logged-out client that retries its refresh is refused, not reported as a thief.
    assert not AuditRecord.objects.filter(action="auth.refresh_reused").exists()
    from accounts.models import RefreshTokenFamily

    assert RefreshTokenFamily.objects.get().revoked_reason == "logout"


def test_logout_revokes_tokens_of_the_family_issued_after_the_presented_one():
    # A client that logs out with a stale copy of its refresh token still ends the login.
    UserFactory(email="stale@example.com")
    first = login("stale@example.com")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {first['access']}")
    from accounts.models import RefreshTokenFamily
    from accounts.services import tokens_for

    family = RefreshTokenFamily.objects.get()
    newer = tokens_for(family.user, family=family)

    assert client.post("/api/v1/auth/logout", {"refresh": first["refresh"]}, format="json").status_code == 204

    assert_error(refresh(newer.refresh), 401, "token_not_valid")
    family.refresh_from_db()
    assert family.revoked_reason == "logout"


def test_refresh_tokens_without_a_family_still_rotate_once():
    # Tokens issued before families existed carry no family claim: rotation works, and
    # a replay is refused (there is no family to revoke); the new pair starts a family.
    from rest_framework_simplejwt.tokens import RefreshToken

    user = UserFactory(email="legacy@example.com")
    legacy = str(RefreshToken.for_user(user))

    rotated = refresh(legacy)
    replayed = refresh(legacy)

    assert rotated.status_code == 200, rotated.content
    assert_error(replayed, 401, "token_not_valid")
    assert refresh(rotated.json()["refresh"]).status_code == 200


def test_flushing_expired_tokens_drops_their_empty_families():
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    from accounts.models import RefreshTokenFamily
    from accounts.tasks import flush_expired_tokens

    UserFactory(email="old@example.com")
    login("old@example.com")
    login("old@example.com")
    expired, live = RefreshTokenFamily.objects.order_by("created_at")
    long_ago = timezone.now() - timedelta(days=30)
    RefreshTokenFamily.objects.filter(pk=expired.pk).update(created_at=long_ago)
    OutstandingToken.objects.filter(family_membership__family=expired).update(expires_at=long_ago)

    flush_expired_tokens()

    assert list(RefreshTokenFamily.objects.values_list("pk", flat=True)) == [live.pk]
