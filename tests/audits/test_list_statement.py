"""The audit list page read without the ORM (audits.selectors.audit_record_page_statement),
and under ASGI in the event loop (config/api/asyncdb.py), its rows' JSON written by
PostgreSQL (audits.serializers.audit_record_json_statement): the same pages as the DRF
view's ORM path for every filter, cursor direction and tie, the same keys in the same order
with the same values (only the whitespace inside ``details`` is PostgreSQL's); the same
error envelopes; tenant scope; a stopped PostgreSQL is a 503, a dead pooled connection is
retried. See docs/audits.md, "Reading the list"."""

import json
import socket
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

from audits.services import audit_record, audit_seal_chains
from config.api import asyncdb
from tests.accounts.factories import TenantFactory, UserFactory
from tests.helpers import client_for
from tests.protection.test_fast_paths import asgi, token_for

pytestmark = pytest.mark.django_db

AUDITS = "/api/v1/audits/"
# An Accept with a parameter is left to the DRF view (its ORM path): the reference.
DRF_PATH = {"HTTP_ACCEPT": "application/json; q=1"}
DRF_ACCEPT = ((b"accept", b"application/json; q=1"),)


def seed_trail(tenant, actors):
    """Records of ``tenant`` with runs of equal ``created_at`` (ties the cursor's offset
    must step over), several actions (one with a LIKE wildcard in it, one that an unescaped pattern would also match), resources and
    both sources, sealed and not."""
    start = timezone.now() - timedelta(hours=1)
    for step in range(6):
        with freeze_time(start + timedelta(minutes=step)):
            for n in range(step % 3 + 2):  # 2 to 4 records at the same instant
                actor = actors[(step + n) % len(actors)]
                action = ("custom.a_b.x", "custom.axb.y", "thing.done", "custom.ab.z")[(step + n) % 4]
                audit_record(
                    tenant=tenant,
                    actor=actor,
                    action=action,
                    resource_type=("doc", "task")[n % 2],
                    resource_id=str(step),
                    details={"step": step, "n": n, "text": "é"},
                )
        if step == 3:
            audit_seal_chains()
    return start


def ordered(body: bytes):
    """The JSON of ``body`` with every object as its list of (key, value) pairs: equal
    when the keys, their order and the values are, whatever the whitespace."""
    return json.loads(body, object_pairs_hook=list)


def walk(get, first_url):
    """Every page from ``first_url`` forward, then back from the last one: the bodies."""
    bodies, url = [], first_url
    while url:
        body = get(url)
        bodies.append(body)
        url = json.loads(body)["next"]
    url = json.loads(bodies[-1])["previous"]
    while url:
        body = get(url)
        bodies.append(body)
        url = json.loads(body)["previous"]
    return bodies


FILTERS = [
    "",
    "action=custom.a_b.*",
    "action=custom.a%25b.*",
    "action=thing.done",
    "resource_type=doc&resource_id=2",
    "source=app",
    "source=api",
]


@pytest.mark.parametrize("query", FILTERS)
def test_the_statements_pages_are_the_orm_paths_pages(tenant, query):
    owner = UserFactory(tenant=tenant, role="owner")
    other = UserFactory(tenant=tenant, role="member")
    seed_trail(tenant, [owner, other])
    client = client_for(owner)

    def fast(url):
        response = client.get(url)
        assert response.status_code == 200, response.content
        return response.content

    def drf(url):
        response = client.get(url, **DRF_PATH)
        assert response.status_code == 200, response.content
        return response.content

    first = f"{AUDITS}?page_size=3&{query}"
    pages = walk(fast, first)
    assert [ordered(page) for page in pages] == [ordered(page) for page in walk(drf, first)]
    actions = {row["action"] for body in pages for row in json.loads(body)["results"]}
    if query == "action=custom.a_b.*":  # "_" is a literal, not LIKE's any character
        assert actions == {"custom.a_b.x"}
    if query == "action=custom.a%25b.*":  # "%" too
        assert actions == set()


def test_actor_since_until_and_a_members_scope_match_the_orm_path(tenant):
    owner = UserFactory(tenant=tenant, role="owner")
    member = UserFactory(tenant=tenant, role="member")
    start = seed_trail(tenant, [owner, member])
    since = (start + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    until = (start + timedelta(minutes=4)).isoformat().replace("+00:00", "Z")
    for user, query in (
        (owner, f"actor={member.pk}"),
        (owner, f"since={since}&until={until}"),
        (member, ""),
        (member, f"actor={owner.pk}"),
    ):
        client = client_for(user)
        first = f"{AUDITS}?page_size=2&{query}"
        fast = walk(lambda url, c=client: c.get(url).content, first)
        drf = walk(lambda url, c=client: c.get(url, **DRF_PATH).content, first)
        assert [ordered(page) for page in fast] == [ordered(page) for page in drf], query
        if user is member:
            actors = {row["actor_id"] for body in fast for row in json.loads(body)["results"]}
            assert actors <= {member.pk}


def test_rows_postgresql_writes_are_the_serializers_rows(real_stack, tenant):
    # Instants with no microseconds (Python writes no fraction then), with trailing zeros
    # (all six digits), sealed (sealed_at on a whole second) and not, and details holding
    # what JSON escapes: the page PostgreSQL wrote is the DRF page, value for value.
    owner = UserFactory(tenant=tenant, role="owner")
    base = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    details = {
        "quote": 'a"b\\c/',
        "controls": "\x01\x1f\t\n\r\b\f\x7f",
        "lines": "x\u2028y\u2029z",
        "text": "é😀",
        "nested": {"list": [1, 2.5, None, True, "s"], "empty": {}},
        "huge": 2**70,
        "small": -0.0001,
    }
    for step, micro in enumerate((0, 123400)):
        with freeze_time(base + timedelta(seconds=step, microseconds=micro)):
            audit_record(tenant=tenant, actor=owner, action=f"custom.sealed{step}", details=details)
    with freeze_time(base + timedelta(minutes=1)):
        audit_seal_chains()
    for step, micro in enumerate((1, 999999)):
        with freeze_time(base + timedelta(seconds=10 + step, microseconds=micro)):
            audit_record(tenant=tenant, actor=None, action=f"custom.open{step}", resource_id="r")
    client = client_for(owner)

    fast = client.get(f"{AUDITS}?page_size=50")
    drf = client.get(f"{AUDITS}?page_size=50", **DRF_PATH)

    assert fast.status_code == drf.status_code == 200
    assert ordered(fast.content) == ordered(drf.content)
    rows = json.loads(fast.content)["results"]
    instants = [timedelta(seconds=11, microseconds=999999), timedelta(seconds=10, microseconds=1)]
    instants += [timedelta(seconds=1, microseconds=123400), timedelta(0)]
    assert [row["created_at"] for row in rows] == [(base + at).isoformat().replace("+00:00", "Z") for at in instants]
    assert ".123400Z" in rows[2]["created_at"]
    assert (
        rows[2]["sealed"] is True
        and rows[2]["sealed_at"] == (base + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
        and rows[0]["sealed"] is False
    )
    assert rows[2]["details"] == details
    # U+2028/U+2029 leave escaped, as the renderer escapes them everywhere.
    assert b"\\u2028" in fast.content and "\u2028".encode() not in fast.content


def test_in_another_time_zone_the_rows_are_built_in_python(real_stack, tenant, settings):
    # The SQL spells UTC only; with another current time zone the body's dates are DRF's
    # local ones, and the page is built as before.
    settings.TIME_ZONE = "Europe/Paris"
    owner = UserFactory(tenant=tenant, role="owner")
    with freeze_time("2026-01-15 12:00:00.5"):  # winter: +01:00
        audit_record(tenant=tenant, actor=owner, action="custom.paris")
    client = client_for(owner)

    with CaptureQueriesContext(connection) as captured:
        fast = client.get(AUDITS)
    drf = client.get(AUDITS, **DRF_PATH)

    assert fast.status_code == 200
    assert fast.content == drf.content
    assert json.loads(fast.content)["results"][0]["created_at"] == "2026-01-15T13:00:00.500000+01:00"
    assert not any("row_to_json" in query["sql"] for query in captured.captured_queries)


def test_the_statement_is_one_query_on_the_fast_path(real_stack, user, django_assert_num_queries):
    seed_trail(user.tenant, [user])
    client = client_for(user)
    client.get(AUDITS)  # the caller is cached now

    with django_assert_num_queries(1) as captured:
        response = client.get(f"{AUDITS}?page_size=30")

    assert response.status_code == 200
    sql = captured.captured_queries[0]["sql"]
    assert sql.startswith("SELECT page.created_at, (SELECT row_to_json(j)::text FROM (SELECT page.id,"), sql
    assert 'FROM (SELECT "id", "tenant_id"' in sql


# ------------------------------------------------------------- under ASGI: the async pool


@pytest.fixture
async def async_pool():
    """The event loop's pool, closed at the end of the test in the test's own loop (its
    workers must not outlive the loop; a server process has one loop for its life)."""
    yield
    await asyncdb.aclose_all()


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_every_page_is_the_drf_paths_page(async_pool):
    owner = await database_sync_to_async(UserFactory)(role="owner")
    member = await database_sync_to_async(UserFactory)(tenant=owner.tenant, role="member")
    await database_sync_to_async(seed_trail)(owner.tenant, [owner, member])
    token = await database_sync_to_async(token_for)(owner)

    for query in ("page_size=3", "page_size=2&action=custom.a_b.*", f"page_size=4&actor={member.pk}"):
        url = f"{AUDITS}?{query}"
        fast, drf = [], []
        for pages, headers in ((fast, ()), (drf, DRF_ACCEPT)):
            while url:
                path, _, raw_query = url.removeprefix("http://testserver").partition("?")
                status, _, body = await asgi("GET", path, token, query=raw_query.encode(), headers=headers)
                assert status == 200, body
                pages.append(body)
                url = json.loads(body)["next"]
            url = f"{AUDITS}?{query}"
        assert [ordered(page) for page in fast] == [ordered(page) for page in drf], query
        assert len(fast) > 1


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_errors_are_the_drf_envelopes(async_pool):
    user = await database_sync_to_async(UserFactory)(role="owner")
    token = await database_sync_to_async(token_for)(user)

    for query in (b"cursor=not-a-cursor", b"since=yesterday", b"cursor=cD0yMDI2LTEy", b"actor=0"):
        status, headers, body = await asgi("GET", AUDITS, token, query=query)
        drf_status, _, drf_body = await asgi("GET", AUDITS, token, query=query, headers=DRF_ACCEPT)
        error, drf_error = json.loads(body)["error"], json.loads(drf_body)["error"]
        assert status == drf_status == 400
        assert (error["code"], error["message"], error["details"]) == (
            drf_error["code"],
            drf_error["message"],
            drf_error["details"],
        )
        assert headers["content-type"] == "application/json"


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_a_tenant_never_sees_another_tenants_records(async_pool):
    mine = await database_sync_to_async(UserFactory)(role="owner")
    theirs = await database_sync_to_async(UserFactory)(
        role="owner", tenant=await database_sync_to_async(TenantFactory)()
    )
    await database_sync_to_async(audit_record)(tenant=mine.tenant, actor=mine, action="custom.mine")
    await database_sync_to_async(audit_record)(tenant=theirs.tenant, actor=theirs, action="custom.theirs")

    status, _, body = await asgi("GET", AUDITS, await database_sync_to_async(token_for)(mine))

    assert status == 200
    rows = json.loads(body)["results"]
    assert {row["action"] for row in rows} == {"custom.mine"}
    assert {row["tenant_id"] for row in rows} == {mine.tenant_id}


def closed_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]  # nothing listens once it is closed


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_a_stopped_postgresql_is_a_503_with_retry_after(real_stack, settings, monkeypatch, async_pool):
    user = await database_sync_to_async(UserFactory)(role="owner")
    token = await database_sync_to_async(token_for)(user)
    assert (await asgi("GET", "/api/v1/auth/me", token))[0] == 200  # the caller is cached
    # The async pool opens in this test's loop from the settings as they are now: a
    # PostgreSQL that refuses connections.
    settings.DB_POOL_TIMEOUT = 1
    monkeypatch.setitem(connections["default"].settings_dict, "HOST", "127.0.0.1")
    monkeypatch.setitem(connections["default"].settings_dict, "PORT", str(closed_port()))

    status, headers, body = await asgi("GET", AUDITS, token)

    assert status == 503
    error = json.loads(body)["error"]
    assert error["code"] == "dependency_unavailable" and error["details"] == {"dependency": "database"}
    assert headers["retry-after"] == "5"
    assert error["request_id"] == headers["x-request-id"]


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_a_pooled_connection_killed_by_a_restart_is_replaced(real_stack, async_pool):
    user = await database_sync_to_async(UserFactory)(role="owner")
    await database_sync_to_async(audit_record)(tenant=user.tenant, actor=user, action="custom.before")
    token = await database_sync_to_async(token_for)(user)
    assert (await asgi("GET", AUDITS, token))[0] == 200  # the pool holds a connection now

    def terminate_pool_connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s",
                [asyncdb.APPLICATION_NAME],
            )
            return cursor.fetchone()[0]

    assert await database_sync_to_async(terminate_pool_connections)() >= 1

    status, _, body = await asgi("GET", AUDITS, token)

    assert status == 200, body
    assert [row["action"] for row in json.loads(body)["results"]] == ["custom.before"]
