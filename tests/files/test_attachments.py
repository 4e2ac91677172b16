import pytest
from channels.db import database_sync_to_async

from conversations.models import Message
from tests.chat.streams import communicator, receive_until
from tests.conversations.factories import ConversationFactory
from tests.files.helpers import declare, payload, upload
from tests.helpers import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")]


def _post(client, conversation_id, attachments):
    return client.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        {"content": "see attached", "attachments": attachments},
        format="json",
    )


def test_a_message_carries_ready_files_as_descriptors(auth_api, user):
    conversation = ConversationFactory(owner=user)
    first = upload(auth_api, payload(10), filename="a.pdf")
    second = upload(auth_api, payload(20), filename="b.png", content_type="image/png")

    response = _post(auth_api, conversation.id, [second["id"], first["id"], second["id"]])

    assert response.status_code == 202, response.content
    attachments = response.json()["message"]["attachments"]
    assert attachments == [
        {
            "id": second["id"],
            "name": "b.png",
            "size": 20,
            "content_type": "image/png",
            "sha256": second["sha256"],
            "download_path": f"/api/v1/files/{second['id']}/content",
        },
        {
            "id": first["id"],
            "name": "a.pdf",
            "size": 10,
            "content_type": "application/pdf",
            "sha256": first["sha256"],
            "download_path": f"/api/v1/files/{first['id']}/content",
        },
    ]
    listed = auth_api.get(f"/api/v1/conversations/{conversation.id}/messages").json()["results"]
    assert listed[0]["attachments"] == attachments
    exported = auth_api.get(f"/api/v1/conversations/{conversation.id}/export?format=json").json()
    assert exported["messages"][0]["attachments"] == attachments
    markdown = auth_api.get(f"/api/v1/conversations/{conversation.id}/export?format=markdown").content.decode()
    assert f"> attachment [b.png](/api/v1/files/{second['id']}/content) (image/png, 20 bytes)" in markdown


def test_a_foreign_file_is_400_and_nothing_is_stored(auth_api, user, other_tenant_api):
    conversation = ConversationFactory(owner=user)
    foreign = upload(other_tenant_api, payload(10))

    response = _post(auth_api, conversation.id, [foreign["id"]])

    error = assert_error(response, 400, "invalid_attachment")
    assert error["details"] == {"attachments": [foreign["id"]]}
    assert not Message.objects.exists()


def test_an_unfinished_or_unknown_file_is_400(auth_api, user):
    conversation = ConversationFactory(owner=user)
    uploading = declare(auth_api, payload(10)).json()
    unknown = "00000000-0000-0000-0000-000000000000"

    response = _post(auth_api, conversation.id, [uploading["id"], unknown])

    assert assert_error(response, 400, "invalid_attachment")["details"] == {"attachments": [uploading["id"], unknown]}
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "attachments", [["not-a-uuid"], [{"name": "x"}], ["00000000-0000-0000-0000-000000000000"] * 11]
)
def test_malformed_attachments_are_400(auth_api, user, attachments):
    conversation = ConversationFactory(owner=user)

    assert_error(_post(auth_api, conversation.id, attachments), 400, "validation_error")
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_websocket_message_send_with_attachments():
    from tests.accounts.factories import UserFactory
    from tests.helpers import client_for

    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    client = await database_sync_to_async(client_for)(user)
    ready = await database_sync_to_async(upload)(client, payload(10))
    pending = await database_sync_to_async(lambda: declare(client, payload(10)).json())()
    comm = await communicator(user, conversation.id)
    await comm.connect()

    await comm.send_json_to({"type": "message.send", "content": "bad", "attachments": [pending["id"]]})
    refused = await comm.receive_json_from(timeout=5)
    await comm.send_json_to({"type": "message.send", "content": "file", "attachments": [ready["id"]]})
    frames = []
    while not {"message.ack", "message.created"} <= {f["type"] for f in frames}:
        frames += await receive_until(comm, lambda frame: frame["type"] in ("message.ack", "message.created"))
    await comm.disconnect()

    assert refused["type"] == "error" and refused["data"]["code"] == "invalid_attachment"
    created = next(f for f in frames if f["type"] == "message.created")
    assert [a["id"] for a in created["data"]["attachments"]] == [ready["id"]]
    ack = next(f for f in frames if f["type"] == "message.ack")
    stored = await database_sync_to_async(Message.objects.get)(pk=ack["data"]["message_id"])
    assert stored.attachments[0]["download_path"] == f"/api/v1/files/{ready['id']}/content"
