import datetime as dt
import io
import threading

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time
from prometheus_client import REGISTRY

from accounts.models import Tenant, User
from config.api.models import IdempotencyKey
from tests.accounts.factories import TenantFactory, UserFactory
from tests.helpers import client_for

pytestmark = pytest.mark.django_db

USERS = "/api/v1/users"
WIDGETS = "/api/v1/test/widgets"
NEW_USER = {"email": "grace@example.com", "password": "cobol-compiler-1959", "display_name": "Grace"}


def post(client, path, body, key):
    return client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def replays() -> float:
    return REGISTRY.get_sample_value("idempotent_replays_total") or 0.0


def test_same_key_and_body_replays_the_first_response_and_creates_nothing(auth_api):
    before = replays()
    first = post(auth_api, USERS, NEW_USER, "key-1")

    second = post(auth_api, USERS, NEW_USER, "key-1")

    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first
    assert second.status_code == 201
    assert second.content == first.content
    assert second["Content-Type"] == first["Content-Type"]
    assert second["Idempotent-Replayed"] == "true"
    assert second["X-Request-ID"] != first["X-Request-ID"]
    assert User.objects.filter(email="grace@example.com").count() == 1
    assert replays() == before + 1


def test_a_claim_and_a_replay_cost_one_statement_each_on_the_key_and_no_rollback(auth_api):
    # The claim is one INSERT ... ON CONFLICT DO NOTHING RETURNING: a first request has no
    # SAVEPOINT/RELEASE around it, a replay no failing INSERT rolled back, only the claim
    # attempt and the SELECT of the stored response.
    with CaptureQueriesContext(connection) as first_queries:
        first = post(auth_api, USERS, NEW_USER, "key-q")
    with CaptureQueriesContext(connection) as replay_queries:
        second = post(auth_api, USERS, NEW_USER, "key-q")

    assert first.status_code == 201 and second["Idempotent-Replayed"] == "true"
    first_sql = [query["sql"] for query in first_queries.captured_queries]
    replay_sql = [query["sql"] for query in replay_queries.captured_queries]
    claims = [sql for sql in first_sql if "idempotencykey" in sql and sql.startswith("INSERT")]
    assert len(claims) == 1 and "ON CONFLICT DO NOTHING" in claims[0]
    on_keys = [sql for sql in replay_sql if "idempotencykey" in sql]
    assert [sql.split()[0] for sql in on_keys] == ["INSERT", "SELECT"]
    assert not any(sql.startswith(("SAVEPOINT", "ROLLBACK")) for sql in replay_sql)
    assert IdempotencyKey.objects.filter(key="key-q").count() == 1


def test_both_path_spellings_are_one_request(auth_api):
    first = post(auth_api, USERS, NEW_USER, "key-1")

    second = post(auth_api, USERS + "/", NEW_USER, "key-1")

    assert second.status_code == 201 and second["Idempotent-Replayed"] == "true"
    assert second.content == first.content


def test_same_key_with_another_body_is_422_and_creates_nothing(auth_api):
    post(auth_api, USERS, NEW_USER, "key-1")

    response = post(auth_api, USERS, {**NEW_USER, "email": "other@example.com"}, "key-1")

    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "idempotency_key_mismatch"
    assert body["error"]["request_id"] == response["X-Request-ID"]
    assert not User.objects.filter(email="other@example.com").exists()


@pytest.mark.urls("tests.protection.urls")
def test_same_key_on_another_endpoint_is_422(auth_api):
    post(auth_api, USERS, NEW_USER, "key-1")

    response = post(auth_api, WIDGETS, NEW_USER, "key-1")

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_mismatch"


@pytest.mark.urls("tests.protection.urls")
def test_replay_carries_status_body_and_location(auth_api):
    first = post(auth_api, WIDGETS, {"name": "Acme"}, "w-1")

    second = post(auth_api, WIDGETS, {"name": "Acme"}, "w-1")

    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second["Location"] == first["Location"] == f"{WIDGETS}/{first.json()['id']}"
    assert Tenant.objects.filter(name="Acme").count() == 1


@pytest.mark.urls("tests.protection.urls")
def test_keys_are_scoped_per_user_and_tenant(tenant, auth_api):
    colleague = client_for(UserFactory(tenant=tenant, role="owner"))
    stranger = client_for(UserFactory(tenant=TenantFactory(), role="owner"))

    responses = [post(client, WIDGETS, {"name": "Acme"}, "shared") for client in (auth_api, colleague, stranger)]

    assert [r.status_code for r in responses] == [201, 201, 201]
    assert not any("Idempotent-Replayed" in r for r in responses)
    assert Tenant.objects.filter(name="Acme").count() == 3


@pytest.mark.urls("tests.protection.urls")
def test_without_a_key_nothing_is_deduplicated(auth_api):
    auth_api.post(WIDGETS, {"name": "Acme"}, format="json")
    auth_api.post(WIDGETS, {"name": "Acme"}, format="json")

    assert Tenant.objects.filter(name="Acme").count() == 2
    assert IdempotencyKey.objects.count() == 0


@pytest.mark.urls("tests.protection.urls")
def test_an_error_releases_the_key_so_a_corrected_retry_runs(auth_api):
    invalid = post(auth_api, WIDGETS, {"name": ""}, "w-1")

    corrected = post(auth_api, WIDGETS, {"name": "Acme"}, "w-1")

    assert invalid.status_code == 400
    assert corrected.status_code == 201 and "Idempotent-Replayed" not in corrected
    assert Tenant.objects.filter(name="Acme").count() == 1


@pytest.mark.urls("tests.protection.urls")
def test_a_server_error_releases_the_key(user):
    from rest_framework.test import APIClient

    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=client_for(user)._credentials["HTTP_AUTHORIZATION"])

    response = post(client, WIDGETS, {"name": "Acme", "explode": True}, "w-1")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert IdempotencyKey.objects.count() == 0


def test_service_errors_are_not_stored(auth_api):
    UserFactory(email="grace@example.com")

    taken = post(auth_api, USERS, NEW_USER, "key-1")

    assert taken.status_code == 409
    assert IdempotencyKey.objects.count() == 0


@pytest.mark.urls("tests.protection.urls")
def test_a_duplicate_while_the_first_runs_is_409_with_retry_after(user, settings):
    settings.IDEMPOTENCY_WAIT_SECONDS = 0
    client = client_for(user)
    # Claim the key the way an in-flight first request does, then send the duplicate.
    first = post(client, WIDGETS, {"name": "Acme"}, "w-1")
    IdempotencyKey.objects.filter(key="w-1").update(state=IdempotencyKey.State.IN_PROGRESS)

    duplicate = post(client, WIDGETS, {"name": "Acme"}, "w-1")

    assert first.status_code == 201
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "idempotency_key_in_use"
    assert duplicate["Retry-After"] == "1"
    assert Tenant.objects.filter(name="Acme").count() == 1


@pytest.mark.urls("tests.protection.urls")
def test_a_stale_unfinished_key_is_taken_over(user, settings):
    client = client_for(user)
    post(client, WIDGETS, {"name": "Acme"}, "w-1")
    IdempotencyKey.objects.filter(key="w-1").update(
        state=IdempotencyKey.State.IN_PROGRESS,
        locked_at=timezone.now() - dt.timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS + 1),
    )

    retry = post(client, WIDGETS, {"name": "Acme"}, "w-1")
    replay = post(client, WIDGETS, {"name": "Acme"}, "w-1")

    assert retry.status_code == 201 and "Idempotent-Replayed" not in retry
    assert replay["Idempotent-Replayed"] == "true" and replay.content == retry.content
    assert Tenant.objects.filter(name="Acme").count() == 2


@pytest.mark.urls("tests.protection.urls")
@pytest.mark.parametrize("ttl_hours", [24, 1])
def test_keys_expire_after_the_configured_ttl(user, settings, ttl_hours):
    settings.IDEMPOTENCY_TTL_HOURS = ttl_hours
    with freeze_time(dt.datetime.now(dt.UTC)) as frozen:
        post(client_for(user), WIDGETS, {"name": "Acme"}, "w-1")
        frozen.tick(dt.timedelta(hours=ttl_hours) - dt.timedelta(seconds=1))
        still_kept = post(client_for(user), WIDGETS, {"name": "Acme"}, "w-1")
        frozen.tick(dt.timedelta(seconds=1))

        after_expiry = post(client_for(user), WIDGETS, {"name": "Acme"}, "w-1")

    assert still_kept["Idempotent-Replayed"] == "true"
    assert after_expiry.status_code == 201 and "Idempotent-Replayed" not in after_expiry
    assert Tenant.objects.filter(name="Acme").count() == 2


@pytest.mark.urls("tests.protection.urls")
def test_purge_command_deletes_only_expired_keys(auth_api):
    post(auth_api, WIDGETS, {"name": "Old"}, "old")
    post(auth_api, WIDGETS, {"name": "New"}, "new")
    IdempotencyKey.objects.filter(key="old").update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    out = io.StringIO()

    call_command("purge_idempotency_keys", stdout=out)

    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
    assert "Deleted 1 expired" in out.getvalue()


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
def test_a_malformed_key_is_400(auth_api, key):
    response = auth_api.post(USERS, NEW_USER, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
    assert not User.objects.filter(email="grace@example.com").exists()


def test_the_schema_documents_the_header_on_creating_endpoints(api):
    schema = api.get("/api/schema/").content.decode()

    assert "Idempotency-Key" in schema


@pytest.mark.urls("tests.protection.urls")
@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_create_exactly_one_row(real_stack, settings):
    owner = UserFactory(role="owner")
    # Below the per-process pool (DB_POOL_MAX_SIZE, 10) minus the test's own connection.
    threads_count = min(8, settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"] - 2)
    clients = [client_for(owner) for _ in range(threads_count)]  # tokens minted up front
    barrier = threading.Barrier(threads_count, timeout=30)
    results = [None] * threads_count

    def send(index):
        try:
            barrier.wait()
            results[index] = post(clients[index], WIDGETS, {"name": "Race"}, "race-key")
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert Tenant.objects.filter(name="Race").count() == 1
    assert all(r is not None for r in results)
    originals = [r for r in results if r.status_code == 201 and "Idempotent-Replayed" not in r]
    replayed = [r for r in results if r.status_code == 201 and r.get("Idempotent-Replayed") == "true"]
    conflicts = [r for r in results if r.status_code == 409]
    assert len(originals) == 1
    assert len(replayed) + len(conflicts) == threads_count - 1
    assert all(r.content == originals[0].content for r in replayed)
    assert all(r.json()["error"]["code"] == "idempotency_key_in_use" for r in conflicts)


def _conversation_for(user):
    from tests.conversations.factories import ConversationFactory

    return ConversationFactory(owner=user)


@pytest.mark.parametrize(
    ("path", "body", "count"),
    [
        ("/api/v1/conversations", {"title": "Plans"}, lambda u: _model("conversations.Conversation").count()),
        ("/api/v1/tasks", {"title": "Buy milk"}, lambda u: _model("chat.Task").count()),
        ("/api/v1/audits", {"action": "custom.report.viewed"}, lambda u: _custom_audits()),
        ("/api/v1/chat", {"message": "add a task to buy bread"}, lambda u: _model("conversations.Message").count()),
        (
            "/api/{user_id}/chat",
            {"message": "add a task to buy eggs"},
            lambda u: _model("conversations.Message").count(),
        ),
        (
            "/api/v1/conversations/{conversation_id}/messages",
            {"content": "hello there"},
            lambda u: _model("conversations.Message").count(),
        ),
    ],
    ids=["conversations", "tasks", "audits", "chat", "legacy-chat", "messages"],
)
def test_every_creating_endpoint_replays_and_creates_nothing_twice(user, path, body, count):
    client = client_for(user)
    path = path.format(user_id=user.pk, conversation_id=_conversation_for(user).pk)
    first = post(client, path, body, "create-once")
    created = count(user)

    second = post(client, path, body, "create-once")
    mismatch = post(client, path, {**body, "extra": 1}, "create-once")

    assert 200 <= first.status_code < 300, first.content
    assert (second.status_code, second.content, second["Idempotent-Replayed"]) == (
        first.status_code,
        first.content,
        "true",
    )
    assert mismatch.status_code == 422
    assert count(user) == created


def _model(label):
    from django.apps import apps

    return apps.get_model(label).objects


def _custom_audits():
    return _model("audits.AuditRecord").filter(action__startswith="custom.").count()


@pytest.mark.urls("tests.protection.urls")
def test_the_hourly_purge_task_deletes_expired_keys(auth_api, settings):
    from config.api.tasks import purge_idempotency_keys

    post(auth_api, WIDGETS, {"name": "Old"}, "old")
    IdempotencyKey.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))

    deleted = purge_idempotency_keys.delay().get()

    assert deleted == 1 and not IdempotencyKey.objects.exists()
    assert settings.CELERY_BEAT_SCHEDULE["purge-idempotency-keys"]["task"] == purge_idempotency_keys.name
