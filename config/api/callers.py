"""A short-lived, bounded, per-process cache of the authenticated caller's row (the user
with their tenant joined), keyed by user id.

Every authenticated request needs the user and the tenant to check that both are still
active and that the token predates no password change (``config.api.auth``). Reading them
from PostgreSQL costs a query and, in an async view, a thread hop; for the hot reads that
is a large part of the request (docs/overhead.md). The cache keeps the row's field values
(never a shared model instance: each request gets fresh ``User``/``Tenant`` objects built
with ``Model.from_db``, so a view that changes its ``request.user`` changes nobody else's).

Bound on staleness (the security note of the README): an entry lives at most
``AUTH_CALLER_CACHE_SECONDS`` (2 s by default; 0 turns the cache off). A user deactivated,
a tenant deactivated or a password changed is refused

- at once in this process when the change is saved through the ORM (``save()``/``delete()``
  of a user or a tenant, which every service, the admin and the commands use): the entry is
  evicted (``post_save``/``post_delete`` receivers, connected in ``config.api.apps``);
- within ``AUTH_CALLER_CACHE_SECONDS`` otherwise (other web processes, a bulk
  ``QuerySet.update()``, a change made directly in the database).

Long-lived connections keep re-checking with ``user_still_active`` (a query, uncached).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from django.conf import settings
from django.contrib.auth import get_user_model

# Entries kept at most; the oldest go first (one process serves a few thousand users a TTL).
MAX_ENTRIES = 10_000


class CallerCache:
    """user id -> (expiry, user field values, tenant field values). Thread-safe: the
    sync DRF views read it from their threads, the async views from the event loop."""

    def __init__(self, *, clock=time.monotonic, max_entries: int = MAX_ENTRIES):
        self.clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[object, tuple[float, tuple, tuple | None]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def ttl() -> float:
        return float(getattr(settings, "AUTH_CALLER_CACHE_SECONDS", 0) or 0)

    def get(self, user_id):
        """A fresh ``User`` (its ``tenant`` loaded) for ``user_id``, or None when not cached
        or expired. The caller still checks activity and the token's password hash."""
        user_id = str(user_id)  # tokens carry the id as a string
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[user_id]
                return None
        return _build(entry[1], entry[2])

    def put(self, user) -> None:
        """Remembers ``user`` (loaded with ``select_related("tenant")``) for the TTL."""
        ttl = self.ttl()
        if ttl <= 0:
            return
        tenant = user.tenant if user.tenant_id else None
        entry = (self.clock() + ttl, _values(user), _values(tenant) if tenant is not None else None)
        with self._lock:
            self._entries[str(user.pk)] = entry
            self._entries.move_to_end(str(user.pk))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def evict(self, user_id) -> None:
        with self._lock:
            self._entries.pop(str(user_id), None)

    def evict_tenant(self, tenant_id) -> None:
        """Forgets every cached user of ``tenant_id`` (its row changed)."""
        with self._lock:
            for user_id in [uid for uid, entry in self._entries.items() if entry[2] and entry[2][1] == tenant_id]:
                del self._entries[user_id]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _values(instance) -> tuple:
    """(model, pk, field names, values, database alias) of ``instance``'s concrete fields,
    as loaded."""
    meta = instance._meta
    names = tuple(field.attname for field in meta.concrete_fields)
    values = tuple(getattr(instance, name) for name in names)
    return (type(instance), instance.pk, names, values, instance._state.db or "default")


def _build(user_values: tuple, tenant_values: tuple | None):
    model, _, names, values, alias = user_values
    user = model.from_db(alias, names, values)
    if tenant_values is not None:
        tenant_model, _, tenant_names, tenant_fields, tenant_alias = tenant_values
        # User and Tenant have scalar fields only (no JSON or other mutable values), so the
        # cached values can be handed to each new instance as they are.
        user._state.fields_cache["tenant"] = tenant_model.from_db(tenant_alias, tenant_names, tenant_fields)
    return user


callers = CallerCache()


def _user_changed(sender, instance, **kwargs) -> None:
    callers.evict(instance.pk)


def _tenant_changed(sender, instance, **kwargs) -> None:
    callers.evict_tenant(instance.pk)


def connect_invalidation() -> None:
    """Evicts a user's entry when the user row is saved or deleted, and every entry of a
    tenant when the tenant row is: the change is seen by this process's next request.
    Called from ``ApiConfig.ready`` (config/api imports no app: the models are looked up)."""
    from django.db.models.signals import post_delete, post_save

    user_model = get_user_model()
    tenant_model = user_model._meta.get_field("tenant").related_model
    for signal in (post_save, post_delete):
        signal.connect(_user_changed, sender=user_model, dispatch_uid="config.api.callers.user")
        signal.connect(_tenant_changed, sender=tenant_model, dispatch_uid="config.api.callers.tenant")
