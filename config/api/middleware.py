import logging
import re
import time

from django.utils.functional import LazyObject, empty

from config.core import metrics
from config.core.context import (
    client_ip_var,
    new_request_id,
    request_id_var,
    tenant_id_var,
    user_agent_var,
    user_id_var,
)

from .errors import dependency_failure, dependency_unavailable_response, django_error, error_response
from .hybrid import HybridMiddleware
from .routes import request_route

logger = logging.getLogger("http.request")

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def is_api_path(path: str) -> bool:
    return path.startswith("/api/") or path == "/api"


class ApiMiddleware(HybridMiddleware):
    """Our own middleware, one layer (each layer of the chain is two coroutines a request):

    - the request id: echoed from ``X-Request-ID`` when sane, else new; set in the context
      (logs, tasks, audits) and on the response;
    - on API paths no error is HTML and no exception leaks: Django's client errors (404,
      403, 400, 413) become their envelope, anything else unhandled a logged 500 envelope,
      and any non-JSON error page (resolver 404, CSRF 403, an error raised in a middleware
      below this one...) is replaced by the envelope with the same status;
    - ``X-RateLimit-*`` (and ``Retry-After`` on a 429) on responses whose request was
      counted against a budget (``request.rate_limit_usage``), on the final response;
    - one JSON log line a request (method, path, route, status, duration, tenant, user,
      request id) and the request metrics.

    Once ``RequestIdMiddleware``, ``RateLimitHeadersMiddleware`` and ``ApiErrorMiddleware``,
    in that order from the outside: ``after`` runs their ``after`` hooks innermost first."""

    def before(self, request):
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request.id = incoming if incoming and _REQUEST_ID_OK.match(incoming) else new_request_id()
        request_id_var.set(request.id)
        tenant_id_var.set(None)
        user_id_var.set(None)
        client_ip_var.set(request.META.get("REMOTE_ADDR") or None)
        user_agent_var.set(request.META.get("HTTP_USER_AGENT") or None)
        request._started = time.perf_counter()

    def process_exception(self, request, exception):
        return api_exception_response(request, exception)

    def after(self, request, response):
        if response.status_code >= 400:
            response = api_error_page(request, response)
        usage = getattr(request, "rate_limit_usage", None)
        if usage is not None:
            usage.apply(response)
        response["X-Request-ID"] = request.id
        duration = time.perf_counter() - request._started
        user = getattr(request, "user", None)
        if user is None or (isinstance(user, LazyObject) and user._wrapped is empty):
            # The session user no view asked for (the chat page, a static file): loading it
            # here would cost a query, and under ASGI this runs in the event loop, where the
            # ORM refuses to (a signed-in staff member's cookie made ``/`` answer 500).
            user_id = tenant_id = None
        elif getattr(user, "is_authenticated", False):
            user_id = getattr(user, "pk", None)
            tenant_id = getattr(user, "tenant_id", None) if user_id else None
        else:
            user_id = tenant_id = None
        status = response.status_code
        route = request_route(request)
        metrics.observe_request(request.method, route, status, duration)
        if logger.isEnabledFor(logging.INFO):
            # ``Logger.info`` would look up the caller's frame for each line (no field of
            # our format uses it): the record is made and handled directly.
            logger.handle(
                logger.makeRecord(
                    logger.name,
                    logging.INFO,
                    __file__,
                    0,
                    "request",
                    (),
                    None,
                    extra={
                        "method": request.method,
                        "path": request.path,
                        "route": route,
                        "status": status,
                        "duration_ms": round(duration * 1000, 2),
                        "tenant_id": tenant_id,
                        "user_id": user_id,
                    },
                )
            )
        if not response.streaming:
            # Nothing of this request may leak into what the thread does next; a stream
            # keeps its context while its body is produced.
            request_id_var.set(None)
            tenant_id_var.set(None)
            user_id_var.set(None)
            client_ip_var.set(None)
            user_agent_var.set(None)
        return response


def api_exception_response(request, exception):
    """The envelope for an exception a view raised on an API path (None elsewhere: Django's
    own handling, a 500 page)."""
    if not is_api_path(request.path):
        return None
    known = django_error(exception)
    if known is not None:
        status, code, message = known
        if status in (400, 413):
            logger.warning("client error: %s", type(exception).__name__, extra={"path": request.path})
        return error_response(status, code, message)
    dependency = dependency_failure(exception)
    if dependency is not None:
        logger.warning("dependency unavailable: %s", type(exception).__name__, extra={"dependency": dependency})
        return dependency_unavailable_response(dependency)
    logger.exception("unhandled error", extra={"path": request.path})
    return error_response(500, "internal_error", "An unexpected error occurred.")


_ERROR_MESSAGES = {
    404: "Not found.",
    500: "An unexpected error occurred.",
}


def api_error_page(request, response):
    """``response`` (status >= 400), or on an API path, when it is not JSON already (a
    resolver 404, a CSRF 403, Django's 500 page), the envelope with the same status."""
    if not is_api_path(request.path) or response.streaming:
        return response
    if response.get("Content-Type", "").startswith("application/json"):
        return response
    status = response.status_code
    code = _STATUS_CODES.get(status, "error")
    if status == 405:
        message = f"Method {request.method} not allowed."
    else:
        message = _ERROR_MESSAGES.get(status) or code.replace("_", " ").capitalize() + "."
    replacement = error_response(status, code, message)
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            replacement[header] = response[header]
    return replacement
