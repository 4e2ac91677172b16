"""The app's ASGI handler (config/api/asgi_handler.py): Django's, hopping to a thread at a
request's start and end only when the request has sync work of its own. What Django's hops
were for still happens: the database connections a request's thread opened are closed in
that thread, receivers we do not know are sent Django's way, files are closed in a thread.
See docs/overhead.md, "Fourth round: the handler's hops"."""

import asyncio
import hashlib
import inspect
import logging
import threading
from pathlib import Path

import asgiref.sync
import pytest
from django.core import signals
from django.core.cache import close_caches
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.core.handlers.base import BaseHandler, reset_urlconf
from django.db import connection
from django.http import FileResponse, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import path

from accounts.models import User
from config.api import asgi_handler
from config.api.auth import JWTAuthentication
from config.asgi import application
from config.urls import urlpatterns as base_patterns
from tests.accounts.factories import UserFactory
from tests.helpers import asgi_scope, client_for

pytestmark = pytest.mark.django_db(transaction=True)

ME = "/api/v1/auth/me"

# The method config/api/asgi_handler.py copies, as it was copied (Django 5.2.19): a Django
# upgrade that changes it fails here, and the copy is brought up to date by hand.
DJANGO_HANDLE_SHA256 = "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323"
DJANGO_GET_RESPONSE_ASYNC_SHA256 = "ad82c920df0cebbb52b1ebafe6ab8b5541f200c39fa954a148b01f60725b715b"
DJANGO_RESPONSE_CLOSE_SHA256 = "84589f5b23acbb23aa9010f3506ef411b72b1053f2fc2764590e2b3bf3470438"
DJANGO_CALL_SHA256 = "f756809e9c9308dcccb78a301fccf09196e80cdc4745690f80384d09b69dd102"


class Call:
    """One ASGI request through the whole application, able to leave early."""

    def __init__(self, path: str, token: str | None = None):
        self.scope = asgi_scope(path, token, headers=[(b"accept", b"application/json")])
        self.status, self.sent_body, self.gone = None, False, asyncio.Event()

    def leave(self) -> None:
        """The client disconnects."""
        self.gone.set()

    async def receive(self):
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message):
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {key.decode().lower(): value.decode() for key, value in message["headers"]}
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            self.gone.set()

    async def __call__(self) -> int | None:
        await application(self.scope, self.receive, self.send)
        return self.status


@pytest.fixture
def hops(monkeypatch):
    """Each sync_to_async call of a request (a thread hop each), by the name of what it ran."""
    made = []
    original = asgiref.sync.SyncToAsync.__call__

    async def counting(self, *args, **kwargs):
        made.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(asgiref.sync.SyncToAsync, "__call__", counting)
    return made


@pytest.fixture
def finished_in(monkeypatch):
    """The thread each ``request_finished`` was sent from: Django's way (``send``, from
    ``response.close()``) or inline (its per-context receivers called by the handler)."""
    threads = []
    original_send = signals.request_finished.send
    original_inline = asgi_handler._inline_receivers

    def send(sender, **named):
        threads.append(threading.get_ident())
        return original_send(sender, **named)

    def inline_receivers(signal, sender):
        receivers = original_inline(signal, sender)
        if receivers is None or signal is not signals.request_finished:
            return receivers
        assert receivers == [close_caches, reset_urlconf]  # the per-thread ones are skipped

        def sent(**named):
            threads.append(threading.get_ident())

        return [sent, *receivers]

    monkeypatch.setattr(signals.request_finished, "send", send)
    monkeypatch.setattr(asgi_handler, "_inline_receivers", inline_receivers)
    return threads


@pytest.fixture
def token():
    user = UserFactory()
    return client_for(user)._credentials["HTTP_AUTHORIZATION"][7:]


async def test_an_async_request_with_no_sync_work_hops_to_no_thread(hops, finished_in):
    await Call("/health")()  # warm: first-request work
    hops.clear()
    finished_in.clear()
    started = threading.active_count()

    assert await Call("/health")() == 200

    assert hops == []
    assert finished_in == [threading.get_ident()]  # sent, in the event loop
    assert threading.active_count() == started


async def test_a_request_with_no_hop_keeps_every_guarantee_of_the_floor(caplog, settings):
    """/health served without a thread: its request id (echoed), security headers, one log
    line with its fields and the request metrics, as before."""
    from prometheus_client import REGISTRY

    caplog.set_level(logging.INFO, logger="http.request")
    labels = {"method": "GET", "route": "/health", "status": "200"}
    counted = REGISTRY.get_sample_value("http_requests_total", labels) or 0.0
    call = Call("/health")
    call.scope["headers"].append((b"x-request-id", b"req-floor-1"))

    assert await call() == 200

    assert call.headers["x-request-id"] == "req-floor-1"
    assert call.headers["x-content-type-options"] == "nosniff"
    assert call.headers["x-frame-options"] == "DENY"
    assert call.headers["referrer-policy"] == settings.SECURE_REFERRER_POLICY
    assert call.headers["cross-origin-opener-policy"] == settings.SECURE_CROSS_ORIGIN_OPENER_POLICY
    (line,) = [r for r in caplog.records if r.name == "http.request"]
    assert (line.method, line.path, line.route, line.status, line.request_id) == (
        "GET",
        "/health",
        "/health",
        200,
        "req-floor-1",
    )
    assert REGISTRY.get_sample_value("http_requests_total", labels) == counted + 1


async def test_a_request_with_sync_work_is_finished_in_its_thread(real_stack, hops, finished_in, monkeypatch, token):
    # The caller is loaded from the database in the request's thread (a cache miss): the
    # connection it opened is closed by request_finished's receivers in that same thread.
    loaded_in = []
    original = JWTAuthentication.load_user

    def load_user(self, validated_token):
        loaded_in.append(threading.get_ident())
        return original(self, validated_token)

    monkeypatch.setattr(JWTAuthentication, "load_user", load_user)

    assert await Call(ME, token)() == 200

    assert [hop.rsplit(".", 1)[-1] for hop in sorted(hops)] == ["close", "load_user"]
    assert len(loaded_in) == 1 and finished_in == loaded_in
    assert loaded_in[0] != threading.get_ident()


async def test_a_sync_view_closes_its_connection_in_its_thread(hops, finished_in):
    # /health/ready is a sync view: the database check runs in the request's thread.
    assert await Call("/health/ready")() == 200
    assert "HttpResponseBase.close" in hops
    assert finished_in and finished_in[-1] != threading.get_ident()


async def test_an_error_response_hops_for_djangos_log_line_only_when_it_is_written(
    real_stack, hops, caplog, settings, token
):
    # A 429 from the fast path (rate limit in the event loop, the caller cached).
    settings.RATE_LIMIT_FREE = 1
    assert await Call(ME, token)() == 200
    hops.clear()

    assert await Call(ME, token)() == 429
    assert hops == []  # django.request is at ERROR (config/settings/observability.py)

    logging.getLogger("django.request").setLevel(logging.WARNING)
    try:
        caplog.set_level(logging.WARNING, logger="django.request")
        assert await Call(ME, token)() == 429
    finally:
        logging.getLogger("django.request").setLevel(logging.ERROR)
    assert hops == ["log_response"]
    (line,) = [r for r in caplog.records if r.name == "django.request"]
    assert line.getMessage() == f"Too Many Requests: {ME}" and line.status_code == 429


async def test_a_receiver_we_do_not_know_is_sent_djangos_way(hops):
    # A package's or a project's receiver may do I/O: it runs in a thread, as under Django's handler.
    started_in, finished_in = [], []

    def on_started(**kwargs):
        started_in.append(threading.get_ident())

    def on_finished(**kwargs):
        finished_in.append(threading.get_ident())

    signals.request_started.connect(on_started)
    signals.request_finished.connect(on_finished)
    try:
        assert await Call("/health")() == 200
    finally:
        signals.request_started.disconnect(on_started)
        signals.request_finished.disconnect(on_finished)

    loop_thread = threading.get_ident()
    assert len(started_in) == len(finished_in) == 1
    assert started_in[0] != loop_thread and finished_in[0] != loop_thread
    assert sorted(hops) == ["HttpResponseBase.close", "Signal.asend.<locals>.sync_send"]


async def test_an_async_receiver_is_awaited():
    seen = []

    async def on_started(**kwargs):
        seen.append(kwargs["scope"]["path"])

    signals.request_started.connect(on_started)
    try:
        assert await Call("/health")() == 200
    finally:
        signals.request_started.disconnect(on_started)

    assert seen == ["/health"]


def _request(files=None) -> ASGIRequest:
    request = ASGIRequest(Call("/health").scope, __import__("io").BytesIO())
    if files is not None:
        request._files = files
    return request


def test_only_a_request_without_uploads_closes_in_the_event_loop(tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils.datastructures import MultiValueDict

    plain = JsonResponse({"status": "ok"})
    plain._resource_closers.append(_request().close)
    assert asgi_handler._closers_inline(plain)

    parsed_no_files = HttpResponse()
    parsed_no_files._resource_closers.append(_request(MultiValueDict()).close)
    assert asgi_handler._closers_inline(parsed_no_files)

    upload = HttpResponse()
    upload._resource_closers.append(_request(MultiValueDict({"f": [SimpleUploadedFile("a.txt", b"x")]})).close)
    assert not asgi_handler._closers_inline(upload)

    (tmp_path / "f.bin").write_bytes(b"x")
    with open(tmp_path / "f.bin", "rb") as handle:
        assert not asgi_handler._closers_inline(FileResponse(handle))


async def test_a_client_that_leaves_mid_request_is_still_finished(settings, monkeypatch):
    # The view is cancelled; no response to close: request_finished is sent by itself.
    settings.ROOT_URLCONF = __name__
    finished = []
    original = asgi_handler.send_request_finished

    async def send_request_finished(sender):
        finished.append(sender)
        await original(sender)

    monkeypatch.setattr(asgi_handler, "send_request_finished", send_request_finished)
    call = Call("/test/slow")
    serving = asyncio.ensure_future(call())
    await asyncio.wait_for(SLOW_STARTED.wait(), 5)

    call.leave()
    await asyncio.wait_for(serving, 5)

    assert SLOW_CANCELLED.is_set()
    assert finished == [asgi_handler.AppASGIHandler]


def test_the_copied_methods_are_djangos_as_they_were_copied():
    source = inspect.getsource(ASGIHandler.handle)
    assert hashlib.sha256(source.encode()).hexdigest() == DJANGO_HANDLE_SHA256
    source = inspect.getsource(BaseHandler.get_response_async)
    assert hashlib.sha256(source.encode()).hexdigest() == DJANGO_GET_RESPONSE_ASYNC_SHA256
    source = inspect.getsource(HttpResponseBase.close)
    assert hashlib.sha256(source.encode()).hexdigest() == DJANGO_RESPONSE_CLOSE_SHA256
    source = inspect.getsource(ASGIHandler.__call__)
    assert hashlib.sha256(source.encode()).hexdigest() == DJANGO_CALL_SHA256
    ours = Path(asgi_handler.__file__).read_text()
    assert ours.count("# changed:") == 5


def seen_in_thread(request):
    """A sync view: the thread it runs in, and whether that thread held a database
    connection when it began; then it opens one (a query)."""
    SEEN.append((threading.get_ident(), connection.connection is None))
    User.objects.exists()
    return JsonResponse({})


SEEN = []


async def test_a_request_thread_is_reused_and_begins_with_no_connection(settings, finished_in):
    settings.ROOT_URLCONF = __name__
    SEEN.clear()
    assert await Call("/test/thread")() == 200
    started = threading.active_count()

    assert await Call("/test/thread")() == 200
    assert await Call("/test/thread")() == 200

    (first, fresh_1), (second, fresh_2), (third, fresh_3) = SEEN
    assert first == second == third != threading.get_ident()  # the same thread, not the loop's
    # The query's connection was closed at each request's end, so a reused thread begins with
    # none. (Django never closes the in-memory SQLite database of the embedded test run: its
    # close() is a no-op, and there the thread keeps the test's one connection.)
    if not (connection.vendor == "sqlite" and connection.is_in_memory_db()):
        assert fresh_1 and fresh_2 and fresh_3
    assert threading.active_count() == started  # no thread started for the later requests
    assert finished_in[-3:] == [first] * 3  # request_finished in that thread each time


async def test_concurrent_requests_each_have_a_thread_of_their_own(settings):
    settings.ROOT_URLCONF = __name__
    SEEN.clear()
    HOLDING.clear()
    HOLD_RELEASE.clear()
    held = asyncio.ensure_future(Call("/test/hold")())
    await asyncio.wait_for(asyncio.to_thread(HOLDING.wait, 5), 6)

    # Served while the first request's thread is held: not queued behind it.
    assert await asyncio.wait_for(Call("/test/thread")(), 3) == 200
    HOLD_RELEASE.set()
    assert await asyncio.wait_for(held, 5) == 200
    assert SEEN[0][0] != HOLD[-1]


HOLD, HOLDING, HOLD_RELEASE = [], threading.Event(), threading.Event()


def hold(request):
    HOLD.append(threading.get_ident())
    HOLDING.set()
    HOLD_RELEASE.wait(5)
    return JsonResponse({})


def test_a_thread_still_busy_when_given_back_is_stopped_not_reused():
    threads = asgi_handler.RequestThreads(keep=1)
    release = threading.Event()
    busy = threads.take()
    running = busy.submit(release.wait, 5)
    threads.give(busy)  # its work goes on: not reused...
    assert threads.free == []
    assert threads.take() is not busy
    release.set()
    assert running.result(5) is True  # ...and the work it had is done, then the thread stops
    (worker,) = busy._threads
    worker.join(5)
    assert not worker.is_alive()

    idle = threads.take()
    idle.submit(int).result(5)
    threads.give(idle)
    assert threads.take() is idle and not idle.used  # reused, with nothing of its last request
    threads.give(idle)
    extra = asgi_handler.RequestThread()
    threads.give(extra)  # past keep=1: stopped, not kept
    assert threads.free == [idle]


SLOW_STARTED, SLOW_CANCELLED = asyncio.Event(), asyncio.Event()


async def slow(request):
    SLOW_STARTED.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        SLOW_CANCELLED.set()
        raise
    return JsonResponse({})


urlpatterns = [
    path("test/slow", slow),
    path("test/thread", seen_in_thread),
    path("test/hold", hold),
    *base_patterns,
]
