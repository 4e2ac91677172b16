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


class RequestIdMiddleware(HybridMiddleware):
    """Gives every request an id (echoed from ``X-Request-ID`` when sane), logs one JSON line
    per request with method, path, status, duration, tenant and user, and counts it."""

    def before(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request.id = incoming if _REQUEST_ID_OK.match(incoming) else new_request_id()
        request_id_var.set(request.id)
        tenant_id_var.set(None)
        user_id_var.set(None)
        client_ip_var.set(request.META.get("REMOTE_ADDR") or None)
        user_agent_var.set(request.headers.get("User-Agent") or None)
        request._started = time.perf_counter()

    def after(self, request, response):
        response["X-Request-ID"] = request.id
        duration = time.perf_counter() - request._started
        user = getattr(request, "user", None)
        if isinstance(user, LazyObject) and user._wrapped is empty:
            # The session user no view asked for (the chat page, a static file): loading it
            # here would cost a query, and under ASGI this runs in the event loop, where the
            # ORM refuses to (a signed-in staff member's cookie made ``/`` answer 500).
            user = None
        user_id = getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None
        tenant_id = getattr(user, "tenant_id", None) if user_id else None
        route = request_route(request)
        metrics.observe_request(request.method, route, response.status_code, duration)
        logger.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(duration * 1000, 2),
                "tenant_id": tenant_id,
                "user_id": user_id,
            },
        )
        if not response.streaming:
            # Nothing of this request may leak into what the thread does next; a stream
            # keeps its context while its body is produced.
            for var in (request_id_var, tenant_id_var, user_id_var, client_ip_var, user_agent_var):
                var.set(None)
        return response


class ApiErrorMiddleware(HybridMiddleware):
    """On API paths no error is HTML and no exception leaks: Django's client errors (404,
    403, 400, 413) become their envelope, anything else unhandled a logged 500 envelope, and
    any non-JSON error page (resolver 404, CSRF 403, ...) is replaced by the envelope with
    the same status."""

    def process_exception(self, request, exception):
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

    def after(self, request, response):
        if not is_api_path(request.path) or response.status_code < 400 or response.streaming:
            return response
        content_type = response.get("Content-Type", "")
        if content_type.startswith("application/json"):
            return response
        status = response.status_code
        code = _STATUS_CODES.get(status, "error")
        message = {
            404: "Not found.",
            405: f"Method {request.method} not allowed.",
            500: "An unexpected error occurred.",
        }.get(status, code.replace("_", " ").capitalize() + ".")
        replacement = error_response(status, code, message)
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in response:
                replacement[header] = response[header]
        return replacement
