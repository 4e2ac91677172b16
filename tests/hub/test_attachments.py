"""Message attachments through the hub: each connector gets the attachment descriptors,
applies its platform's media limits and payload shapes; a file the platform would refuse
fails the delivery at once (one attempt, no retry) naming the file and the limit; the
webhook connector signs them into its POST; broadcast takes attachments like the 202 path.
Files are uploaded through the files API (tests/files/helpers.py)."""

import pytest

from conversations.models import Conversation, Message
from hub.connectors import PermanentError, connector_for
from hub.connectors.base import media_kind_for
from hub.models import ConversationBinding, Delivery, DeliveryAttempt
from tests.accounts.factories import TenantFactory, UserFactory
from tests.files.helpers import payload, upload
from tests.helpers import assert_error, client_for

from .conftest import connect

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
WHATSAPP_IMAGE_LIMIT = 5 * 1000 * 1000  # "5 MB", read as decimal megabytes


@pytest.fixture(autouse=True)
def local_files(settings, tmp_path):
    """Files stored under the test's own folder, 1 MiB chunks (a 5 MB file is 5 PUTs)."""
    settings.FILES_STORAGE = "local"
    settings.FILES_LOCAL_ROOT = tmp_path / "files"
    settings.FILES_CHUNK_BYTES = MIB
    return settings.FILES_LOCAL_ROOT


def _bound_conversation(api, account, address="447700900001"):
    response = api.post(
        "/api/v1/conversations/",
        {"channel_account_id": account.pk, "contact": {"address": address, "name": "Grace"}},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def _post(api, conversation_id, attachments, content="Your invoice"):
    return api.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        {"content": content, "attachments": attachments},
        format="json",
    )


def test_a_whatsapp_message_with_an_image_is_delivered_with_a_media_message(
    auth_api, whatsapp, settings, django_capture_on_commit_callbacks
):
    image = upload(auth_api, payload(3000), filename="receipt.png", content_type="image/png")
    pdf = upload(auth_api, payload(2000, seed=2), filename="invoice.pdf", content_type="application/pdf")
    conversation = _bound_conversation(auth_api, whatsapp.account)

    with django_capture_on_commit_callbacks(execute=True):
        response = _post(auth_api, conversation["id"], [image["id"], pdf["id"]])

    assert response.status_code == 202, response.content
    message = Message.objects.get(pk=response.json()["message"]["id"])
    assert message.status == "read"  # delivered, then read (the fixture's report_read)
    delivery = Delivery.objects.get(message=message)
    [attempt] = DeliveryAttempt.objects.filter(delivery=delivery)
    assert (attempt.outcome, attempt.error) == ("sent", "")
    requests = connector_for("whatsapp").sent_requests(delivery.external_id)
    assert requests == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "447700900001",
            "type": "text",
            "text": {"body": "Your invoice"},
        },
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "447700900001",
            "type": "image",
            "image": {"link": f"/api/v1/files/{image['id']}/content"},
        },
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "447700900001",
            "type": "document",
            "document": {"link": f"/api/v1/files/{pdf['id']}/content", "filename": "invoice.pdf"},
        },
    ]


def test_an_instagram_image_goes_as_a_message_attachment_with_an_absolute_url(
    auth_api, instagram, settings, django_capture_on_commit_callbacks
):
    settings.HUB_WEBHOOK_BASE_URL = "https://hub.example.com/"
    image = upload(auth_api, payload(1500), filename="map.jpg", content_type="image/jpeg")
    conversation = _bound_conversation(auth_api, instagram.account, address="6543210987")

    with django_capture_on_commit_callbacks(execute=True):
        response = _post(auth_api, conversation["id"], [image["id"]], content="Here is the map")

    assert response.status_code == 202, response.content
    delivery = Delivery.objects.get(message_id=response.json()["message"]["id"])
    assert delivery.state == "sent"
    assert connector_for("instagram").sent_requests(delivery.external_id) == [
        {"recipient": {"id": "6543210987"}, "message": {"text": "Here is the map"}},
        {
            "recipient": {"id": "6543210987"},
            "message": {
                "attachment": {
                    "type": "image",
                    "payload": {"url": f"https://hub.example.com/api/v1/files/{image['id']}/content"},
                }
            },
        },
    ]


def test_an_image_over_the_whatsapp_limit_fails_at_once_naming_file_and_limit(
    auth_api, whatsapp, settings, django_capture_on_commit_callbacks
):
    settings.HUB_MAX_ATTEMPTS = 5
    big = upload(auth_api, payload(WHATSAPP_IMAGE_LIMIT + 1), filename="poster.png", content_type="image/png")
    conversation = _bound_conversation(auth_api, whatsapp.account)

    with django_capture_on_commit_callbacks(execute=True):
        response = _post(auth_api, conversation["id"], [big["id"]])

    assert response.status_code == 202, response.content
    message = Message.objects.get(pk=response.json()["message"]["id"])
    delivery = Delivery.objects.get(message=message)
    expected = "whatsapp refuses attachment 'poster.png': 5000001 bytes is over its image limit of 5 MB (5000000 bytes)"
    assert (message.status, delivery.state, delivery.attempts, delivery.last_error) == (
        "failed",
        "failed",
        1,
        expected,
    )
    [attempt] = DeliveryAttempt.objects.filter(delivery=delivery)  # one attempt: no retry
    assert (attempt.attempt, attempt.outcome, attempt.error) == (1, "failed", expected)
    assert connector_for("whatsapp").sent_requests(delivery.external_id) == []  # nothing went out
    detail = auth_api.get(f"/api/v1/conversations/{conversation['id']}/messages/{message.pk}").json()
    assert [(d["outcome"], d["error"]) for d in detail["deliveries"]] == [("failed", expected)]


def test_a_type_the_platform_does_not_take_fails_permanently(auth_api, instagram, django_capture_on_commit_callbacks):
    notes = upload(auth_api, payload(100), filename="notes.txt", content_type="text/plain")
    conversation = _bound_conversation(auth_api, instagram.account, address="6543210987")

    with django_capture_on_commit_callbacks(execute=True):
        response = _post(auth_api, conversation["id"], [notes["id"]])

    delivery = Delivery.objects.get(message_id=response.json()["message"]["id"])
    assert (delivery.state, delivery.attempts) == ("failed", 1)
    assert delivery.last_error.startswith("instagram does not take attachment 'notes.txt' of type text/plain")
    assert "image/png" in delivery.last_error  # says what it would take
    assert DeliveryAttempt.objects.filter(delivery=delivery).count() == 1


def test_the_webhook_connector_posts_signed_attachment_descriptors(
    auth_api, user, receiver, settings, django_capture_on_commit_callbacks
):
    settings.HUB_WEBHOOK_BASE_URL = "https://hub.example.com"
    hook = connect(user, channel="webhook", external_id="crm", settings={"url": receiver.url})
    receiver.secret = hook.secret
    data = payload(4096, seed=7)
    video = upload(auth_api, data, filename="demo.mp4", content_type="video/mp4")
    conversation = _bound_conversation(auth_api, hook.account, address="crm-contact-1")

    with django_capture_on_commit_callbacks(execute=True):
        response = _post(auth_api, conversation["id"], [video["id"]], content="The demo")

    assert response.status_code == 202, response.content
    [received] = receiver.received
    assert received["valid"] is True  # the receiver checked X-Hub-Signature-256 over the raw body
    body = received["body"]
    assert body["event"] == "message"
    assert body["contact"] == {"address": "crm-contact-1", "name": "Grace"}
    assert body["message"]["content"] == "The demo"
    assert body["message"]["attachments"] == [
        {
            "id": video["id"],
            "name": "demo.mp4",
            "size": 4096,
            "content_type": "video/mp4",
            "sha256": video["sha256"],
            "download_path": f"/api/v1/files/{video['id']}/content",
            "download_url": f"https://hub.example.com/api/v1/files/{video['id']}/content",
        }
    ]
    assert Message.objects.get(pk=body["message"]["id"]).status == "delivered"


def test_broadcast_carries_attachments_to_every_target(
    auth_api, whatsapp, instagram, django_capture_on_commit_callbacks
):
    image = upload(auth_api, payload(2048), filename="sale.png", content_type="image/png")
    targets = [
        {"channel_account_id": whatsapp.account.pk, "address": "111"},
        {"channel_account_id": instagram.account.pk, "address": "333"},
    ]

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_api.post(
            "/api/v1/messages/broadcast",
            {"content": "Sale today", "targets": targets, "attachments": [image["id"]]},
            format="json",
        )

    assert response.status_code == 202, response.content
    results = response.json()["results"]
    messages = Message.objects.filter(pk__in=[r["message_id"] for r in results])
    assert [[a["id"] for a in m.attachments] for m in messages] == [[image["id"]], [image["id"]]]
    for delivery in Delivery.objects.filter(message__in=messages).select_related("account"):
        assert delivery.state == "sent"
        requests = connector_for(delivery.account.channel).sent_requests(delivery.external_id)
        assert len(requests) == 2 and "image" in str(requests[1])


@pytest.mark.parametrize("which", ["foreign", "unfinished", "unknown"])
def test_broadcast_with_an_unusable_file_is_400_and_stores_nothing(auth_api, whatsapp, which):
    other = client_for(UserFactory(tenant=TenantFactory(), role="owner"))
    if which == "foreign":
        file_id = upload(other, payload(100), filename="theirs.png", content_type="image/png")["id"]
    elif which == "unfinished":
        declared = auth_api.post(
            "/api/v1/files/",
            {"filename": "half.png", "size": 10, "content_type": "image/png", "sha256": "0" * 64},
            format="json",
        )
        assert declared.status_code == 201, declared.content
        file_id = declared.json()["id"]
    else:
        file_id = "00000000-0000-4000-8000-000000000000"
    before = (Conversation.objects.count(), Message.objects.count())

    response = auth_api.post(
        "/api/v1/messages/broadcast",
        {
            "content": "Sale today",
            "targets": [{"channel_account_id": whatsapp.account.pk, "address": "999"}],
            "attachments": [file_id],
        },
        format="json",
    )

    assert_error(response, 400, "invalid_attachment")
    assert response.json()["error"]["details"] == {"attachments": [file_id]}
    assert (Conversation.objects.count(), Message.objects.count()) == before
    assert not ConversationBinding.objects.filter(contact__address="999").exists()
    assert not Delivery.objects.exists()


def test_broadcast_with_too_many_attachments_is_400(auth_api, whatsapp):
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(11)]

    response = auth_api.post(
        "/api/v1/messages/broadcast",
        {"content": "hi", "targets": [{"channel_account_id": whatsapp.account.pk, "address": "1"}], "attachments": ids},
        format="json",
    )

    assert_error(response, 400, "validation_error")
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("channel", "attachment", "kind_or_error"),
    [
        ("whatsapp", {"name": "a.png", "size": 5_000_000, "content_type": "image/png"}, "image"),  # at the limit
        ("whatsapp", {"name": "a.jpg", "size": 10, "content_type": "IMAGE/JPEG; q=1"}, "image"),
        ("whatsapp", {"name": "a.mp4", "size": 16_000_000, "content_type": "video/mp4"}, "video"),
        (
            "whatsapp",
            {"name": "a.mp4", "size": 16_000_001, "content_type": "video/mp4"},
            "over its video limit of 16 MB",
        ),
        ("whatsapp", {"name": "a.pdf", "size": 100_000_000, "content_type": "application/pdf"}, "document"),
        ("whatsapp", {"name": "a.webp", "size": 10, "content_type": "image/webp"}, "does not take attachment 'a.webp'"),
        ("instagram", {"name": "a.gif", "size": 8_000_000, "content_type": "image/gif"}, "image"),
        (
            "instagram",
            {"name": "a.png", "size": 8_000_001, "content_type": "image/png"},
            "over its image limit of 8 MB",
        ),
        ("instagram", {"name": "a.mov", "size": 25_000_000, "content_type": "video/quicktime"}, "video"),
        ("instagram", {"name": "a.m4a", "size": 10, "content_type": "audio/mp4"}, "audio"),
        ("instagram", {"name": "a.pdf", "size": 25_000_001, "content_type": "application/pdf"}, "file limit of 25 MB"),
        ("instagram", {"url": "legacy free-form"}, "names no file size and type"),
    ],
)
def test_each_platform_maps_types_to_kinds_within_its_limits(channel, attachment, kind_or_error):
    connector = connector_for(channel)

    try:
        outcome = media_kind_for(channel, connector.MEDIA_KINDS, attachment).name
    except PermanentError as exc:
        outcome = str(exc)

    assert kind_or_error in outcome
    assert (outcome == kind_or_error) == (kind_or_error in {"image", "video", "audio", "document", "file"})
