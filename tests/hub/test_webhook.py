"""Inbound webhooks: signed over the raw body, 401/404/400 storing nothing, platform
retries stored once, a new contact opens a conversation, the agent answers."""

import time

import pytest

from audits.models import AuditRecord
from chat.models import AgentRun
from conversations.models import Conversation, Message
from hub import platforms
from hub.models import ChannelAccount, ConversationBinding, Delivery, InboundMessage, MessageStatusChange
from hub.secrets import signature_for
from hub.services import inbound
from tests.helpers import assert_error

from .conftest import connect, signed_post

pytestmark = pytest.mark.django_db


def _whatsapp_text(account, *, mid="wamid.IN1", sender="447700900001", text="hello", at=None, name="Grace"):
    return platforms.whatsapp_message(
        phone_number_id=account.external_id,
        sender=sender,
        message_id=mid,
        text=text,
        timestamp=int(at if at is not None else time.time()),
        name=name,
    )


def _nothing_stored():
    return not (Message.objects.exists() or InboundMessage.objects.exists() or Conversation.objects.exists())


def test_a_new_contact_opens_a_conversation_and_the_agent_answers(api, whatsapp, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(api, "whatsapp", _whatsapp_text(whatsapp.account, text="hello"), whatsapp.secret)

    assert response.status_code == 200, response.content
    assert response.json() == {"messages": 1, "duplicates": 0, "statuses": 0}
    binding = ConversationBinding.objects.select_related("conversation", "contact").get()
    assert (binding.contact.address, binding.contact.name) == ("447700900001", "Grace")
    assert binding.conversation.channel == "whatsapp" and binding.conversation.owner == whatsapp.account.created_by
    inbound, reply = Message.objects.filter(conversation=binding.conversation).order_by("seq")
    assert (inbound.seq, inbound.role, inbound.content, inbound.status) == (1, "user", "hello", "delivered")
    assert not Delivery.objects.filter(message=inbound).exists()  # inbound is never routed back
    # The local agent answered, and its reply went out to the contact through the simulator.
    assert AgentRun.objects.get().status == "completed"
    assert (reply.seq, reply.role) == (2, "assistant")
    reply.refresh_from_db()
    assert reply.status == "read"  # report_read: delivered, then read, reported back signed
    assert AuditRecord.objects.filter(action="message.received", resource_id=str(inbound.pk)).exists()


def test_a_known_contact_continues_its_open_conversation(api, whatsapp, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        signed_post(api, "whatsapp", _whatsapp_text(whatsapp.account, mid="wamid.A"), whatsapp.secret)
        signed_post(api, "whatsapp", _whatsapp_text(whatsapp.account, mid="wamid.B", text="again"), whatsapp.secret)

    assert Conversation.objects.count() == 1
    assert Message.objects.filter(role="user").count() == 2


def test_agent_disabled_stores_the_message_without_a_run(api, user):
    quiet = connect(user, settings={"agent_enabled": False})

    signed_post(api, "whatsapp", _whatsapp_text(quiet.account), quiet.secret)

    assert Message.objects.count() == 1 and not AgentRun.objects.exists()


def test_a_duplicate_inbound_message_is_stored_once(api, whatsapp):
    payload = _whatsapp_text(whatsapp.account, mid="wamid.SAME")

    first = signed_post(api, "whatsapp", payload, whatsapp.secret)
    again = signed_post(api, "whatsapp", payload, whatsapp.secret)

    assert first.json()["messages"] == 1
    assert again.status_code == 200 and again.json() == {"messages": 0, "duplicates": 1, "statuses": 0}
    assert Message.objects.filter(role="user").count() == 1 and InboundMessage.objects.count() == 1


@pytest.mark.parametrize(
    "signature",
    [None, "", "sha256=" + "0" * 64, "sha1=abc", "garbage"],
    ids=["missing", "empty", "wrong", "other-algorithm", "garbage"],
)
def test_a_missing_or_bad_signature_is_401_and_stores_nothing(api, whatsapp, signature):
    payload = _whatsapp_text(whatsapp.account)

    response = signed_post(api, "whatsapp", payload, None, signature=signature)

    assert_error(response, 401, "invalid_signature")
    assert _nothing_stored()


def test_a_signature_with_another_accounts_secret_or_over_other_bytes_is_401(api, whatsapp, user):
    other = connect(user, external_id="15550002222")
    payload = _whatsapp_text(whatsapp.account)
    import json

    body = json.dumps(payload).encode()
    # Same JSON, other bytes (a re-serialised body): the signature is over the raw body.
    respaced = json.dumps(payload, indent=1).encode()

    wrong_secret = signed_post(api, "whatsapp", body, None, signature=signature_for(body, other.secret))
    other_bytes = signed_post(api, "whatsapp", respaced, None, signature=signature_for(body, whatsapp.secret))

    assert_error(wrong_secret, 401, "invalid_signature")
    assert_error(other_bytes, 401, "invalid_signature")
    assert _nothing_stored()


def test_unknown_channel_or_account_is_404(api, whatsapp):
    unknown_account = platforms.whatsapp_message(
        phone_number_id="999", sender="1", message_id="m", text="x", timestamp=int(time.time())
    )

    assert_error(signed_post(api, "telegram", {"entry": []}, whatsapp.secret), 404, "not_found")
    assert_error(signed_post(api, "whatsapp", unknown_account, whatsapp.secret), 404, "not_found")
    assert _nothing_stored()


def test_a_stale_timestamp_is_400_and_stores_nothing(api, whatsapp, settings):
    old = time.time() - settings.HUB_WEBHOOK_MAX_AGE_SECONDS - 5

    response = signed_post(api, "whatsapp", _whatsapp_text(whatsapp.account, at=old), whatsapp.secret)

    assert_error(response, 400, "stale_timestamp")
    assert _nothing_stored()


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", {"entry": []}, {"entry": [{"changes": [{"value": {}}]}]}, {"entry": ["x"]}],
    ids=["not-json", "list", "no-entries", "no-metadata", "entry-not-object"],
)
def test_a_malformed_payload_is_400(api, whatsapp, payload):
    response = signed_post(api, "whatsapp", payload, whatsapp.secret)

    assert_error(response, 400, "invalid_payload")
    assert _nothing_stored()


def test_instagram_messages_and_read_reports(api, instagram, django_capture_on_commit_callbacks):
    now = int(time.time())
    message = platforms.instagram_message(
        account_id=instagram.account.external_id, sender="6789", message_id="mid.IN", text="hi", timestamp=now
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(api, "instagram", message, instagram.secret)

    assert response.json()["messages"] == 1
    reply = Message.objects.get(role="assistant")
    reply.refresh_from_db()
    assert reply.status == "delivered"  # report_read is off for this account
    delivery = Delivery.objects.get(message=reply)
    assert delivery.external_id.startswith("mid.")
    read = platforms.instagram_report(
        account_id=instagram.account.external_id,
        recipient="6789",
        message_id=delivery.external_id,
        status="read",
        timestamp=now,
    )
    assert signed_post(api, "instagram", read, instagram.secret).json()["statuses"] == 1
    reply.refresh_from_db()
    assert reply.status == "read" and reply.read_at is not None


def _accepted_deliveries(auth_api, account, callbacks, count):
    """``count`` messages posted in one bound conversation, left ``accepted`` (their
    after-commit hand-over not run)."""
    conversation = auth_api.post(
        "/api/v1/conversations/",
        {"channel_account_id": account.pk, "contact": {"address": "447700900001"}},
        format="json",
    ).json()
    pending = []
    for n in range(count):
        with callbacks(execute=False):
            response = auth_api.post(
                f"/api/v1/conversations/{conversation['id']}/messages", {"content": f"m{n}"}, format="json"
            )
        pending.append(Delivery.objects.get(message_id=response.json()["message"]["id"]))
    return pending


def _statuses(account, reports, at=None):
    return platforms.whatsapp_statuses_batch(
        phone_number_id=account.external_id,
        reports=[(mid, "447700900001", status, int(at or time.time())) for mid, status in reports],
    )


def _history(delivery):
    return list(
        MessageStatusChange.objects.filter(message_id=delivery.message_id)
        .order_by("at", "id")
        .values_list("status", flat=True)
    )


def test_a_batched_notification_applies_each_report_forward_only_in_its_order(
    api, auth_api, whatsapp, django_capture_on_commit_callbacks
):
    first, second, third = _accepted_deliveries(auth_api, whatsapp.account, django_capture_on_commit_callbacks, 3)
    payload = _statuses(
        whatsapp.account,
        [
            (first.external_id, "delivered"),
            (first.external_id, "read"),
            (second.external_id, "read"),
            (second.external_id, "delivered"),  # backwards after read: nothing
            ("wamid.unknown", "delivered"),  # not ours: nothing
            (third.external_id, "deleted"),  # a status we do not track: nothing
        ],
    )

    with django_capture_on_commit_callbacks(execute=True) as published:
        response = signed_post(api, "whatsapp", payload, whatsapp.secret)

    assert response.status_code == 200
    assert response.json() == {"messages": 0, "duplicates": 0, "statuses": 3}
    assert response["Allow"] == "POST, OPTIONS"
    assert [_history(d) for d in (first, second, third)] == [
        ["accepted", "delivered", "read"],
        ["accepted", "read"],
        ["accepted"],
    ]
    assert Message.objects.get(pk=first.message_id).read_at is not None
    assert len(published) == 3  # one message.status event a move, after commit


def test_another_accounts_message_ids_move_nothing(api, auth_api, whatsapp, user, django_capture_on_commit_callbacks):
    (delivery,) = _accepted_deliveries(auth_api, whatsapp.account, django_capture_on_commit_callbacks, 1)
    other = connect(user, external_id="15550002222")

    response = signed_post(
        api, "whatsapp", _statuses(other.account, [(delivery.external_id, "delivered")]), other.secret
    )

    assert response.json()["statuses"] == 0
    assert _history(delivery) == ["accepted"]


def test_a_known_account_still_refuses_a_bad_signature_or_a_stale_report_and_stores_nothing(
    api, auth_api, whatsapp, settings, django_capture_on_commit_callbacks
):
    first, second = _accepted_deliveries(auth_api, whatsapp.account, django_capture_on_commit_callbacks, 2)
    signed_post(api, "whatsapp", _statuses(whatsapp.account, [(first.external_id, "delivered")]), whatsapp.secret)
    assert inbound.webhook_keys.get("whatsapp", whatsapp.account.external_id) is not None  # kept
    report = _statuses(whatsapp.account, [(second.external_id, "delivered")])
    stale = _statuses(
        whatsapp.account, [(second.external_id, "delivered")], at=time.time() - settings.HUB_WEBHOOK_MAX_AGE_SECONDS - 5
    )

    assert_error(signed_post(api, "whatsapp", report, None, signature="sha256=" + "0" * 64), 401, "invalid_signature")
    assert_error(signed_post(api, "whatsapp", report, None), 401, "invalid_signature")
    assert_error(signed_post(api, "whatsapp", stale, whatsapp.secret), 400, "stale_timestamp")
    assert _history(second) == ["accepted"]


def test_a_disconnected_account_is_404_at_once_though_its_key_was_kept(
    api, auth_api, whatsapp, django_capture_on_commit_callbacks
):
    first, second = _accepted_deliveries(auth_api, whatsapp.account, django_capture_on_commit_callbacks, 2)
    signed_post(api, "whatsapp", _statuses(whatsapp.account, [(first.external_id, "delivered")]), whatsapp.secret)

    assert auth_api.delete(f"/api/v1/channel-accounts/{whatsapp.account.pk}").status_code == 204
    response = signed_post(
        api, "whatsapp", _statuses(whatsapp.account, [(second.external_id, "delivered")]), whatsapp.secret
    )

    assert_error(response, 404, "not_found")
    assert _history(second) == ["accepted"]


def test_a_key_kept_by_another_process_moves_nothing_of_a_disconnected_account(
    api, auth_api, whatsapp, django_capture_on_commit_callbacks
):
    # Disconnected through another web process: this one still holds the key for up to
    # HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS, and a correctly signed report still changes nothing.
    first, second = _accepted_deliveries(auth_api, whatsapp.account, django_capture_on_commit_callbacks, 2)
    signed_post(api, "whatsapp", _statuses(whatsapp.account, [(first.external_id, "delivered")]), whatsapp.secret)
    ChannelAccount.objects.filter(pk=whatsapp.account.pk).update(is_active=False)
    assert inbound.webhook_keys.get("whatsapp", whatsapp.account.external_id) is not None  # still kept here

    response = signed_post(
        api, "whatsapp", _statuses(whatsapp.account, [(second.external_id, "delivered")]), whatsapp.secret
    )

    assert response.status_code in (200, 404)
    assert _history(second) == ["accepted"]
    assert MessageStatusChange.objects.filter(message_id=second.message_id).count() == 1


def test_an_account_connected_again_with_a_new_secret_is_checked_against_the_stored_one(
    api, auth_api, whatsapp, user, django_capture_on_commit_callbacks
):
    (delivery,) = _accepted_deliveries(auth_api, whatsapp.account, django_capture_on_commit_callbacks, 1)
    signed_post(api, "whatsapp", _statuses(whatsapp.account, [("wamid.x", "delivered")]), whatsapp.secret)
    # Disconnected by another process (this one's key stays), connected again: a new secret.
    ChannelAccount.objects.filter(pk=whatsapp.account.pk).update(is_active=False)
    again = connect(user, external_id=whatsapp.account.external_id)

    response = signed_post(
        api, "whatsapp", _statuses(again.account, [(delivery.external_id, "delivered")]), again.secret
    )

    assert response.status_code == 200  # verified against the stored account, not refused
    assert response.json()["statuses"] == 0  # the old account's message is not the new one's
    assert inbound.webhook_keys.get("whatsapp", again.account.external_id).account_id == again.account.pk


def test_the_webhook_answers_other_methods_with_the_405_envelope(api):
    response = api.get("/api/v1/channels/whatsapp/webhook")

    assert_error(response, 405, "method_not_allowed")


@pytest.mark.django_db(transaction=True)
def test_concurrent_copies_of_one_report_move_the_message_once(real_stack, user):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from hub.services import statuses
    from tests.conversations.factories import ConversationFactory

    account = connect(user).account
    conversation = ConversationFactory(owner=user)
    message = Message.objects.create(
        tenant=user.tenant, conversation=conversation, seq=1, role="user", content="x", status="sent"
    )
    from hub.models import Contact

    delivery = Delivery.objects.create(
        tenant=user.tenant,
        message=message,
        account=account,
        contact=Contact.objects.create(tenant=user.tenant, account=account, address="447700900001"),
        external_id="wamid.same",
    )

    def report(_):
        try:
            return statuses.reported_statuses_apply(
                account_id=account.pk, reports=[(delivery.external_id, "delivered")]
            )
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        moved = list(pool.map(report, range(8)))

    assert sum(moved) == 1
    assert list(MessageStatusChange.objects.filter(message=message).values_list("status", flat=True)) == ["delivered"]


def test_kept_account_keys_expire_are_bounded_and_can_be_turned_off(settings):
    now = [1000.0]
    keys = inbound.WebhookKeys(clock=lambda: now[0])
    settings.HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS = 30
    keys.put("whatsapp", "1555", inbound.WebhookKey(1, "s"))

    now[0] += 29.9
    assert keys.get("whatsapp", "1555") == inbound.WebhookKey(1, "s")
    now[0] += 0.2
    assert keys.get("whatsapp", "1555") is None  # expired: read from the database again

    keys.MAX_ENTRIES = 2
    for n in range(3):
        keys.put("whatsapp", str(n), inbound.WebhookKey(n, "s"))
    assert [keys.get("whatsapp", str(n)) is not None for n in range(3)] == [False, True, True]

    settings.HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS = 0
    keys.put("instagram", "1", inbound.WebhookKey(9, "s"))
    assert keys.get("instagram", "1") is None


def test_with_the_key_cache_off_every_report_reads_its_account(
    real_stack, api, auth_api, whatsapp, settings, django_capture_on_commit_callbacks, django_assert_num_queries
):
    settings.HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS = 0
    first, second = _accepted_deliveries(auth_api, whatsapp.account, django_capture_on_commit_callbacks, 2)
    for delivery in (first, second):
        with django_assert_num_queries(2):  # the account, the move
            response = signed_post(
                api, "whatsapp", _statuses(whatsapp.account, [(delivery.external_id, "delivered")]), whatsapp.secret
            )
        assert response.json()["statuses"] == 1
