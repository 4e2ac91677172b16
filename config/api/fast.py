"""Async serving of the hottest requests in front of their DRF views.

A DRF view is sync: under ASGI each request hops to a thread, builds DRF's ``Request``,
negotiates, authenticates (a query), checks permissions, throttles (Redis from the
thread), runs the handler and hops again to render. For the requests most clients repeat
(``GET /api/v1/auth/me``, an audit page, an idempotent replay) that machinery is most of
the cost (docs/overhead.md, "Third round"). ``fast_view`` wraps the DRF view callable in an
``async def`` view that serves the **successful path** of such a request itself, with the
same steps in the same order and the same outcome:

1. authentication: the JWT checked in the event loop, the caller from the per-process
   cache (``config.api.callers``) or one query in a thread;
2. permissions: only views whose permissions are ``IsAuthenticated``/``HasTenant`` are
   served here (an authenticated caller of an active tenant passes both);
3. the rate limit: one MULTI/EXEC through redis.asyncio in the event loop (same key,
   window, headers; 429 envelope with ``Retry-After``);
4. the handler's work (at most one thread hop for the database) and the JSON body, rendered
   by DRF's ``JSONRenderer`` with DRF's ``Allow`` header, or DRF's error envelope for an
   ``APIException`` (an invalid cursor, a bad filter) through the same exception handler.

Everything else goes to the DRF view unchanged, in a thread, as Django would run it: a
missing or invalid token (DRF answers its exact 401), another method, an ``Accept`` other
than JSON without parameters, a replay the stored row cannot answer (first use, another
body, in flight). A request already counted against the rate limit here is not counted
again there (``TenantRateThrottle`` reuses ``request.rate_limit_usage``).

The wrapper keeps the DRF view's attributes (``cls``, ``initkwargs``, ``actions``,
``csrf_exempt``), so routers, drf-spectacular's schema and ``reverse`` see the view as before.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse
from rest_framework import permissions
from rest_framework.exceptions import APIException, Throttled, ValidationError

from config.db import release_connection

from . import idempotency, parsers, ratelimit
from .auth import JWTAuthentication
from .permissions import HasTenant
from .renderers import FastJSONRenderer

_RENDERER = FastJSONRenderer()
_AUTHENTICATION = JWTAuthentication()
_JSON_TYPES = frozenset({"application/json", "application/*", "*/*"})


def fast_view(drf_view, *, get=None, replay: bool = False, post: FastPost | None = None):
    """``drf_view`` (what DRF's ``as_view`` returned) served by an async view: ``get`` is an
    ``async def get(request, user, *args, **kwargs) -> body`` answering a GET's success (its
    ``APIException`` become the error envelope); ``replay`` answers a POST whose
    ``Idempotency-Key`` already holds the stored response of the same request; ``post``
    (a ``FastPost``) serves a POST's success path whole (see ``FastPost``). Anything
    else runs ``drf_view``. Without ``get``, ``replay`` and ``post`` (or when the view's
    authentication, permissions or throttles are not the defaults this module reproduces)
    ``drf_view`` is returned as it is."""
    view_class, actions = drf_view.cls, getattr(drf_view, "actions", None) or {}
    if get is not None and not _reproducible(view_class, drf_view.initkwargs, actions.get("get")):
        get = None
    if (replay or post is not None) and not _reproducible(view_class, drf_view.initkwargs, actions.get("post")):
        replay, post = False, None
    if get is None and not replay and post is None:
        return drf_view
    allow = _allow_header(view_class, actions, drf_view.initkwargs)

    async def view(request, *args, **kwargs):
        response = None
        if _accepts_plain_json(request):
            if get is not None and request.method == "GET":
                response = await _serve_get(request, get, allow, args, kwargs)
            elif post is not None and request.method == "POST":
                response = await _serve_post(request, post, allow, args, kwargs)
            elif replay and request.method == "POST" and idempotency.HEADER in request.headers:
                response = await _serve_replay(request, allow)
        if response is None:
            response = await sync_to_async(drf_view)(request, *args, **kwargs)
        return response

    functools.update_wrapper(view, drf_view, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
    view.__dict__.update(drf_view.__dict__)
    return view


def _reproducible(view_class, initkwargs, action: str | None) -> bool:
    """Whether this module does what DRF would for ``action`` of ``view_class``: our JWT
    authentication, the tenant throttle, JSON only, and permissions an authenticated
    caller of an active tenant passes. A view whose policies cannot be read without a
    request is left to DRF."""
    view = view_class(**initkwargs)
    view.action = action
    allowed = (permissions.IsAuthenticated, HasTenant)
    try:
        return (
            [type(a) for a in view.get_authenticators()] == [JWTAuthentication]
            and [type(t) for t in view.get_throttles()] == [ratelimit.TenantRateThrottle]
            and all(type(p) in allowed for p in view.get_permissions())
            and [type(r) for r in view.get_renderers()] == [FastJSONRenderer]
        )
    except Exception:  # noqa: BLE001 - e.g. a get_permissions() that reads self.request
        return False


def _allow_header(view_class, actions, initkwargs) -> str:
    """DRF's ``Allow`` header for this route (``APIView.default_response_headers``)."""
    view = view_class(**initkwargs)
    if actions:
        for method, action in actions.items():
            setattr(view, method, getattr(view, action))
        if "get" in actions and "head" not in actions:
            view.head = view.get
    elif hasattr(view, "get") and not hasattr(view, "head"):
        view.head = view.get  # Django's View.setup
    return ", ".join(view.allowed_methods)


def _accepts_plain_json(request) -> bool:
    """An ``Accept`` DRF's negotiation would answer with plain ``application/json``: none,
    or JSON/wildcards without media-type parameters (``; indent=4`` changes DRF's output)."""
    accept = request.headers.get("Accept")
    if not accept:
        return True
    for part in accept.split(","):
        media_type = part.strip()
        if ";" in media_type or media_type not in _JSON_TYPES:
            return False
    return True


async def _caller(request, allow):
    """The authenticated caller, counted against their tenant's budget. Returns
    ``(user, refusal)``: user None when DRF must answer (no or a bad token); refusal the
    429 envelope when the caller is over the limit, else None."""
    user = await _AUTHENTICATION.aauthenticate(request)
    if user is None:
        return None, None
    request.user = user  # the request log line reads it, as after DRF's authentication
    if isinstance(request, ASGIRequest):
        usage = await ratelimit.atenant_usage_loaded(user=user)
    else:  # the WSGI handler (tests) runs us in a new event loop per request
        usage = await sync_to_async(ratelimit.tenant_usage)(user=user)
    request.rate_limit_usage = usage
    if usage.limited:
        return user, error_response(Throttled(wait=usage.retry_after), allow)
    return user, None


async def _serve_get(request, get, allow, args, kwargs):
    user, refusal = await _caller(request, allow)
    if user is None or refusal is not None:
        return refusal
    try:
        body = await get(request, user, *args, **kwargs)
    except APIException as exc:
        return error_response(exc, allow)
    return json_response(body, 200, allow)


async def _serve_replay(request, allow):
    user, refusal = await _caller(request, allow)
    if user is None or refusal is not None:
        return refusal
    key = request.headers[idempotency.HEADER]
    if not idempotency.key_is_valid(key):
        return None
    fingerprint = idempotency.fingerprint(request)
    if isinstance(request, ASGIRequest):
        response = await idempotency.astored_replay(user=user, key=key, fingerprint=fingerprint)
    else:  # the WSGI handler (tests): a new event loop per request
        response = await sync_to_async(idempotency.stored_replay)(user=user, key=key, fingerprint=fingerprint)
    if response is not None:
        response["Allow"] = allow
    return response


@dataclass(frozen=True)
class FastPost:
    """A POST served async whole on its success path (``fast_view(post=...)``), with the
    DRF view's steps in the DRF view's order and the same outcome:

    1. the caller and the rate limit as for a GET (``_caller``: no or a bad token goes to
       DRF, over the limit is the 429 envelope);
    2. the body: ``Content-Type: application/json`` (``charset=utf-8`` allowed), parsed by
       the API's strict loader and validated by ``serializer`` in the event loop (CPU
       only). A body that does not parse or validate, any other content type, a body over
       ``DATA_UPLOAD_MAX_MEMORY_SIZE`` or an invalid ``Idempotency-Key`` goes to the DRF
       view, which answers it as before (its 400/413/415, or 422 when the key was used with
       another body: DRF claims the key before it reads the body);
    3. ``idempotent``: a replay from the Redis copy in the event loop; else, in the thread
       below, the key claimed first, exactly as ``config.api.idempotency.idempotent``
       (replay, 422 mismatch, 409 in use), the response stored for replay or the key
       released;
    4. one thread hop running ``handle(user, validated_data, *args, **kwargs) -> (body,
       status)`` (sync: the service call, the body from what it returned). What it raises
       is answered by DRF's exception handler (the error envelope: 404, 409, 503...), as
       DRF's ``handle_exception`` would; anything the handler does not know propagates to
       the middleware's 500 envelope. The thread gives its database connection back to the
       pool when the work is done, not after the response is sent.

    Only for views whose policies ``_reproducible`` accepts (JWT, the tenant throttle,
    authenticated-tenant permissions, JSON)."""

    serializer: type
    handle: Callable[..., tuple[object, int]]
    idempotent: bool = False
    # One serializer instance per thread, built once: its fields are deep-copied per
    # instance (~70 us of a request), and validation keeps no state on it (run_validation
    # returns the data or raises), so the event loop's requests reuse it one at a time.
    _instances: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    def validated(self, data) -> dict | None:
        """``serializer``'s validated data for ``data``, or None when it is not valid (the
        DRF view then answers with its errors)."""
        instance = getattr(self._instances, "serializer", None)
        if instance is None:
            instance = self._instances.serializer = self.serializer()
        try:
            return instance.run_validation(data)
        except (ValidationError, DjangoValidationError):
            return None


def _json_body(request) -> bool:
    """``application/json``, with no parameter but ``charset=utf-8``: what the strict
    loader decodes as DRF's parser would (any other type is DRF's negotiation, a 415)."""
    params = request.content_params
    return (
        request.content_type == "application/json"
        and params.keys() <= {"charset"}
        and params.get("charset", "utf-8").lower() in ("utf-8", "utf8")
    )


async def _serve_post(request, post: FastPost, allow, args, kwargs):
    if not _json_body(request):
        return None
    key = request.headers.get(idempotency.HEADER) if post.idempotent else None
    if key is not None and not idempotency.key_is_valid(key):
        return None  # DRF's 400 invalid_idempotency_key
    user, refusal = await _caller(request, allow)
    if user is None or refusal is not None:
        return refusal
    try:
        data = parsers.loads(request.body)
    except (parsers.InvalidJSON, RequestDataTooBig):
        return None
    fingerprint = idempotency.fingerprint(request) if key is not None else None
    if key is not None and isinstance(request, ASGIRequest):
        replayed = await idempotency.acopied_replay(user=user, key=key, fingerprint=fingerprint)
        if replayed is not None:
            replayed["Allow"] = allow
            return replayed
    validated = post.validated(data)
    if validated is None:
        return None

    def respond() -> HttpResponse:
        try:
            body, status = post.handle(user, validated, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - rendered as DRF would, or re-raised
            drf_response = ratelimit.exception_handler(exc, {})
            if drf_response is None:
                raise
            return json_response(drf_response.data, drf_response.status_code, allow, headers=dict(drf_response.items()))
        return json_response(body, status, allow)

    def work() -> HttpResponse:
        try:
            if key is None:
                return respond()
            response = idempotency.serve(user=user, key=key, fingerprint=fingerprint, request=request, respond=respond)
            response["Allow"] = allow  # a replay, 422 or 409 from the claim: DRF's finalize_response sets it
            return response
        finally:
            release_connection()

    return await in_thread(request, work)


async def in_thread(request, function):
    """``function()`` (sync, the database) in a thread: under ASGI the request's own
    thread (``config.api.asgi_handler`` takes it from its free list for the request, and
    ``request_finished`` closes its connection there), so no thread is started for it; the
    WSGI test client runs async views in an event loop of their own, in the test's
    thread, whose connection holds the test's transaction: the same call runs there."""
    return await sync_to_async(function, thread_sensitive=True)()


def json_response(body, status: int, allow: str, headers=None) -> HttpResponse:
    """What DRF's ``Response`` renders with the API's renderer: the same bytes and headers."""
    response = HttpResponse(_RENDERER.render(body), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        if name.lower() != "content-type":  # an unrendered DRF Response holds Django's default
            response[name] = value
    response["Allow"] = allow
    return response


def error_response(exc: APIException, allow: str) -> HttpResponse:
    """The error envelope DRF's exception handler gives ``exc``, rendered as DRF would."""
    drf_response = ratelimit.exception_handler(exc, {})
    return json_response(drf_response.data, drf_response.status_code, allow, headers=dict(drf_response.items()))


class PageRequest:
    """What DRF's paginators read of a request (``query_params``, ``build_absolute_uri``),
    for a page built from a plain Django request without a DRF ``Request``."""

    def __init__(self, request):
        self._request = request
        self.query_params = request.GET

    def build_absolute_uri(self, location=None):
        return self._request.build_absolute_uri(location)
