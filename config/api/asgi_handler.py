"""Django's ASGI handler without the two thread hops it makes for every request.

Django's ``ASGIHandler.handle`` sends ``request_started`` with ``asend`` (its sync receivers
run through ``sync_to_async``) and closes the response through ``sync_to_async`` (the close
sends ``request_finished``). Both are thread-sensitive, so each request gets a thread of its
own (asgiref's per-request ``ThreadSensitiveContext`` executor) and, when it ends, a second
thread to join the first: an async view that does no sync work (``/health``, the cached
``/auth/me``, a replay, an SSE preamble) starts two threads and hops twice only for this.

Why the hops exist: the receivers Django connects act on *the calling thread's* database
connections (``reset_queries``, ``close_old_connections``), and the request's sync work
(a sync view, ``sync_to_async`` in an async view) runs in the request's thread, so its
connections must be closed there. Here the hops are made only when they can matter:

- ``request_started``: the request's thread is created on first use, so at this point it
  has no connection to reset or close: Django's per-thread receivers (``reset_queries``,
  ``close_old_connections``) would do nothing there and are skipped; nothing else is
  connected by Django.
- the response's close (``request_finished``): inline when the request did no
  thread-sensitive sync work (no request thread was created: no connection of this request
  is open anywhere it could close), the response holds no resource but its request without
  an uploaded file (a file response, a temporary upload file), and every receiver is one of
  Django's: the per-thread ones are skipped (Django would run them in a thread created for
  them, with no connection), the per-context ones (``close_caches``, ``reset_urlconf``) run
  inline. Otherwise in the request's thread, as Django does.

A receiver we do not know (a package's, a test's) sends the signal Django's way, hop
included. A third hop, on error responses only: Django logs every response of 400 or more
to ``django.request`` from a thread; that hop is made only when the logger would write the
line (our LOGGING keeps it at ERROR, so a 4xx hopped to log nothing).

The request's thread itself is reused: Django's ``__call__`` enters a
``ThreadSensitiveContext()`` per request, for which asgiref starts a new thread on the
request's first sync call and stops it at the end. Starting a thread blocks the event loop
until the new thread has run, which under load waits for the GIL: py-spy on the served
``POST …/messages`` (202) path under 50 connections put a fifth of the process's GIL time
in ``Thread.start`` (docs/benchmarks.md, "Fifth round"). Here each request's context is
given a single-thread executor from a free list (``REQUEST_THREADS``) and hands it back when
the request ends; a thread still busy then (a turn an SSE client left) is not reused but
stopped once its work is done. A request's thread closes its database connections at the
request's end as before (``request_finished`` in that thread), so a reused thread starts
with none, as a new one does.

``handle``, ``get_response_async`` and ``__call__`` are Django 5.2's with those calls
replaced (marked), ``close_response`` follows ``HttpResponseBase.close``; a test pins the
source of Django's four methods, so an upgrade that changes any fails loudly.
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import AsyncToSync, SyncToAsync, ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.cache import close_caches
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, ASGIRequest, get_script_prefix
from django.core.handlers.base import reset_urlconf
from django.db import close_old_connections, reset_queries
from django.urls import set_script_prefix, set_urlconf
from django.utils.log import log_response, request_logger

# Django's receivers of request_started/request_finished, and what each acts on.
# - The calling thread's database connections: under Django's handler these run in the
#   request's thread; where this handler runs a signal inline that thread would have been
#   created just for them, so it would hold no connection and they would do nothing. They
#   are skipped (each costs ``connections.all(initialized_only=True)``, an attribute miss on
#   a thread-critical Local per alias: a tenth of a served /health's CPU under py-spy).
PER_THREAD_RECEIVERS = frozenset({reset_queries, close_old_connections})
# - The request's context (asgiref Locals follow the context into a thread and back): the
#   caches it used (closing a Redis or local-memory cache drops no data) and its urlconf.
#   Run inline.
PER_CONTEXT_RECEIVERS = frozenset({close_caches, reset_urlconf})
KNOWN_RECEIVERS = PER_THREAD_RECEIVERS | PER_CONTEXT_RECEIVERS


def _inline_receivers(signal, sender):
    """When every receiver of the signal is one of Django's known ones, those to call inline
    (the per-context ones); else None: the signal goes Django's way."""
    sync_receivers, async_receivers = signal._live_receivers(sender)
    if async_receivers or not all(receiver in KNOWN_RECEIVERS for receiver in sync_receivers):
        return None
    return [receiver for receiver in sync_receivers if receiver in PER_CONTEXT_RECEIVERS]


class RequestThread(ThreadPoolExecutor):
    """One request's thread (asgiref wants an executor that runs one call at a time on one
    thread), which remembers what this request gave it."""

    def __init__(self):
        super().__init__(max_workers=1, thread_name_prefix="request")
        self.futures = []

    def submit(self, fn, /, *args, **kwargs):
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future

    @property
    def used(self) -> bool:
        return bool(self.futures)

    def idle(self) -> bool:
        return all(future.done() for future in self.futures)


class RequestThreads:
    """The free list of request threads: taken when a request starts, given back when it
    ends. At most ``keep`` wait there (the rest stop); a thread still running what its
    request gave it stops once done instead of serving the next request behind it."""

    def __init__(self, keep: int = 64):
        self.keep = keep
        self.free: list[RequestThread] = []

    def take(self) -> RequestThread:
        try:
            return self.free.pop()
        except IndexError:
            return RequestThread()

    def give(self, thread: RequestThread) -> None:
        if thread.idle() and len(self.free) < self.keep:
            thread.futures.clear()
            self.free.append(thread)
        else:
            thread.shutdown(wait=False)


REQUEST_THREADS = RequestThreads()


def _request_thread_used() -> bool:
    """Whether thread-sensitive sync work of this request may hold a thread's state (its
    database connections): the request's thread ran something, or such work goes to a
    thread shared beyond this request (a parent ``async_to_sync``, no per-request
    context)."""
    if getattr(AsyncToSync.executors, "current", None) is not None:
        return True
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None:
        return True
    executor = SyncToAsync.context_to_thread_executor.get(context)
    return executor is not None and getattr(executor, "used", True)


async def send_request_started(sender, scope) -> None:
    receivers = _inline_receivers(signals.request_started, sender)
    if receivers is None:
        await signals.request_started.asend(sender=sender, scope=scope)
        return
    for receiver in receivers:
        receiver(signal=signals.request_started, sender=sender, scope=scope)


async def send_request_finished(sender) -> None:
    receivers = None if _request_thread_used() else _inline_receivers(signals.request_finished, sender)
    if receivers is None:
        await signals.request_finished.asend(sender=sender)
        return
    for receiver in receivers:
        receiver(signal=signals.request_finished, sender=sender)


def _closers_inline(response) -> bool:
    """Whether the response's resources may be closed in the event loop: the only one is
    its request (Django adds ``request.close`` to every response) and that request holds no
    uploaded file. Closing the request closes its body stream, which the handler closes in
    the event loop anyway; an uploaded file may be a temporary file on disk to delete."""
    for closer in response._resource_closers:
        request = getattr(closer, "__self__", None)
        if not (
            isinstance(request, ASGIRequest)
            and closer.__func__ is type(request).close
            and not getattr(request, "_files", None)
        ):
            return False
    return True


async def close_response(response) -> None:
    """``response.close()`` (its resources, then ``request_finished``), in the event loop
    when nothing of it needs the request's thread: then as Django 5.2's
    ``HttpResponseBase.close`` does it, with only the per-context receivers called."""
    receivers = None
    if _closers_inline(response) and not _request_thread_used():
        receivers = _inline_receivers(signals.request_finished, response._handler_class)
    if receivers is None:
        await sync_to_async(response.close)()
        return
    for closer in response._resource_closers:
        try:
            closer()
        except Exception:  # noqa: BLE001, S110 - as Django's close: a closer's failure is ignored
            pass
    response._resource_closers.clear()
    response.closed = True
    for receiver in receivers:
        receiver(signal=signals.request_finished, sender=response._handler_class)


class AppASGIHandler(ASGIHandler):
    """``ASGIHandler`` whose request-start and response-close hop to a thread only when the
    request has one (module docstring), and whose error responses hop to a thread for
    Django's ``django.request`` line only when that logger would write it."""

    async def get_response_async(self, request):
        """Django 5.2's ``BaseHandler.get_response_async``. Django logs every response of
        400 or more to ``django.request`` through ``sync_to_async`` (a hop to the loop's
        thread pool); our LOGGING keeps that logger at ERROR (one JSON line a request is
        ours), so a 4xx (a 429, a 401, a 404) hopped to a thread to log nothing. The hop is
        made when the logger is enabled for the level ``log_response`` would use."""
        set_urlconf(settings.ROOT_URLCONF)
        response = await self._middleware_chain(request)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            level = logging.ERROR if response.status_code >= 500 else logging.WARNING
            if getattr(response, "_has_been_logged", False) or not request_logger.isEnabledFor(level):
                response._has_been_logged = True  # as log_response marks it, logged or not
            else:
                await sync_to_async(log_response, thread_sensitive=False)(
                    "%s: %s",
                    response.reason_phrase,
                    request.path,
                    response=response,
                    request=request,
                )
        return response

    async def __call__(self, scope, receive, send):
        """Django 5.2's ``ASGIHandler.__call__``; the request's thread is taken from
        ``REQUEST_THREADS`` (module docstring) and given back."""
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = REQUEST_THREADS.take()  # changed: was ThreadSensitiveContext() alone
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            REQUEST_THREADS.give(thread)

    async def handle(self, scope, receive, send):
        """Django 5.2's ``ASGIHandler.handle``; the two changes are marked."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        await send_request_started(self.__class__, scope)  # changed: was request_started.asend
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            await close_response(error_response)  # changed: was sync_to_async(close)
            return

        async def process_request(request, send):
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                # Client disconnected during send_response (ignore exception).
                pass

            return response

        # Try to catch a disconnect while getting response.
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # Now wait on both tasks (they may have both finished by now).
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    # Ignore client disconnects.
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                # Allow views to handle cancellation.
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    # Task re-raised the CancelledError as expected.
                    pass

        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await send_request_finished(self.__class__)  # changed: was request_finished.asend
        else:
            await close_response(response)  # changed: was sync_to_async(response.close)

        body_file.close()


def get_asgi_application() -> AppASGIHandler:
    """``django.core.asgi.get_asgi_application`` with this handler."""
    django.setup(set_prefix=False)
    return AppASGIHandler()
