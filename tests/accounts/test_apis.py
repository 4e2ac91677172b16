import json

import pytest
from django.core.serializers.json import DjangoJSONEncoder

from accounts.models import Tenant, User
from accounts.serializers import MeSerializer
from tests.accounts.factories import PASSWORD, TenantFactory, UserFactory
from tests.helpers import assert_error, client_for

pytestmark = pytest.mark.django_db

REGISTER = {
    "email": "Ada@Example.com",
    "password": "analytical-engine-1843",
    "display_name": "Ada",
    "tenant_name": "Difference Co",
}


def test_register_creates_tenant_and_owner_and_returns_tokens(api):
    response = api.post("/api/v1/auth/register", REGISTER, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["user"]["email"] == "ada@example.com"
    assert body["user"]["role"] == "owner"
    assert body["tenant"]["name"] == "Difference Co"
    assert body["tenant"]["tier"] == "free"
    assert body["access"] and body["refresh"]
    user = User.objects.get(email="ada@example.com")
    assert user.tenant.slug == "difference-co"
    assert user.password.startswith("argon2")


def test_register_answers_with_and_without_trailing_slash(api):
    first = api.post("/api/v1/auth/register/", REGISTER, format="json")
    second = api.post("/api/v1/auth/register", {**REGISTER, "email": "b@example.com"}, format="json")

    assert first.status_code == 201
    assert second.status_code == 201
    assert Tenant.objects.filter(name="Difference Co").count() == 2
    assert {t.slug for t in Tenant.objects.all()} == {"difference-co", "difference-co-2"}


def test_register_duplicate_email_is_409_and_creates_nothing(api):
    api.post("/api/v1/auth/register", REGISTER, format="json")

    response = api.post("/api/v1/auth/register", {**REGISTER, "email": "ADA@example.com"}, format="json")

    assert_error(response, 409, "email_taken")
    assert User.objects.count() == 1
    assert Tenant.objects.count() == 1


@pytest.mark.parametrize("password", ["short1", "password123", "12345678901", "ada@example.com"])
def test_register_weak_password_is_400_and_creates_nothing(api, password):
    response = api.post("/api/v1/auth/register", {**REGISTER, "password": password}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert error["details"]["password"]
    assert User.objects.count() == 0
    assert Tenant.objects.count() == 0


def test_register_missing_fields_is_400_with_field_details(api):
    response = api.post("/api/v1/auth/register", {"email": "not-an-email"}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert set(error["details"]) == {"email", "password", "display_name", "tenant_name"}


def test_malformed_json_is_400_parse_error(api):
    response = api.post("/api/v1/auth/register", "{nope", content_type="application/json")

    assert_error(response, 400, "parse_error")


def test_login_returns_tokens_that_authenticate_me(api):
    user = UserFactory(email="grace@example.com")

    response = api.post("/api/v1/auth/token", {"email": "Grace@example.com", "password": PASSWORD}, format="json")

    assert response.status_code == 200, response.content
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    me = api.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json()["user"]["id"] == user.id
    assert me.json()["tenant"]["id"] == user.tenant_id


def test_me_body_is_the_me_serializers_field_for_field(user):
    # The view answers with accounts.serializers.me_body (a plain dict); MeSerializer stays
    # the schema: both give the same JSON, keys in the same order.
    response = client_for(user).get("/api/v1/auth/me")

    assert response.status_code == 200
    expected = json.loads(json.dumps(MeSerializer({"user": user, "tenant": user.tenant}).data, cls=DjangoJSONEncoder))
    assert response.json() == expected
    assert [list(part) for part in response.json().values()] == [list(part) for part in expected.values()]
    assert response.json()["user"]["email"] == user.email and response.json()["tenant"]["tier"] == user.tenant.tier


def test_login_wrong_password_is_401(api):
    UserFactory(email="grace@example.com")

    response = api.post("/api/v1/auth/token", {"email": "grace@example.com", "password": "wrong"}, format="json")

    assert_error(response, 401, "invalid_credentials")


def test_login_inactive_user_is_401(api):
    UserFactory(email="gone@example.com", is_active=False)

    response = api.post("/api/v1/auth/token", {"email": "gone@example.com", "password": PASSWORD}, format="json")

    assert_error(response, 401, "invalid_credentials")


def _login(api, email):
    return api.post("/api/v1/auth/token", {"email": email, "password": PASSWORD}, format="json").json()


def test_refresh_rotates_and_old_refresh_is_refused(api):
    UserFactory(email="r@example.com")
    tokens = _login(api, "r@example.com")

    rotated = api.post("/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    replayed = api.post("/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")

    assert rotated.status_code == 200
    assert rotated.json()["refresh"] != tokens["refresh"]
    assert_error(replayed, 401, "token_not_valid")
    # The replay was reuse: the whole family is revoked, the rotated token too
    # (tests/accounts/test_refresh_families.py).
    again = api.post("/api/v1/auth/token/refresh", {"refresh": rotated.json()["refresh"]}, format="json")
    assert_error(again, 401, "token_not_valid")


def test_logout_blacklists_refresh_token(api):
    UserFactory(email="l@example.com")
    tokens = _login(api, "l@example.com")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")

    response = api.post("/api/v1/auth/logout", {"refresh": tokens["refresh"]}, format="json")

    assert response.status_code == 204
    api.credentials()
    refused = api.post("/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert_error(refused, 401, "token_not_valid")


def test_logout_with_someone_elses_refresh_is_400(api):
    UserFactory(email="a@example.com")
    UserFactory(email="b@example.com")
    mine = _login(api, "a@example.com")
    theirs = _login(api, "b@example.com")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {mine['access']}")

    response = api.post("/api/v1/auth/logout", {"refresh": theirs["refresh"]}, format="json")

    assert_error(response, 400, "token_mismatch")
    api.credentials()
    assert api.post("/api/v1/auth/token/refresh", {"refresh": theirs["refresh"]}, format="json").status_code == 200


def test_refresh_with_garbage_is_401(api):
    assert_error(api.post("/api/v1/auth/token/refresh", {"refresh": "x.y.z"}, format="json"), 401, "token_not_valid")


def test_me_without_token_is_401(api):
    assert_error(api.get("/api/v1/auth/me"), 401, "not_authenticated")


def test_me_with_bad_token_is_401(api):
    api.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    error = assert_error(api.get("/api/v1/auth/me"), 401, "token_not_valid")
    assert error["message"]


def test_owner_lists_and_adds_users_of_own_tenant_only(user):
    other = UserFactory(tenant=TenantFactory())
    colleague = UserFactory(tenant=user.tenant)
    client = client_for(user)

    listed = client.get("/api/v1/users")
    created = client.post(
        "/api/v1/users/",
        {"email": "new@example.com", "password": "a-decent-passphrase", "display_name": "New", "role": "admin"},
        format="json",
    )

    assert listed.status_code == 200
    ids = {row["id"] for row in listed.json()["results"]}
    assert ids == {user.id, colleague.id}
    assert other.id not in ids
    assert set(listed.json()) == {"results", "next", "previous"}
    assert created.status_code == 201, created.content
    new = User.objects.get(email="new@example.com")
    assert (new.tenant_id, new.role) == (user.tenant_id, "admin")


def test_member_cannot_list_or_add_users(tenant):
    member = UserFactory(tenant=tenant, role="member")
    client = client_for(member)

    assert_error(client.get("/api/v1/users"), 403, "permission_denied")
    response = client.post(
        "/api/v1/users",
        {"email": "x@example.com", "password": "a-decent-passphrase", "display_name": "X"},
        format="json",
    )
    assert_error(response, 403, "permission_denied")
    assert not User.objects.filter(email="x@example.com").exists()


def test_admin_cannot_add_an_owner(tenant):
    admin = UserFactory(tenant=tenant, role="admin")

    response = client_for(admin).post(
        "/api/v1/users",
        {"email": "o@example.com", "password": "a-decent-passphrase", "display_name": "O", "role": "owner"},
        format="json",
    )

    assert_error(response, 403, "permission_denied")
    assert not User.objects.filter(email="o@example.com").exists()
    assert User.objects.filter(tenant=tenant).count() == 1


def test_other_tenants_user_is_404(user):
    stranger = UserFactory(tenant=TenantFactory())

    response = client_for(user).get(f"/api/v1/users/{stranger.id}")

    assert_error(response, 404, "not_found")
    assert client_for(user).get(f"/api/v1/users/{user.id}/").status_code == 200


def test_unknown_api_path_is_404_envelope_not_html(api):
    response = api.get("/api/v1/nowhere")

    assert response["Content-Type"].startswith("application/json")
    assert_error(response, 404, "not_found")


def test_wrong_method_is_405_envelope(auth_api):
    response = auth_api.delete("/api/v1/auth/me")

    assert_error(response, 405, "method_not_allowed")


def test_request_id_is_echoed_or_generated(api):
    echoed = api.get("/health", HTTP_X_REQUEST_ID="abc-123")
    generated = api.get("/health")

    assert echoed["X-Request-ID"] == "abc-123"
    assert len(generated["X-Request-ID"]) == 32
