"""Django's built-in middleware, run in the event loop under ASGI.

Django's ``MiddlewareMixin`` is async-capable only in name: under ASGI its ``__acall__``
runs ``process_request`` and ``process_response`` each through ``sync_to_async`` (and the
handler adapts ``process_view`` the same way), a thread hop each. Their work is CPU-only
(headers, cookies, a lazy session and user) except where a request really touches the
session, which these subclasses check for, hopping to a thread only then:

- ``SessionMiddleware.process_response`` saves a modified session (database);
- ``MessageMiddleware.process_response`` stores messages that were used or added (the
  session storage may load the session).

- ``CsrfViewMiddleware`` reads the secret from the session with ``CSRF_USE_SESSIONS``.

Django's deploy checks (``security.W001``-``W003`` and the HSTS, SSL, nosniff, referrer and
X-Frame checks that depend on them) look for Django's exact dotted paths in ``MIDDLEWARE``;
``config/api/checks.py`` runs them again with these classes counted as Django's, so
``check --deploy`` keeps every one of them. Under WSGI these are Django's classes unchanged.
See docs/overhead.md.
"""

from asgiref.sync import sync_to_async
from corsheaders.middleware import CorsMiddleware
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.cache import patch_vary_headers
from django.utils.functional import SimpleLazyObject, empty

# Each Inline* class here and the Django class whose deploy checks apply to it.
DJANGO_EQUIVALENTS = {
    "config.api.native.InlineSecurityMiddleware": "django.middleware.security.SecurityMiddleware",
    "config.api.native.InlineSessionMiddleware": "django.contrib.sessions.middleware.SessionMiddleware",
    "config.api.native.InlineCommonMiddleware": "django.middleware.common.CommonMiddleware",
    "config.api.native.InlineCsrfViewMiddleware": "django.middleware.csrf.CsrfViewMiddleware",
    "config.api.native.InlineAuthenticationMiddleware": "django.contrib.auth.middleware.AuthenticationMiddleware",
    "config.api.native.InlineMessageMiddleware": "django.contrib.messages.middleware.MessageMiddleware",
    "config.api.native.InlineXFrameOptionsMiddleware": "django.middleware.clickjacking.XFrameOptionsMiddleware",
}


class InlineMiddleware:
    """Mixin for a ``MiddlewareMixin`` subclass: under ASGI its hooks run inline in the
    event loop; a hook that may do I/O for this request says so in ``needs_thread_*``
    and is then run in a thread as Django would."""

    def __init__(self, get_response):
        super().__init__(get_response)
        if self.async_mode and hasattr(self, "process_view"):
            # The handler adapts a sync process_view with sync_to_async: give it a coroutine.
            sync_view = self.process_view

            async def process_view(request, view_func, view_args, view_kwargs):
                if self.needs_thread_view(request):
                    return await sync_to_async(sync_view, thread_sensitive=True)(
                        request, view_func, view_args, view_kwargs
                    )
                return sync_view(request, view_func, view_args, view_kwargs)

            self.process_view = process_view

    def needs_thread_request(self, request) -> bool:
        return False

    def needs_thread_view(self, request) -> bool:
        return False

    def needs_thread_response(self, request, response) -> bool:
        return False

    async def __acall__(self, request):
        # The hooks are looked up once per class (``_inline_hooks``), not per request.
        process_request, process_response, request_check, response_check = self._inline_hooks
        response = None
        if process_request is not None:
            if request_check and self.needs_thread_request(request):
                response = await sync_to_async(process_request, thread_sensitive=True)(self, request)
            else:
                response = process_request(self, request)
        response = response or await self.get_response(request)
        if process_response is not None:
            if response_check and self.needs_thread_response(request, response):
                response = await sync_to_async(process_response, thread_sensitive=True)(self, request, response)
            else:
                response = process_response(self, request, response)
        return response

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._inline_hooks = (
            getattr(cls, "process_request", None),
            getattr(cls, "process_response", None),
            cls.needs_thread_request is not InlineMiddleware.needs_thread_request,
            cls.needs_thread_response is not InlineMiddleware.needs_thread_response,
        )


class InlineSecurityMiddleware(InlineMiddleware, SecurityMiddleware):
    pass


class InlineSessionMiddleware(InlineMiddleware, SessionMiddleware):
    """The session is lazy: nothing is read unless a view reads it. Saving is I/O."""

    def needs_thread_response(self, request, response) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class InlineCommonMiddleware(InlineMiddleware, CommonMiddleware):
    pass


class InlineCsrfViewMiddleware(InlineMiddleware, CsrfViewMiddleware):
    def needs_thread_request(self, request) -> bool:
        return settings.CSRF_USE_SESSIONS

    def needs_thread_view(self, request) -> bool:
        # A form POST reads its body (request.POST) for the token; sessions are I/O.
        return settings.CSRF_USE_SESSIONS

    def needs_thread_response(self, request, response) -> bool:
        return settings.CSRF_USE_SESSIONS


class InlineAuthenticationMiddleware(InlineMiddleware, AuthenticationMiddleware):
    """``request.user`` is lazy: loaded (in a thread, by sync code) only when read."""


class InlineMessageMiddleware(InlineMiddleware, MessageMiddleware):
    """The message storage is built when something reads or adds a message (a view, the
    admin's templates), not for every request: building it signs nothing but costs a cookie
    signer, two storages and the cookie parsed. A storage nobody touched has nothing to
    store (Django's ``update`` stores only when used or added to), so none is saved."""

    def process_request(self, request):
        request._messages = SimpleLazyObject(lambda: default_storage(request))

    def process_response(self, request, response):
        storage = getattr(request, "_messages", None)
        if isinstance(storage, SimpleLazyObject) and storage._wrapped is empty:
            return response
        return super().process_response(request, response)

    def needs_thread_response(self, request, response) -> bool:
        storage = getattr(request, "_messages", None)
        if storage is None or (isinstance(storage, SimpleLazyObject) and storage._wrapped is empty):
            return False
        return storage.used or storage.added_new


class InlineXFrameOptionsMiddleware(InlineMiddleware, XFrameOptionsMiddleware):
    pass


class InlineCorsMiddleware(CorsMiddleware):
    """corsheaders' middleware (already async-capable), minus one cost: a request without
    an ``Origin`` header (same-origin and server-to-server calls, load balancers' probes)
    is not a CORS request, and corsheaders only adds ``Vary: origin`` to it on the CORS
    paths; it did so after building ``request.headers`` (every header of the request
    parsed) to read the missing ``Origin``. Here that case reads ``META`` directly; any
    request with an ``Origin`` goes through corsheaders unchanged."""

    def add_response_headers(self, request, response):
        if "HTTP_ORIGIN" in request.META:
            return super().add_response_headers(request, response)
        enabled = getattr(request, "_cors_enabled", None)
        if enabled is None:
            enabled = self.is_enabled(request)
        if enabled:
            patch_vary_headers(response, ("origin",))
        return response
