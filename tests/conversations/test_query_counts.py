"""Query counts pinned on the hot list endpoints (Zulip's habit): a page of 20 rows costs
the same few queries as a page of one, so nothing is loaded row by row."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.models import AgentRun
from tests.conftest import client_for
from tests.conversations.factories import ConversationFactory, add_messages

pytestmark = pytest.mark.django_db

# Authentication (the user, then their tenant), the conversation (scope check), the page.
MESSAGES_LIST_QUERIES = 3
TURNS_LIST_QUERIES = 3


def runs_for(conversation, count: int) -> None:
    for message in add_messages(conversation, count):
        reply = add_messages(conversation, 1, role="assistant")[0]
        AgentRun.objects.create(
            tenant_id=conversation.tenant_id,
            conversation=conversation,
            user=conversation.owner,
            trigger_message=message,
            reply_message=reply,
            provider="local",
            model="local",
            status=AgentRun.Status.COMPLETED,
        )


def queries_for(client, url: str) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(captured), response.json()


@pytest.mark.parametrize("rows", [1, 20])
def test_messages_list_query_count_does_not_grow_with_rows(user, rows):
    conversation = ConversationFactory(owner=user)
    add_messages(conversation, rows)
    client = client_for(user)

    count, body = queries_for(client, f"/api/v1/conversations/{conversation.id}/messages")

    assert len(body["results"]) == rows
    assert count == MESSAGES_LIST_QUERIES


@pytest.mark.parametrize("rows", [1, 20])
def test_turns_list_query_count_does_not_grow_with_rows(user, rows):
    conversation = ConversationFactory(owner=user)
    runs_for(conversation, rows)
    client = client_for(user)

    count, body = queries_for(client, f"/api/v1/conversations/{conversation.id}/turns")

    assert len(body["results"]) == rows
    assert count == TURNS_LIST_QUERIES
