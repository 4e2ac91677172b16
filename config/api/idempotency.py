"""``Idempotency-Key`` for creating POSTs (draft-ietf-httpapi-idempotency-key-header).

Apply with one line on a DRF handler (``create`` of a viewset, ``post`` of an APIView, a
POST ``@action``)::

    from config.api.idempotency import idempotent

    @extend_schema(...)
    @idempotent
    def create(self, request, *args, **kwargs): ...

A viewset that inherits ``CreateModelMixin.create`` writes
``create = idempotent(mixins.CreateModelMixin.create)``.

What the caller gets, per (tenant, user, key):

- first request: runs normally. A 2xx response is stored (status, body bytes,
  ``Content-Type``/``Location``) for ``IDEMPOTENCY_TTL_HOURS``.
- same key, same request (method, path, body): the stored response, byte for byte, with
  ``Idempotent-Replayed: true``; the handler does not run, so nothing is created.
- same key, another request: 422 ``idempotency_key_mismatch``.
- same key while the first is still running: waits up to ``IDEMPOTENCY_WAIT_SECONDS`` and
  replays, else 409 ``idempotency_key_in_use`` with ``Retry-After: 1``.
- the first request ended in an error (4xx/5xx) or streamed: the key is released, so a
  retry (or a corrected body) with the same key runs again. Services are transactional, so
  an error created nothing; the one exception is the sync chat turn answering 503 after
  the user message was stored, where a retry stores the message again (by design, the
  retry is a new attempt).

Why a table and not only the view's transaction: chat commits the user message before
the agent runs and message creation enqueues Celery on commit, so the work cannot share
one transaction with the key. The key row is inserted first, in one statement of its own
(`INSERT ... ON CONFLICT DO NOTHING RETURNING id`); the unique constraint decides which of two
concurrent duplicates runs.
A row left ``in_progress`` by a crashed process is taken over after
``IDEMPOTENCY_LOCK_SECONDS``.

Only authenticated requests are scoped (anonymous POSTs such as register pass through).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import re
import time
import uuid
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections, router
from django.http import HttpResponse
from django.http.request import RawPostDataException
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema

from config.core import metrics

from .errors import error_response
from .models import IdempotencyKey

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Response headers that belong to the response itself and are replayed with it.
REPLAYED_RESPONSE_HEADERS = ("Content-Type", "Location")
_KEY_OK = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")
_POLL_SECONDS = 0.05

IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    name=HEADER,
    type=OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "Unique per intended creation (e.g. a UUID). Repeating it with the same body replays the first "
        "response (header Idempotent-Replayed: true) and creates nothing; another body is 422; a duplicate "
        "sent while the first is running is 409. Keys are kept IDEMPOTENCY_TTL_HOURS (24 by default)."
    ),
)


def idempotent(handler):
    """Makes a DRF POST handler honour ``Idempotency-Key`` (see the module docstring).
    Other methods, requests without the header and anonymous requests pass through."""
    if inspect.iscoroutinefunction(handler):
        raise TypeError("idempotent supports sync DRF handlers only")

    @functools.wraps(handler)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        user = getattr(request, "user", None)
        if (
            request.method != "POST"
            or key is None
            or not (user is not None and user.is_authenticated and getattr(user, "tenant_id", None))
        ):
            return handler(view, request, *args, **kwargs)
        if not _KEY_OK.match(key):
            return error_response(
                400,
                "invalid_idempotency_key",
                f"{HEADER} must be 1 to 255 printable ASCII characters.",
                {"header": HEADER},
            )

        claim = _claim(user=user, key=key, fingerprint=_fingerprint(request), request=request)
        if not isinstance(claim, IdempotencyKey):
            return claim  # a replay, a mismatch or a conflict

        try:
            response = handler(view, request, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - rendered by DRF below, or re-raised
            try:
                response = view.handle_exception(exc)
            except Exception:
                _release(claim)
                raise
        response = view.finalize_response(request, response, *args, **kwargs)
        _complete(claim, response)
        return response

    wrapper.idempotent = True  # config.api.fast serves replays of it before the view runs
    return extend_schema(parameters=[IDEMPOTENCY_KEY_PARAMETER])(wrapper)


def key_is_valid(key: str) -> bool:
    return bool(_KEY_OK.match(key))


def fingerprint(request) -> str:
    """The request's fingerprint (see ``_fingerprint``) for a Django or a DRF request."""
    return _fingerprint(request)


def stored_replay(*, user, key: str, fingerprint: str) -> HttpResponse | None:
    """The replay of the stored response when ``key`` of ``user`` holds a completed,
    unexpired response of the request with ``fingerprint``; None otherwise (first use,
    another request, still in flight, expired), where the caller runs the view, whose
    claim decides (``_claim``). No write: a replay creates nothing. From the Redis copy
    when there is one (``_copy_store``), else one query."""
    cache = _copy_cache()
    if cache is not None:
        try:
            copy = cache.get(_copy_key(user.tenant_id, user.pk, key))
        except Exception:  # noqa: BLE001 - the row is the truth; the copy only saves a query
            copy = None
        if copy is not None:
            return _replay_copy(copy, fingerprint)
    return stored_replay_from_row(user=user, key=key, fingerprint=fingerprint)


async def astored_replay(*, user, key: str, fingerprint: str) -> HttpResponse | None:
    """``stored_replay`` for async views: the Redis copy read through redis.asyncio in the
    event loop (on django-redis), the row in a thread."""
    copy = await _acopy(user=user, key=key)
    if copy is not None:
        return _replay_copy(copy, fingerprint)
    return await sync_to_async(stored_replay_from_row)(user=user, key=key, fingerprint=fingerprint)


async def acopied_replay(*, user, key: str, fingerprint: str) -> HttpResponse | None:
    """The replay from the Redis copy alone (read in the event loop), or None: no copy
    (first use, in flight, evicted, not on django-redis) or another request. For a caller
    that claims the key next anyway (``serve``), whose row decides everything else."""
    copy = await _acopy(user=user, key=key)
    return _replay_copy(copy, fingerprint) if copy is not None else None


async def _acopy(*, user, key: str) -> dict | None:
    """The Redis copy of ``key``'s response, or None. Only django-redis keeps copies: on
    any other cache (the embedded default's local memory) there is no Redis to ask, and
    the row decides (asking for a client there was a 500 on every keyed POST)."""
    cache = _copy_cache()
    if cache is None:
        return None
    from .ratelimit import async_redis

    try:
        raw = await async_redis("default").get(cache.make_key(_copy_key(user.tenant_id, user.pk, key)))
        return cache.client.decode(raw) if raw is not None else None
    except Exception:  # noqa: BLE001 - the row is the truth; the copy only saves a query
        return None


def serve(*, user, key: str, fingerprint: str, request, respond) -> HttpResponse:
    """What ``idempotent`` does around a handler, for a caller that renders its own
    response (``config.api.fast``'s POSTs): the key claimed first (a replay, 422 mismatch
    or 409 in use answer instead), then ``respond()`` (sync; it renders the errors it
    handles and raises the others), then a 2xx stored for replay, anything else (or an
    exception) releasing the key. ``request`` gives the method and path of the row.
    Sync: the database."""
    claim = _claim(user=user, key=key, fingerprint=fingerprint, request=request)
    if not isinstance(claim, IdempotencyKey):
        return claim  # a replay, a mismatch or a conflict
    try:
        response = respond()
    except Exception:
        _release(claim)
        raise
    _complete(claim, response)
    return response


def stored_replay_from_row(*, user, key: str, fingerprint: str) -> HttpResponse | None:
    existing = IdempotencyKey.objects.filter(tenant_id=user.tenant_id, user_id=user.pk, key=key).first()
    if (
        existing is None
        or existing.state != IdempotencyKey.State.COMPLETED
        or existing.fingerprint != fingerprint
        or existing.expires_at <= timezone.now()
    ):
        return None
    return _replay(existing)


# A completed key's response is final (only in-progress rows are released or taken over),
# so a copy of it in Redis, expiring with the row, answers replays without the database.
# Only on django-redis (the real stack), where the async views read it in the event loop.
def _copy_cache():
    from django.core.cache import cache

    return cache if hasattr(getattr(cache, "client", None), "get_client") else None


def _copy_key(tenant_id, user_id, key: str) -> str:
    return f"idempotency:{tenant_id}:{user_id}:{hashlib.sha256(key.encode()).hexdigest()}"


def _copy_store(claim: IdempotencyKey, *, status: int, body: bytes, headers: dict) -> None:
    cache = _copy_cache()
    timeout = int((claim.expires_at - timezone.now()).total_seconds())
    if cache is None or timeout <= 0:
        return
    copy = {
        "fingerprint": claim.fingerprint,
        "status": status,
        "body": bytes(body),
        "headers": headers,
        "expires_at": claim.expires_at.timestamp(),
    }
    try:
        cache.set(_copy_key(claim.tenant_id, claim.user_id, claim.key), copy, timeout)
    except Exception:  # noqa: BLE001 - replays then read the row
        logger.warning("could not copy an idempotent response to the cache", exc_info=True)


def _replay_copy(copy: dict, fingerprint: str) -> HttpResponse | None:
    if copy["fingerprint"] != fingerprint or copy["expires_at"] <= time.time():
        return None  # another request (the view answers 422), or expired
    return _replay(
        IdempotencyKey(response_status=copy["status"], response_body=copy["body"], response_headers=copy["headers"])
    )


def _fingerprint(request) -> str:
    """sha256 over method, path (trailing slash ignored: both spellings are one endpoint),
    query string and the raw body. Falls back to the parsed data, canonically ordered, when
    something before the handler has already consumed the body stream."""
    django_request = getattr(request, "_request", request)
    try:
        body = django_request.body
    except RawPostDataException:
        body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str).encode()
    digest = hashlib.sha256()
    for part in (request.method, django_request.path.rstrip("/"), django_request.META.get("QUERY_STRING", "")):
        digest.update(part.encode())
        digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


def _claim(*, user, key: str, fingerprint: str, request):
    """Returns our ``IdempotencyKey`` row (in_progress, ours to complete) or the response
    to answer with instead: a replay, 422 mismatch or 409 in use."""
    scope = {"tenant_id": user.tenant_id, "user_id": user.pk, "key": key}
    polls = int(settings.IDEMPOTENCY_WAIT_SECONDS / _POLL_SECONDS)
    for attempt in range(polls + 1):
        now = timezone.now()
        token = uuid.uuid4().hex
        claimed = _insert_unless_exists(
            IdempotencyKey(
                **scope,
                fingerprint=fingerprint,
                method=request.method,
                path=request.path[:500],
                lock_token=token,
                locked_at=now,
                created_at=now,
                expires_at=now + timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS),
            )
        )
        if claimed is not None:
            return claimed
        # The key exists: decide from its row.

        existing = IdempotencyKey.objects.filter(**scope).first()
        if existing is None:
            continue  # released (the first request failed) in between: try to claim it again
        if existing.expires_at <= now:
            IdempotencyKey.objects.filter(pk=existing.pk, expires_at__lte=now).delete()
            continue
        if existing.fingerprint != fingerprint:
            return error_response(
                422,
                "idempotency_key_mismatch",
                f"This {HEADER} was already used with a different request.",
                {"header": HEADER},
            )
        if existing.state == IdempotencyKey.State.COMPLETED:
            return _replay(existing)
        if existing.locked_at <= now - timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS):
            # The first request died without finishing: take the key over.
            taken = IdempotencyKey.objects.filter(
                pk=existing.pk, state=IdempotencyKey.State.IN_PROGRESS, lock_token=existing.lock_token
            ).update(lock_token=token, locked_at=now)
            if taken:
                existing.lock_token, existing.locked_at = token, now
                logger.warning("took over a stale idempotency key", extra={"idempotency_key_id": existing.pk})
                return existing
            continue
        if attempt < polls:
            time.sleep(_POLL_SECONDS)
    return error_response(
        409,
        "idempotency_key_in_use",
        f"A request with this {HEADER} is still being processed. Retry shortly.",
        {"header": HEADER},
        headers={"Retry-After": "1"},
    )


def _insert_unless_exists(row: IdempotencyKey) -> IdempotencyKey | None:
    """Inserts ``row`` and returns it with its id, or None when (tenant, user, key) exists.

    One statement, ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``: the unique
    constraint still decides between concurrent duplicates, but a replay no longer costs a
    failing INSERT in its own transaction (BEGIN, INSERT, unique violation, ROLLBACK) and an
    IntegrityError raised and caught, and a first request no BEGIN/COMMIT around its one
    INSERT (docs/overhead.md, "Idempotent replay")."""
    meta = IdempotencyKey._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    connection = connections[router.db_for_write(IdempotencyKey)]
    quote = connection.ops.quote_name
    values = [field.get_db_prep_save(field.pre_save(row, True), connection) for field in fields]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) ON CONFLICT DO NOTHING RETURNING {quote(meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        inserted = cursor.fetchone()
    if inserted is None:
        return None
    row.pk = inserted[0]
    row._state.adding = False
    row._state.db = connection.alias
    return row


def _complete(claim: IdempotencyKey, response) -> None:
    """Stores a 2xx response for replay; anything else releases the key."""
    if response.streaming or not 200 <= response.status_code < 300:
        _release(claim)
        return
    if hasattr(response, "render") and not response.is_rendered:
        response.render()
    headers = {name: response[name] for name in REPLAYED_RESPONSE_HEADERS if name in response}
    stored = IdempotencyKey.objects.filter(pk=claim.pk, lock_token=claim.lock_token).update(
        state=IdempotencyKey.State.COMPLETED,
        response_status=response.status_code,
        response_body=response.content,
        response_headers=headers,
    )
    if not stored:
        logger.warning("idempotency key was taken over before the response was stored")
        return
    _copy_store(claim, status=response.status_code, body=response.content, headers=headers)


def _release(claim: IdempotencyKey) -> None:
    IdempotencyKey.objects.filter(pk=claim.pk, lock_token=claim.lock_token).delete()


def _replay(row: IdempotencyKey) -> HttpResponse:
    headers = dict(row.response_headers)
    response = HttpResponse(
        bytes(row.response_body), status=row.response_status, content_type=headers.pop("Content-Type", None)
    )
    for name, value in headers.items():
        response[name] = value
    response[REPLAYED_HEADER] = "true"
    metrics.IDEMPOTENT_REPLAYS.inc()
    return response


def idempotency_keys_purge(*, now=None) -> int:
    """Deletes expired keys; returns how many. Run by ``manage.py purge_idempotency_keys``."""
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
